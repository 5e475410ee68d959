"""Preprocessing speed on a generated pyramidal JPEG TIFF; prints one JSON line.

    python benchmarks/preprocess_speed.py                      # 40,000 x 30,000 px at 20x
    python benchmarks/preprocess_speed.py --size 12000x9000    # quicker

Measures, on the same slide and the same tiles: raw OpenSlide ``read_region`` throughput (one
call per 256-px tile, one thread: the baseline), ``rnafm tile`` throughput (tissue mask, strip
reads, QC; tiles read per second), and ``builtin`` extraction throughput (DataLoader workers).
The slide is written tile by tile, so it never sits in memory as one array.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 256


def _bank(rng: np.random.Generator, n: int = 24) -> np.ndarray:
    """H&E-like 256-px textures: pink stroma, purple nuclei of varying density."""
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    out = np.empty((n, TILE, TILE, 3), np.uint8)
    for i in range(n):
        img = np.array([226, 158, 194], np.float32) + rng.normal(0, 7, (TILE, TILE, 3))
        for x, y in rng.integers(0, TILE, (int(rng.integers(5, 120)), 2)).tolist():
            img[(yy - y) ** 2 + (xx - x) ** 2 <= int(rng.integers(9, 40))] = (88, 58, 142)
        out[i] = np.clip(img, 0, 255)
    return out


def write_slide(path: Path, width: int, height: int, *, mpp: float, seed: int = 0) -> int:
    """Pyramidal tiled JPEG TIFF (levels /1, /4, /16, /64); tissue is an ellipse. Returns levels."""
    import tifffile

    rng = np.random.default_rng(seed)
    bank = _bank(rng)
    glass = np.full((TILE, TILE, 3), 243, np.uint8)

    def tiles(w: int, h: int):
        ny, nx = -(-h // TILE), -(-w // TILE)
        for ty in range(ny):
            for tx in range(nx):
                cx, cy = (tx + 0.5) * TILE / w - 0.5, (ty + 0.5) * TILE / h - 0.5
                inside = (cx / 0.42) ** 2 + (cy / 0.4) ** 2 <= 1.0
                yield bank[(ty * 7 + tx * 13) % len(bank)] if inside else glass

    levels = 0
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        f = 1
        while True:
            w, h = width // f, height // f
            res = 1e4 / (mpp * width / w)
            tw.write(
                tiles(w, h), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                compression="jpeg", resolution=(res, res), resolutionunit="CENTIMETER",
                subfiletype=0 if f == 1 else 1, metadata=None,
            )  # fmt: skip
            levels += 1
            if max(w, h) <= 1024 or levels == 4:
                break
            f *= 4
    return levels


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="40000x30000", help="WIDTHxHEIGHT of level 0")
    ap.add_argument("--mpp", type=float, default=0.5, help="level-0 microns per pixel (0.5 = 20x)")
    ap.add_argument("--threads", type=int, default=2, help="tiling read threads")
    ap.add_argument("--workers", type=int, default=2, help="extraction DataLoader workers")
    ap.add_argument("--extract-tiles", type=int, default=20000, help="tiles encoded by builtin")
    ap.add_argument(
        "--keep", type=Path, default=None, help="work folder to keep (default: temporary)"
    )
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import openslide

    from rnafm.features.extract import ExtractConfig, extract_features
    from rnafm.slides.config import TilingConfig
    from rnafm.slides.tiling import tile_slide

    work = args.keep or Path(tempfile.mkdtemp(prefix="rnafm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    slide = work / "bench.tiff"
    t0 = time.perf_counter()
    if not slide.exists():
        write_slide(slide, width, height, mpp=args.mpp)
    gen_s = time.perf_counter() - t0
    with slide.open("rb") as fh:  # warm the page cache for every reader alike
        while fh.read(1 << 24):
            pass

    target = 10.0 / args.mpp  # tile at the native magnification: 256-px level-0 reads
    cfg = TilingConfig(magnification=target, workers=args.threads, progress=False)
    # candidate tiles (the ones tiling reads) from a dry run's geometry
    from rnafm.slides.mask import detect_tissue, tile_fractions
    from rnafm.slides.reader import grid_coords, plan_grid
    from rnafm.slides.wsi import open_slide

    with open_slide(slide) as s:
        grid = plan_grid(s, s.scale(), patch_size=TILE, magnification=target)
        tissue, _ = detect_tissue(s, mpp=s.scale().mpp, config=cfg.mask)
        coords = grid_coords(s.dimensions, grid)
        cand = coords[tile_fractions(tissue, coords, grid.size0) >= cfg.min_tissue_fraction]

    osr = openslide.OpenSlide(str(slide))  # raw baseline: one read_region per tile, one thread
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in cand.tolist():
        osr.read_region((x, y), 0, (TILE, TILE))
    raw_s, raw_cpu = time.perf_counter() - t0, time.process_time() - c0
    osr.close()

    t0, c0 = time.perf_counter(), time.process_time()
    res = tile_slide(slide, work / "out", cfg)
    tile_s, tile_cpu = time.perf_counter() - t0, time.process_time() - c0
    n_read = int(res.extra["n_read"])

    from rnafm.slides.batch import tile_slides

    n_ext = min(args.extract_tiles, len(res.coords))
    sub = work / "sub"
    if n_ext < len(res.coords):
        tile_slides(slide, sub, cfg.model_copy(update={"max_tiles": n_ext, "progress": False}))
    else:
        sub = work / "out"
    ecfg = ExtractConfig(workers=args.workers, batch_size=128, progress=False, overwrite=True)
    import resource

    def cpu_all() -> float:
        own, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu_all()
    rep = extract_features(sub / "tiles", work / "ext", ecfg)
    ext_s, ext_cpu = time.perf_counter() - t0, cpu_all() - c0
    ext_job_s = rep.jobs[0].seconds

    print(
        json.dumps(
            {
                "slide": f"{width}x{height}",
                "mpp": args.mpp,
                "cpus": os.cpu_count(),
                "generate_s": round(gen_s, 1),
                "tiles_read": n_read,
                "tiles_kept": len(res.coords),
                "raw_openslide_tiles_per_s": round(len(cand) / raw_s, 1),
                "tiling_tiles_per_s": round(n_read / tile_s, 1),
                "tiling_vs_raw": round((n_read / tile_s) / (len(cand) / raw_s), 3),
                # CPU milliseconds per tile (all threads): comparable on a busy machine
                "raw_cpu_ms_per_tile": round(1e3 * raw_cpu / len(cand), 3),
                "tiling_cpu_ms_per_tile": round(1e3 * tile_cpu / n_read, 3),
                "load_avg_1min": round(os.getloadavg()[0], 1),
                "builtin_tiles": n_ext,
                "builtin_extract_tiles_per_s": round(n_ext / ext_s, 1),
                "builtin_extract_tiles_per_s_excl_model_build": round(n_ext / ext_job_s, 1),
                "builtin_cpu_ms_per_tile": round(1e3 * ext_cpu / n_ext, 3),  # incl. workers
            }  # fmt: skip
        )
    )


if __name__ == "__main__":
    main()
