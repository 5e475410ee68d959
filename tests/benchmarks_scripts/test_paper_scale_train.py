"""benchmarks/paper_scale_train.py: gene relabelling of the reference and the stage timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

# the ``bench`` fixture (conftest.py) loads benchmarks/<SCRIPT>.py
SCRIPT = "paper_scale_train"


def test_relabel_keeps_known_symbols_and_fills_the_rest_in_order(bench):
    genes = ["TP53", "SYNTH00000", "MYC", "SYNTH00001"]
    symbols = ["A1BG", "MYC", "A2M", "TP53", "ZZZ3"]
    mapping = bench.relabel_genes(genes, symbols)
    assert mapping == {"TP53": "TP53", "SYNTH00000": "A1BG", "MYC": "MYC", "SYNTH00001": "A2M"}
    with pytest.raises(SystemExit, match="3 gene symbols for a cohort of 4 genes"):
        bench.relabel_genes(genes, symbols[:3])


def test_relabelled_reference_has_the_new_symbols_and_the_same_values(bench, tmp_path):
    from rnafm.cohort.reference import load_reference

    rng = np.random.default_rng(0)
    genes = ["SYNTH00000", "MYC", "SYNTH00001"]
    raw = rng.gamma(2.0, 40.0, size=(5, 3))  # (n, G) raw-scale values
    src = tmp_path / "reference.csv"
    lines = ["wsi_file_name,patient_id,site," + ",".join(f"rna_{g}" for g in genes)]
    lines += [f"S{i}.svs,P{i},a," + ",".join(f"{v:.6g}" for v in raw[i]) for i in range(5)]
    src.write_text("\n".join(lines) + "\n")
    symbols = ["KRAS", "MYC", "EGFR", "BRAF"]
    dst = tmp_path / "paper.csv"
    order = bench.write_relabelled_reference(src, dst, symbols)
    assert order == ["KRAS", "MYC", "EGFR"]
    assert src.read_text().splitlines()[1:] == dst.read_text().splitlines()[1:]
    before, after = load_reference(src), load_reference(dst)
    assert after.genes == order and after.slide_ids == before.slide_ids
    np.testing.assert_array_equal(after.values, before.values)


def test_stage_times_split_the_run_at_its_log_lines(bench, tmp_path):
    lines = [
        (103.0, "INFO ref.csv: expression scale detected as raw (max 9e3)"),
        (150.0, "INFO loaded 400 slides (0 skipped)"),
        (152.0, "INFO training on 340 slides, validating on 60 (20820 genes, 320 tokens)"),
        (200.0, "INFO ridge prior: median alpha 40, mean out-of-fold residual std 0.9"),
        (300.0, "INFO image path trained: {'epochs': 9}"),
        (520.0, "INFO trained 22 steps in 180 s; {...}"),
        (530.0, "INFO ridge prior refitted on 400 training + validation slides"),
        (531.5, "INFO tile head: {'epochs': 40, 'val_pcc': 0.3}"),
    ]
    rows = [{"epoch": 1, "time_s": 90.0}, {"epoch": 2, "time_s": 180.0}]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = {"t0": 100.0, "wall_s": 435.0, "lines": lines}
    stages = bench.stage_times(res, tmp_path)
    assert stages == {
        "startup": 3.0,
        "clustering": 47.0,
        "tokens": 2.0,
        "prior": 48.0,
        "image_path": 100.0,
        "flow_loop": 180.0,
        "calibration": 40.0,
        "prior_refit": 10.0,
        "tile_head": 1.5,
        "exit": 3.5,
        "flow_epochs": 2,
    }
    assert sum(v for k, v in stages.items() if k != "flow_epochs") == pytest.approx(435.0)
