"""Feature file IO: TRIDENT, CLAM and SEQUOIA/RNA-FM layouts, discovery, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from rnafm.errors import InputError
from rnafm.features.io import FeatureLayout, find_feature_files, read_features, write_features

SLIDE = "TCGA-05-4244-01Z-00-DX1.d4ff32cd-a3b7-4e4b-8b4d-8a8c47d5e6f0"


def _rand(n: int = 7, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 9000, size=(n, 2))


def test_roundtrip_trident(tmp_path):
    feats, coords = _rand()
    path = tmp_path / f"{SLIDE}.h5"
    write_features(path, feats, coords, {"patch_size": 224, "encoder": "uni", "target_mpp": 0.5})
    sf = read_features(path)
    assert sf.slide_id == SLIDE
    assert sf.layout is FeatureLayout.TRIDENT
    assert sf.features.dtype == np.float32 and sf.coords.dtype == np.int64
    np.testing.assert_array_equal(sf.features, feats)
    np.testing.assert_array_equal(sf.coords, coords)
    assert sf.attrs["patch_size"] == 224 and sf.attrs["encoder"] == "uni"
    assert "rnafm_version" in sf.attrs
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_failed_write_keeps_old_file(tmp_path):
    feats, coords = _rand()
    path = tmp_path / "a.h5"
    write_features(path, feats, coords, {})
    with pytest.raises(ValueError, match="coords"):
        write_features(path, feats[:3], coords, {})
    np.testing.assert_array_equal(read_features(path).features, feats)


def test_clam_batch_dim(tmp_path):
    feats, coords = _rand(6, 3)
    (tmp_path / "h5_files").mkdir()
    path = tmp_path / "h5_files" / "s1.h5"
    with h5py.File(path, "w") as f:
        f["features"] = feats[None].astype(np.float64)  # (1, N, D) as CLAM writes it
        f["coords"] = coords[None].astype(np.int32)
    sf = read_features(path)
    assert sf.layout is FeatureLayout.CLAM
    assert sf.features.shape == (6, 3) and sf.coords.shape == (6, 2)
    np.testing.assert_allclose(sf.features, feats)


@pytest.mark.parametrize("name", ["cluster_features", "uni_features", "resnet_features"])
def test_sequoia_layouts(tmp_path, name):
    feats, _ = _rand(4, 9)
    d = tmp_path / "s2"
    d.mkdir()
    with h5py.File(d / "s2.h5", "w") as f:
        f[name] = feats
    sf = read_features(d / "s2.h5")
    expected = FeatureLayout.CLUSTERS if name == "cluster_features" else FeatureLayout.CLAM
    assert sf.layout is expected and sf.coords is None
    np.testing.assert_array_equal(sf.features, feats)


def test_find_feature_files_all_layouts(tmp_path):
    feats, coords = _rand()
    write_features(tmp_path / "a.h5", feats, coords, {})
    write_features(tmp_path / "h5_files" / "b.h5", feats, coords, {})
    write_features(tmp_path / "c" / "c.h5", feats, coords, {})
    write_features(tmp_path / "c" / "other.h5", feats, coords, {})  # not <slide>/<slide>.h5
    write_features(tmp_path / ".rnafm_cache" / "x.h5", feats, coords, {})
    (tmp_path / "notes.txt").write_text("x")
    found = find_feature_files(tmp_path)
    assert found == {
        "a": tmp_path / "a.h5",
        "b": tmp_path / "h5_files" / "b.h5",
        "c": tmp_path / "c" / "c.h5",
    }


def test_find_feature_files_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_feature_files(tmp_path / "nope")


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_features(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputError, match=r"bad\.h5.*cannot read"):
        read_features(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(InputError, match=r"other\.h5.*no feature dataset"):
        read_features(other)


def test_nan_and_inconsistent(tmp_path):
    feats, coords = _rand()
    feats[2, 1] = np.nan
    p = tmp_path / "nan.h5"
    write_features(p, feats, coords, {})
    with pytest.raises(InputError, match=r"nan\.h5.*1 of 7 rows.*NaN"):
        read_features(p)
    q = tmp_path / "inc.h5"
    with h5py.File(q, "w") as f:
        f["features"] = np.ones((4, 2), np.float32)
        f["coords"] = np.ones((3, 2), np.int64)
    with pytest.raises(InputError, match="coords"):
        read_features(q)
    e = tmp_path / "empty.h5"
    with h5py.File(e, "w") as f:
        f["features"] = np.ones((0, 2), np.float32)
    with pytest.raises(InputError, match="no rows"):
        read_features(e)


def test_trident_dataset_attrs(tmp_path):
    feats, coords = _rand(5, 4)
    p = tmp_path / "t.h5"
    with h5py.File(p, "w") as f:
        f["features"] = feats
        f["coords"] = coords
        f["coords"].attrs["patch_size"] = 256
        f["coords"].attrs["target_magnification"] = 20
    sf = read_features(p)
    assert sf.layout is FeatureLayout.TRIDENT
    assert sf.attrs == {"patch_size": 256, "target_magnification": 20}
