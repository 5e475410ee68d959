"""Encode the tiles of every slide into feature files (``rnafm extract``).

Tiles are read by DataLoader workers (one strip read per row of neighbouring tiles), encoded
in batches, and written to ``<out>/features/<encoder>/<slide>.h5`` in the TRIDENT layout.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rnafm._io import write_json
from rnafm.errors import InputError, SlideError
from rnafm.runtime import Device, Precision, resolve_device
from rnafm.slides.jobs import (
    CohortReport,
    JobStatus,
    SlideJob,
    recorded,
    slide_lock,
    update_failures,
)
from rnafm.slides.progress import cohort_progress, rate_text

__all__ = [
    "ExtractConfig",
    "ExtractionReport",
    "extract_features",
    "extract_slide",
    "extract_slide_job",
    "extract_slide_task",
    "features_dir",
]

log = logging.getLogger(__name__)

ExtractionReport = CohortReport
_TILE_KEYS = (
    "patch_size", "patch_size_level0", "stride_level0", "overlap", "target_magnification",
    "target_mpp", "level0_magnification", "level0_mpp", "scale_source", "slide_path",
)  # fmt: skip


class ExtractConfig(BaseModel):
    """How tile features are computed (``rnafm extract``)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = Field("builtin", description="builtin, uni, resnet50 or timm:<model name>.")
    weights: Path | None = Field(
        None, description="Local weights file or folder (all but builtin)."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Tiles per forward pass.")
    workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes reading tiles.")
    device: Device = Field(Device.AUTO, description="auto, cpu or cuda.")
    precision: Precision = Field(Precision.AUTO, description="Autocast precision on CUDA.")
    slides_dir: Path | None = Field(
        None, description="Folder to look for slides in when the path stored in a tile file moved."
    )
    overwrite: bool = Field(False, description="Recompute feature files that already exist.")
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("encoder")
    @classmethod
    def _known(cls, v: str) -> str:
        from rnafm.features.encoders import parse_encoder

        try:
            parse_encoder(v)
        except InputError as e:
            raise ValueError(str(e)) from e
        return v


def features_dir(out: str | os.PathLike[str], encoder: str) -> Path:
    """``<out>/features/<encoder>`` (``timm:x`` -> ``timm-x``)."""
    from rnafm.features.encoders import encoder_dirname

    return Path(out) / "features" / encoder_dirname(encoder)


def _autocast_dtype(config: ExtractConfig, preferred: Any, device: Any) -> Any:
    import torch

    if device.type != "cuda":
        return None
    if config.precision == Precision.AUTO:
        if preferred == torch.float32:
            return None
        if preferred == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return preferred
    return {Precision.FP32: None, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[
        config.precision
    ]


def tiles_digest(coords: np.ndarray, attrs: dict[str, Any]) -> str:
    """Digest of a tile set (coords and geometry), stored in feature files for resumption."""
    h = hashlib.sha1(np.ascontiguousarray(coords, dtype=np.int64).tobytes())
    h.update(f"{attrs.get('patch_size')}|{attrs.get('patch_size_level0')}".encode())
    return h.hexdigest()[:16]


def _find_slide(attrs: dict[str, Any], tile_file: Path, slides_dir: Path | None) -> Path:
    stored = attrs.get("slide_path")
    if stored and Path(stored).exists() and slides_dir is None:
        return Path(stored)
    from rnafm.slides.wsi import SLIDE_EXTENSIONS

    sid = tile_file.stem
    if slides_dir is not None:
        name = Path(stored).name if stored else None
        for cand in ([slides_dir / name] if name else []) + [
            slides_dir / f"{sid}{e}" for e in SLIDE_EXTENSIONS
        ]:
            if cand.exists():
                return cand
        hits = [p for p in slides_dir.rglob(f"{sid}.*") if p.suffix.lower() in SLIDE_EXTENSIONS]
        if hits:
            return hits[0]
    raise SlideError(
        f"{tile_file}: slide {stored or sid!r} not found; pass --slides-dir with the folder holding it"
    )


def _grid_from_attrs(slide: Any, attrs: dict[str, Any], tile_file: Path) -> Any:
    from rnafm.slides.reader import TileGrid

    try:
        ps, size0 = int(attrs["patch_size"]), int(attrs["patch_size_level0"])
    except KeyError as e:
        raise SlideError(
            f"{tile_file}: tile file lacks the {e} attribute; re-run rnafm tile"
        ) from e
    level = slide.best_level_for_downsample(size0 / ps)
    lds = slide.level_downsamples[level]
    stride0 = int(attrs.get("stride_level0", size0))
    return TileGrid(ps, size0, stride0, level, lds, max(1, round(size0 / lds)))


class _ChunkDataset:
    """Map-style dataset of batches: item ``i`` is tiles ``[i*bs, (i+1)*bs)`` read as strips."""

    def __init__(self, slide_path: Path, attrs: dict, coords: np.ndarray, bs: int, transform: Any):
        self.slide_path, self.attrs, self.coords = slide_path, attrs, coords
        self.bs, self.transform = bs, transform
        self._slide = None
        self._grid = None

    def __len__(self) -> int:
        return (len(self.coords) + self.bs - 1) // self.bs

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        from rnafm.slides.reader import read_tiles
        from rnafm.slides.wsi import open_slide

        if self._slide is None:  # opened lazily, once per worker process
            self._slide = open_slide(self.slide_path)
            self._grid = _grid_from_attrs(self._slide, self.attrs, self.slide_path)
        lo = i * self.bs
        part = self.coords[lo : lo + self.bs]
        out: list[Any] = [None] * len(part)
        for idx, tiles, _ in read_tiles(self._slide, self._grid, part, workers=1):
            for k, t in zip(idx.tolist(), tiles, strict=True):
                out[k] = self.transform(t)
        # np.stack, not torch.stack: torch's threaded copy stalls on busy machines
        batch = torch.from_numpy(np.stack([t.numpy() for t in out]))  # (n, ...)
        return batch, torch.arange(lo, lo + len(part))  # (n, ...), (n,)


def extract_slide(
    tile_file: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    bundle: Any,
    config: ExtractConfig,
    *,
    device: Any = None,
    progress: Any = None,
) -> int:
    """Encode one slide's tiles and write its feature file; returns the number of tiles.

    Parameters
    ----------
    tile_file:
        ``<out>/tiles/<slide>.h5`` (or a TRIDENT/CLAM patch file with ``patch_size`` attrs).
    out_file:
        Destination feature file (written atomically).
    bundle:
        :class:`~rnafm.features.encoders.EncoderBundle` from ``build_encoder``.
    config:
        Batch size, workers, precision, slides folder.
    device:
        ``torch.device`` (default: from ``config.device``).
    progress:
        Optional callable receiving the number of tiles encoded in each batch.
    """
    import torch
    from torch.utils.data import DataLoader

    from rnafm.features.io import write_features
    from rnafm.slides.tiling import read_tile_file

    tile_file = Path(tile_file)
    coords, attrs = read_tile_file(tile_file)
    if len(coords) == 0:
        raise SlideError(f"{tile_file}: no tiles to encode")
    slide_path = _find_slide(attrs, tile_file, config.slides_dir)
    device = device or resolve_device(config.device)
    model, transform, preferred, encoder_id = bundle
    amp = _autocast_dtype(config, preferred, device)
    dataset = _ChunkDataset(slide_path, attrs, coords, config.batch_size, transform)
    loader = DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=min(config.workers, len(dataset)),
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    feats: np.ndarray | None = None
    with torch.inference_mode():
        for batch, index in loader:
            x = batch.to(device, non_blocking=True)  # (n, ...) transformed tiles
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                y = model(x)  # (n, D)
            y = y.float().cpu().numpy()
            if feats is None:
                feats = np.empty((len(coords), y.shape[1]), dtype=np.float32)
            feats[index.numpy()] = y
            if progress is not None:
                progress(len(index))
    if dataset._slide is not None:  # opened in this process when workers == 0
        dataset._slide.close()
    if not np.isfinite(feats).all():
        raise SlideError(
            f"{tile_file}: the encoder produced NaN/inf features; try --precision fp32"
        )
    out_attrs = {k: attrs[k] for k in _TILE_KEYS if k in attrs}
    out_attrs.update(
        encoder=config.encoder, encoder_id=encoder_id, tiles_digest=tiles_digest(coords, attrs),
        slide_id=tile_file.stem, slide_path=str(slide_path),
    )  # fmt: skip
    write_features(out_file, feats, coords, out_attrs)
    return len(coords)


def _features_complete(path: Path, coords_digest: str, encoder_id: str) -> bool:
    import h5py

    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            return (
                "features" in f
                and f.attrs.get("tiles_digest") == coords_digest
                and f.attrs.get("encoder_id") == encoder_id
            )
    except OSError:
        return False


def extract_slide_job(
    tile_file: str | os.PathLike[str], out: str | os.PathLike[str], bundle: Any, config: ExtractConfig,
    *, device: Any = None, progress: Any = None,
) -> Any:  # fmt: skip
    """Extract one slide as a cohort job: skip if done, lock, never raise for a bad slide."""
    from rnafm.slides.tiling import read_tile_file

    tile_file = Path(tile_file)
    sid = tile_file.stem
    target = features_dir(out, config.encoder) / f"{sid}.h5"
    job = SlideJob(sid, str(tile_file), JobStatus.DONE, output=str(target))
    with recorded(job, tile_file, log):
        coords, attrs = read_tile_file(tile_file)
        digest = tiles_digest(coords, attrs)
        job.n_tiles = len(coords)
        if not config.overwrite and _features_complete(target, digest, bundle.encoder_id):
            job.status = JobStatus.SKIPPED
            return job
        with slide_lock(target.parent / ".locks", sid):
            if not config.overwrite and _features_complete(target, digest, bundle.encoder_id):
                job.status = JobStatus.SKIPPED
                return job
            extract_slide(tile_file, target, bundle, config, device=device, progress=progress)
    return job


@functools.lru_cache(maxsize=2)
def _cached_encoder(spec: str, weights: str | None, device: str) -> Any:
    from rnafm.features.encoders import build_encoder

    bundle = build_encoder(spec, weights=weights)
    bundle.model.eval().to(device)
    return bundle


def extract_slide_task(
    tile_file: str | os.PathLike[str], out: str | os.PathLike[str], config: ExtractConfig
) -> SlideJob:
    """:func:`extract_slide_job` for schedulers (one Dask task per slide).

    Picklable through ``functools.partial(extract_slide_task, out=..., config=...)``; the
    encoder is built once per worker process and reused. Dask worker processes are daemonic
    and cannot start DataLoader workers: use ``config.workers = 0`` there.
    """
    device = resolve_device(Device.CPU if config.encoder == "builtin" else config.device)
    weights = None if config.weights is None else str(config.weights)
    bundle = _cached_encoder(config.encoder, weights, str(device))
    return extract_slide_job(tile_file, out, bundle, config, device=device)


def extract_features(
    tiles_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ExtractConfig | None = None,
    *,
    slides: Iterable[str] | None = None,
) -> ExtractionReport:
    """Encode every tile file in ``tiles_dir`` into ``<out>/features/<encoder>/<slide>.h5``.

    Parameters
    ----------
    tiles_dir:
        Folder of tile files (``<out>/tiles``).
    out:
        Output folder; failures are merged into ``<out>/failures.json``.
    config:
        Encoder and loader settings.
    slides:
        Only these slide ids (default: every ``*.h5`` in ``tiles_dir``).

    Raises
    ------
    InputError
        ``tiles_dir`` missing or empty, unknown encoder, missing weights.
    """
    from rnafm.features.encoders import build_encoder

    config = config or ExtractConfig()
    tiles_dir, out = Path(tiles_dir), Path(out)
    if not tiles_dir.is_dir():
        raise InputError(f"{tiles_dir}: tile folder not found; run `rnafm tile` first")
    files = sorted(p for p in tiles_dir.glob("*.h5") if not p.name.startswith("."))
    if slides is not None:
        wanted = set(slides)
        files = [p for p in files if p.stem in wanted]
    if not files:
        raise InputError(f"{tiles_dir}: no tile files (*.h5); run `rnafm tile` first")
    bundle = build_encoder(config.encoder, weights=config.weights)
    device = resolve_device(config.device)
    if config.encoder == "builtin":
        device = resolve_device(Device.CPU)  # numpy descriptor
    bundle.model.eval().to(device)
    write_json(
        features_dir(out, config.encoder) / "extract_config.json", config.model_dump(mode="json")
    )
    report = CohortReport(stage="extract")
    log.info("extracting %s features of %d slides on %s", config.encoder, len(files), device)
    with cohort_progress(config.progress) as bar:
        cohort_task = bar.add_task("slides", total=len(files), rate="") if bar else None
        t0, total = time.perf_counter(), 0
        for f in files:
            task = bar.add_task(f.stem[:30], total=None, rate="") if bar else None
            s0, count = time.perf_counter(), [0]

            def advance(n: int, _task=task, _s0=s0, _count=count) -> None:
                _count[0] += n
                bar.update(
                    _task, advance=n, rate=rate_text(_count[0], time.perf_counter() - _s0, "tiles")
                )

            job = extract_slide_job(
                f, out, bundle, config, device=device, progress=advance if bar else None
            )
            report.jobs.append(job)
            total += count[0]
            if bar:
                bar.remove_task(task)
                bar.update(
                    cohort_task, advance=1, rate=rate_text(total, time.perf_counter() - t0, "tiles")
                )
    update_failures(out, report)
    log.info(report.summary())
    return report
