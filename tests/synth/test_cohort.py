"""The synthetic cohort on disk: determinism, slides OpenSlide can read, reference and latents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnafm._io import file_digest


def test_files_and_identifiers(tiny_cohort):
    c = tiny_cohort
    assert (
        len(c.slides) == len(c.slide_ids) > len(c.patient_ids) == 7
    )  # some patients have 2 slides
    for path, sid, pid in zip(c.slides, c.slide_ids, c.slide_patients, strict=True):
        assert path.is_file() and path.name == f"{sid}.tiff"
        assert sid[:12] == pid and sid.startswith("TCGA-SY-") and "-01Z-00-DX" in sid
    ref = pd.read_csv(c.reference)
    assert list(ref.columns[:3]) == ["wsi_file_name", "patient_id", "project"]
    assert [s[: -len(".tiff")] for s in ref["wsi_file_name"]] == c.slide_ids
    genes = [g[len("rna_") :] for g in ref.columns[3:]]
    assert genes == c.genes and len(set(genes)) == len(genes)
    values = ref.iloc[:, 3:].to_numpy()
    assert (values >= 0).all() and values.max() > 50  # raw TPM, not log2
    # two slides of one patient share that patient's expression
    dup = ref[ref.duplicated("patient_id", keep=False)]
    assert len(dup) >= 2
    for _, group in dup.groupby("patient_id"):
        assert np.allclose(group.iloc[0, 3:].to_numpy(float), group.iloc[1, 3:].to_numpy(float))


def test_reference_loads_with_rnafm(tiny_cohort):
    from rnafm.cohort import load_reference

    ref = load_reference(tiny_cohort.reference)  # auto scale must recognise raw values
    lat = tiny_cohort.load_latents()
    expect = np.log2(lat["tpm"][lat["slide_patient"]] + 1.0)
    assert ref.slide_ids == tiny_cohort.slide_ids
    assert ref.genes == tiny_cohort.genes
    np.testing.assert_allclose(ref.values, expect, atol=1e-3)


def test_slides_open_with_openslide_and_mpp(tiny_cohort):
    openslide = pytest.importorskip("openslide")
    for path in tiny_cohort.slides[:3]:
        with openslide.OpenSlide(str(path)) as s:
            assert s.properties["openslide.vendor"] == "generic-tiff"
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(1.0)
            assert float(s.properties["openslide.mpp-y"]) == pytest.approx(1.0)
            assert s.level_count > 1
            assert s.dimensions == (777, 613)
            assert s.level_downsamples[1] == pytest.approx(2.0, rel=0.01)
            region = np.asarray(s.read_region((0, 0), 0, (777, 613)).convert("RGB"))
    # background is bright glass, tissue is stained (darker and coloured)
    assert (region.mean(-1) > 225).mean() > 0.2
    assert (region.mean(-1) < 200).mean() > 0.2


def test_slides_open_with_rnafm_reader(tiny_cohort):
    from rnafm.slides.wsi import open_slide

    with open_slide(tiny_cohort.slides[0]) as s:
        scale = s.scale()
        assert scale is not None and scale.mpp == pytest.approx(1.0)
        assert scale.source == "openslide.mpp-x"


def test_latents_and_label_grids(tiny_cohort):
    from rnafm.synth.config import ADJACENT_LABELS, Label
    from rnafm.synth.layout import label_targets

    lat = tiny_cohort.load_latents()
    n = len(tiny_cohort.patient_ids)
    assert lat["proportions"].shape == (n, 5) and np.allclose(lat["proportions"].sum(1), 1)
    assert lat["programmes"].shape == (n, 5)
    assert lat["log2_true"].shape == (n, len(tiny_cohort.genes))
    assert set(lat["labels"]) == set(tiny_cohort.slide_ids)
    assert lat["cell_px"] == 16 and lat["cell_type_names"][0] == "tumour"
    infil = lat["programmes"][:, lat["programme_names"].index("infiltration")]
    for i, sid in enumerate(tiny_cohort.slide_ids):
        grid = lat["labels"][sid]
        assert grid.shape == (-(-613 // 16), -(-777 // 16))
        frac = np.bincount(grid.ravel(), minlength=len(Label)).astype(float)
        frac[0] = 0
        frac /= frac.sum()
        np.testing.assert_allclose(frac, lat["slide_fractions"][i])
        adj = frac[list(ADJACENT_LABELS)].sum()
        assert adj == pytest.approx(lat["adjacent_fraction"][i], abs=1e-9)
        # the sampled region follows the slide's composition (up to the grid's resolution)
        p = lat["slide_patient"][i]
        target = label_targets(lat["slide_composition"][i], infil[p])
        sampled = lat["slide_sampled_fractions"][i][1:7]
        assert np.abs(sampled - target / target.sum()).sum() < 0.08


def test_deterministic_and_seed_dependent(tiny_cohort, tmp_path):
    from rnafm.synth import make_cohort

    kw = dict(slide_width=777, slide_height=613, mpp=1.0, n_genes=97, second_slide_fraction=0.5,
              gdc=True, progress=False)  # fmt: skip
    again = make_cohort(tmp_path / "again", n_patients=7, seed=11, **kw)
    assert again.slide_ids == tiny_cohort.slide_ids
    assert file_digest(again.reference) == file_digest(tiny_cohort.reference)
    for a, b in zip(again.slides, tiny_cohort.slides, strict=True):
        assert file_digest(a) == file_digest(b)
    for a, b in zip(again.gdc_files, tiny_cohort.gdc_files, strict=True):
        assert a.name == b.name and file_digest(a) == file_digest(b)
    other = make_cohort(tmp_path / "other", n_patients=3, seed=12, **kw)
    assert other.slide_ids[0] != tiny_cohort.slide_ids[0]
    assert file_digest(other.slides[0]) != file_digest(tiny_cohort.slides[0])


def test_load_cohort_roundtrip(tiny_cohort):
    from rnafm.synth.cohort import load_cohort

    c = load_cohort(tiny_cohort.root)
    assert c.slide_ids == tiny_cohort.slide_ids and c.genes == tiny_cohort.genes
    assert c.slide_patients == tiny_cohort.slide_patients
    assert c.config == tiny_cohort.config
    assert [p.name for p in c.gdc_files] == sorted(p.name for p in tiny_cohort.gdc_files)


def test_load_cohort_rejects_other_folder(tmp_path):
    from rnafm.errors import InputError
    from rnafm.synth.cohort import load_cohort

    with pytest.raises(InputError, match="synth_config.json"):
        load_cohort(tmp_path)


def test_textures_follow_the_label_grid(tiny_cohort):
    """Drawn pixels follow the labels: glass is bright, lymphoid aggregates darkest and bluest,
    stroma and muscle pink (eosin: green absorbed more than blue)."""
    openslide = pytest.importorskip("openslide")
    from rnafm.synth.config import Label

    lat = tiny_cohort.load_latents()
    cell = lat["cell_px"]
    sums: dict[int, list[np.ndarray]] = {}
    for path, sid in zip(tiny_cohort.slides, tiny_cohort.slide_ids, strict=True):
        with openslide.OpenSlide(str(path)) as s:
            img = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"), dtype=float)
        grid = lat["labels"][sid]
        gh, gw = img.shape[0] // cell, img.shape[1] // cell
        blocks = img[: gh * cell, : gw * cell].reshape(gh, cell, gw, cell, 3).mean((1, 3))
        for lab in np.unique(grid[:gh, :gw]):
            sums.setdefault(int(lab), []).append(blocks[grid[:gh, :gw] == lab])
    mean = {lab: np.concatenate(v).mean(0) for lab, v in sums.items()}
    grey = {lab: m.mean() for lab, m in mean.items()}
    assert grey[Label.BACKGROUND] > 225
    assert grey[Label.LYMPHOCYTE] < grey[Label.STROMA] < grey[Label.BACKGROUND]
    for lab in (Label.STROMA, Label.ADJACENT_MUSCLE):
        if lab in mean:
            r, g, b = mean[lab]
            assert g < b - 20 and g < r - 20
    r, g, b = mean[Label.LYMPHOCYTE]
    assert b > r  # haematoxylin: blue-purple
