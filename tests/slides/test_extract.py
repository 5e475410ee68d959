"""Feature extraction from tile files: order, resumption, failures, loader workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from rnafm.features.encoders import build_encoder
from rnafm.features.extract import ExtractConfig, extract_features
from rnafm.features.io import find_feature_files, read_features
from rnafm.slides.batch import tile_slides
from rnafm.slides.config import TilingConfig
from rnafm.slides.jobs import JobStatus
from rnafm.slides.wsi import open_slide


@pytest.fixture(scope="module")
def tiled(tmp_path_factory, slide_40x, slide_20x):
    root = tmp_path_factory.mktemp("ext")
    (root / "slides").mkdir()
    shutil.copy(slide_40x, root / "slides" / "a.tiff")
    shutil.copy(slide_20x, root / "slides" / "b.tiff")
    report = tile_slides(
        root / "slides", root / "out", TilingConfig(magnification=20, progress=False)
    )
    assert report.ok
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_builtin_features_follow_tile_order(tiled, tmp_path, workers):
    out = tmp_path / "o"
    cfg = ExtractConfig(workers=workers, batch_size=5, progress=False)
    report = extract_features(tiled / "out" / "tiles", out, cfg)
    assert report.ok and [j.status for j in report.jobs] == [JobStatus.DONE] * 2
    files = find_feature_files(out / "features" / "builtin")
    assert sorted(files) == ["a", "b"]
    sf = read_features(files["a"])
    assert sf.attrs["encoder"] == "builtin" and sf.attrs["patch_size_level0"] == 512
    assert sf.attrs["target_magnification"] == 20.0 and sf.attrs["level0_mpp"] == pytest.approx(
        0.25
    )
    assert sf.features.dtype == np.float32 and sf.coords.dtype == np.int64
    # row i encodes the tile at coords[i]: recompute rows directly (b: level 0, exact; a: level 1,
    # where strip offsets may differ from OpenSlide's by a pixel, so match by nearest row)
    enc = build_encoder("builtin")
    for name, level, size, exact in (("b", 0, 256, True), ("a", 1, 256, False)):
        sf = read_features(files[name])
        with open_slide(tiled / "slides" / f"{name}.tiff") as s:
            for i in (0, len(sf.coords) // 2, len(sf.coords) - 1):
                x, y = sf.coords[i]
                tile = np.asarray(s.read_region((x, y), level, (size, size)))
                want = enc.model(enc.transform(tile)[None])[0].numpy()
                if exact:
                    np.testing.assert_allclose(
                        sf.features[i], want, atol=2e-4
                    )  # float32 sums vary by batch
                else:
                    assert np.linalg.norm(sf.features - want, axis=1).argmin() == i


def test_resume_skips_finished_and_redoes_stale(tiled, tmp_path):
    out = tmp_path / "o"
    cfg = ExtractConfig(workers=0, progress=False)
    extract_features(tiled / "out" / "tiles", out, cfg)
    before = (out / "features" / "builtin" / "b.h5").stat().st_mtime_ns
    report = extract_features(tiled / "out" / "tiles", out, cfg)
    assert [j.status for j in report.jobs] == [JobStatus.SKIPPED] * 2
    assert (out / "features" / "builtin" / "b.h5").stat().st_mtime_ns == before
    # new tiles for b (different max-tiles): its features are recomputed
    tiles2 = tmp_path / "tiles2"
    shutil.copytree(tiled / "out" / "tiles", tiles2)
    tile_slides(
        tiled / "slides" / "b.tiff", tmp_path / "t", TilingConfig(max_tiles=3, progress=False)
    )
    shutil.copy(tmp_path / "t" / "tiles" / "b.h5", tiles2 / "b.h5")
    report = extract_features(tiles2, out, cfg)
    assert {j.slide_id: j.status for j in report.jobs} == {
        "a": JobStatus.SKIPPED,
        "b": JobStatus.DONE,
    }
    assert read_features(out / "features" / "builtin" / "b.h5").features.shape[0] == 3


def test_missing_slide_is_a_failure_and_slides_dir_finds_moved_ones(tiled, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    tiles = tmp_path / "tiles"
    shutil.copytree(tiled / "out" / "tiles", tiles)
    import h5py

    with h5py.File(tiles / "a.h5", "a") as f:
        f.attrs["slide_path"] = str(tmp_path / "gone" / "a.tiff")
    out = tmp_path / "o"
    report = extract_features(tiles, out, ExtractConfig(workers=0, progress=False))
    assert {j.slide_id: j.status for j in report.jobs} == {
        "a": JobStatus.FAILED,
        "b": JobStatus.DONE,
    }
    failure = json.loads((out / "failures.json").read_text())["failures"][0]
    assert failure["stage"] == "extract" and "--slides-dir" in failure["reason"]
    shutil.copy(tiled / "slides" / "a.tiff", moved / "a.tiff")
    report = extract_features(
        tiles, out, ExtractConfig(workers=0, progress=False, slides_dir=moved)
    )
    assert report.ok
    assert json.loads((out / "failures.json").read_text())["failures"] == []


def test_timm_encoder_end_to_end(tiled, tmp_path):
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    cfg = ExtractConfig(
        encoder="timm:resnet10t",
        weights=tmp_path / "w.pth",
        workers=0,
        batch_size=8,
        progress=False,
    )
    report = extract_features(tiled / "out" / "tiles", tmp_path / "o", cfg, slides=["b"])
    assert report.ok and len(report.jobs) == 1
    sf = read_features(tmp_path / "o" / "features" / "timm-resnet10t" / "b.h5")
    assert sf.features.shape[1] == net.num_features
    assert sf.attrs["encoder_id"].startswith("timm-resnet10t-")


def test_config_rejects_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"):
        ExtractConfig(encoder="clip")
    with pytest.raises(ValueError):
        ExtractConfig(batch_size=0)


def test_extract_slide_task_for_schedulers(tiled, tmp_path):
    import functools
    import pickle

    from rnafm.features.extract import extract_slide_task

    task = functools.partial(
        extract_slide_task, out=tmp_path / "o", config=ExtractConfig(workers=0, progress=False)
    )
    task = pickle.loads(pickle.dumps(task))
    jobs = [task(tiled / "out" / "tiles" / f"{s}.h5") for s in ("a", "b")]
    assert [j.status for j in jobs] == [JobStatus.DONE, JobStatus.DONE]
    assert task(tiled / "out" / "tiles" / "a.h5").status == JobStatus.SKIPPED
