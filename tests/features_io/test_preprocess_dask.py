"""rnafm preprocess through the Dask runner on tiny generated pyramidal TIFFs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")


def _write_slide(path: Path, *, seed: int, mpp: float = 0.5) -> Path:
    """A 2-level JPEG-tiled RGB pyramid: glass with a noisy pink tissue block."""
    rng = np.random.default_rng(seed)
    img = np.full((709, 901, 3), 243, dtype=np.uint8)
    tissue = rng.normal((215, 140, 185), 25, size=(420, 560, 3))
    img[150:570, 170:730] = np.clip(tissue, 0, 255).astype(np.uint8)
    half = img[:708, :900].reshape(354, 2, 450, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    with tifffile.TiffWriter(path) as tw:
        for i, level in enumerate([img, half]):
            res = 1e4 / (mpp * (2**i))
            tw.write(
                level, photometric="rgb", tile=(128, 128), compression="jpeg",
                subfiletype=0 if i == 0 else 1, resolution=(res, res),
                resolutionunit="CENTIMETER", metadata=None,
            )  # fmt: skip
    return path


def test_preprocess_distributed_local_cluster(tmp_path: Path) -> None:
    from rnafm.features.preprocess import PreprocessConfig
    from rnafm.features.preprocess_dask import preprocess_distributed
    from rnafm.slides.config import TilingConfig

    slides = tmp_path / "slides"
    slides.mkdir()
    good = [_write_slide(slides / f"s{i}.tiff", seed=i) for i in range(2)]
    (slides / "broken.tiff").write_bytes(b"II*\x00not really a tiff")
    out = tmp_path / "prep"
    config = PreprocessConfig(tiling=TilingConfig(patch_size=64, min_tissue_fraction=0.3))
    report = preprocess_distributed(
        [slides], out, config, scheduler="local", n_workers=2, processes=False, progress=False
    )
    assert len(report.tiling.jobs) == 3
    assert [j.slide_id for j in report.tiling.failed] == ["broken"]
    assert report.extraction is not None and report.extraction.ok
    for path in good:
        assert (report.features / f"{path.stem}.h5").is_file()
    failures = json.loads((out / "failures.json").read_text())
    assert [f["slide_id"] for f in failures["failures"]] == ["broken"]
    assert failures["failures"][0]["reason"]
    # a second run skips everything that is done and reports the same failure
    again = preprocess_distributed([slides], out, config, scheduler="serial", progress=False)
    assert {j.status.value for j in again.tiling.jobs} == {"skipped", "failed"}
    assert {j.status.value for j in again.extraction.jobs} == {"skipped"}


def test_cli_preprocess_with_local_scheduler(tmp_path: Path) -> None:
    """`rnafm preprocess --scheduler local` through the real console script."""
    import os
    import subprocess
    import sys

    slides = tmp_path / "slides"
    slides.mkdir()
    _write_slide(slides / "a.tiff", seed=3)
    (slides / "bad.tiff").write_bytes(b"II*\x00broken")
    out = tmp_path / "prep"
    exe = Path(sys.executable).with_name("rnafm")
    proc = subprocess.run(
        [str(exe), "preprocess", str(slides), "--out", str(out), "--patch-size", "64",
         "--min-tissue", "0.3", "--scheduler", "local", "--dask-workers", "2", "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # one slide failed
    assert (out / "features" / "builtin" / "a.h5").is_file()
    failures = json.loads((out / "failures.json").read_text())
    assert [f["slide_id"] for f in failures["failures"]] == ["bad"]
