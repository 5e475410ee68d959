"""Speed of the RNA-FM network: training steps and guided sampling, printed as one JSON line.

Paper scale (the published model on a 2-core machine: 13.6 s per training step, 3.5 s per
slide sampling with 20 Euler steps, guidance 2, batch 32)::

    # PAPER: a folder with the paper's 20,820-gene list and its 380 GO-MF pathway GMT
    python benchmarks/model_speed.py --genes PAPER/genes_20820.txt \
        --gmt PAPER/go_mf_panther_380.gmt.gz --implementation fast

A training step is forward, backward, gradient clipping and the AdamW step (``--optimizer``).
The first ``--warmup`` steps are not timed (allocator, optimizer state, page faults); the JSON
line reports the median and the spread (min, max, interquartile range) of the ``--train-steps``
timed steps after them.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import logging
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnafm.flow import SamplerConfig, Solver, flow_matching_loss, sample
from rnafm.model import (
    HeadModulation,
    Implementation,
    ModelConfig,
    Precision,
    autocast,
    build_model,
)

log = logging.getLogger("model_speed")


@dataclass
class BenchTokens:
    """Duck-typed PathwayTokens built here so the benchmark does not depend on token selection."""

    genes: list[str]
    names: list[str]
    members: list[np.ndarray]
    is_background: np.ndarray

    def adjacency(self) -> np.ndarray:
        t, g = len(self.members), len(self.genes)
        inc = np.zeros((t, g), dtype=np.float32)
        for i, m in enumerate(self.members):
            inc[i, m] = 1.0
        adj = (inc @ inc.T) > 0
        np.fill_diagonal(adj, True)
        return adj


def read_genes(spec: str) -> list[str]:
    if spec.isdigit():
        return [f"GENE{i}" for i in range(int(spec))]
    return [g for g in Path(spec).read_text().split() if g]


def read_gmt(path: Path) -> dict[str, list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    sets = {}
    with opener(path, "rt") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > 2:
                sets[fields[0]] = fields[2:]
    return sets


def build_tokens(genes: list[str], sets: dict[str, list[str]], chunk: int) -> BenchTokens:
    """One token per set (genes intersected), uncovered genes in background chunks <= chunk."""
    pos = {g: i for i, g in enumerate(genes)}
    names, members = [], []
    for name, sym in sets.items():
        idx = np.unique([pos[s] for s in sym if s in pos]).astype(np.int64)
        if len(idx):
            names.append(name)
            members.append(idx)
    covered = np.zeros(len(genes), dtype=bool)
    for m in members:
        covered[m] = True
    rest = np.flatnonzero(~covered)
    n_bg = int(np.ceil(len(rest) / chunk)) if len(rest) else 0
    for i, part in enumerate(np.array_split(rest, n_bg) if n_bg else []):
        names.append(f"background_{i}")
        members.append(part.astype(np.int64))
    is_bg = np.array([n.startswith("background_") for n in names])
    return BenchTokens(genes, names, members, is_bg)


def random_sets(genes: list[str], n: int, size: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(np.log(size), 0.8, n).astype(int), 2, len(genes))
    return {f"P{i}": list(rng.choice(genes, s, replace=False)) for i, s in enumerate(sizes)}


def _median(times: list[float], per: int = 1) -> float | None:
    return round(statistics.median(times) / per, 4) if times else None


def _spread(times: list[float], prefix: str) -> dict[str, float | None]:
    """Min, max and interquartile range of ``times`` as ``{prefix}_min_s`` etc."""
    if not times:
        return {f"{prefix}_{k}_s": None for k in ("min", "max", "iqr")}
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [0] * 3
    return {
        f"{prefix}_min_s": round(min(times), 4),
        f"{prefix}_max_s": round(max(times), 4),
        f"{prefix}_iqr_s": round(q3 - q1, 4),
    }


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap: no mmap/munmap (and page faults) per large tensor.

    By default glibc serves every allocation above 32 MB (a (B, T, 4H) block activation at the
    paper's scale is 50 MB) with a fresh mmap and returns it on free, so each training step
    faults in and zeroes ~1-2 GB of new pages. Returns False where glibc is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def make_optimizer(params: list[torch.nn.Parameter], kind: str) -> torch.optim.AdamW:
    """AdamW: ``fused`` (one kernel over all parameters), ``foreach`` or ``plain`` (a loop)."""
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "plain": {"foreach": False}}
    return torch.optim.AdamW(params, lr=1e-4, **flags[kind])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--genes", default="20820", help="gene count or a file of gene symbols")
    p.add_argument("--gmt", type=Path, help="GMT(.gz) of pathways")
    p.add_argument("--random-pathways", type=int, default=380, help="random layout when no GMT")
    p.add_argument("--pathway-size", type=int, default=150, help="median random pathway size")
    p.add_argument("--background-chunk", type=int, default=512)
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--feature-dim", type=int, default=1024)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--solver", choices=[s.value for s in Solver], default="euler")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--implementation", choices=[i.value for i in Implementation], default="fast")
    p.add_argument("--head-modulation", choices=[h.value for h in HeadModulation], default="token")
    p.add_argument("--bucket-overhead", type=int, default=256)
    p.add_argument("--cross-attention", action="store_true")
    p.add_argument("--no-pathway-mask", action="store_true")
    p.add_argument("--precision", choices=[p.value for p in Precision], default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--train-steps", type=int, default=8, help="timed steps after the warm-up; 0 skips training"
    )
    p.add_argument("--warmup", type=int, default=2, help="training steps before the timed ones")
    p.add_argument(
        "--optimizer",
        choices=["fused", "foreach", "plain"],
        default="fused",
        help="AdamW implementation (fused: one kernel over all parameters)",
    )
    p.add_argument(
        "--sample-reps", type=int, default=1, help="timed sampling runs; 0 skips sampling"
    )
    p.add_argument(
        "--compare-loop",
        action="store_true",
        help="also time the loop implementation (same weights), alternating step by step",
    )
    p.add_argument(
        "--malloc",
        choices=["default", "keep"],
        default="default",
        help="keep: glibc keeps freed memory (no fresh pages per large tensor each step)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    malloc = args.malloc if args.malloc == "default" or keep_freed_memory() else "unavailable"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    genes = read_genes(args.genes)
    sets = (
        read_gmt(args.gmt)
        if args.gmt
        else random_sets(genes, args.random_pathways, args.pathway_size, args.seed)
    )
    tokens = build_tokens(genes, sets, args.background_chunk)
    config = ModelConfig(
        hidden=args.hidden,
        depth=args.depth,
        heads=args.heads,
        image_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        implementation=args.implementation,
        head_modulation=args.head_modulation,
        bucket_overhead=args.bucket_overhead,
        cross_attention=args.cross_attention,
        use_pathway_mask=not args.no_pathway_mask,
    )
    t0 = time.perf_counter()
    model = build_model(tokens, feature_dim=args.feature_dim, n_clusters=args.k, config=config)
    model.to(device)
    build_s = time.perf_counter() - t0
    opt = make_optimizer(list(model.parameters()), args.optimizer)
    b, g = args.batch, len(genes)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    clusters = torch.randn(b, args.k, args.feature_dim, device=device)  # (B, K, D)
    sizes = torch.randint(0, 50, (b, args.k), device=device).float()  # (B, K)
    x1 = torch.randn(b, g, device=device)  # (B, G)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> float:
        model.train()
        sync()
        t0 = time.perf_counter()
        with autocast(device, args.precision):
            drop = model.draw_dropout(b, generator=gen)
            cond = model.encode_condition(clusters, sizes, drop=drop)
            loss = flow_matching_loss(model, x1, cond, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    sampler = SamplerConfig(solver=args.solver, steps=args.steps, guidance=args.guidance)

    def sample_batch(config: SamplerConfig = sampler) -> float:
        model.eval()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(device, args.precision):
            cond = model.encode_condition(clusters, sizes)  # once per slide
            null = model.null_condition(b)
            out = sample(model, cond, null, n_genes=g, config=config, generator=gen)
        sync()
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite samples")
        return time.perf_counter() - t0

    # implementations timed in alternation, so both see the same machine load
    impls = [args.implementation]
    if args.compare_loop and args.implementation != "loop":
        impls.append("loop")
    step_times: dict[str, list[float]] = {i: [] for i in impls}
    sample_times: dict[str, list[float]] = {i: [] for i in impls}
    for i in range(args.warmup + args.train_steps if args.train_steps else 0):
        for impl in impls:
            model.set_implementation(impl)
            dt = train_step()
            log.info("%s train step %d: %.3f s", impl, i, dt)
            if i >= args.warmup:  # warm-up steps: allocators, optimizer state, kernels
                step_times[impl].append(dt)
    warm_up = sampler.model_copy(update={"solver": Solver.EULER, "steps": 1})
    for i in range(args.sample_reps):
        for impl in impls:
            if i == 0:
                model.set_implementation(impl)
                sample_batch(warm_up)
            model.set_implementation(impl)
            dt = sample_batch()
            log.info("%s sampling %d: %.3f s", impl, i, dt)
            sample_times[impl].append(dt)
    model.set_implementation(args.implementation)

    counts = model.parameter_counts()
    result = {
        "implementation": args.implementation,
        "genes": g,
        "tokens": len(tokens.members),
        "buckets": len(model.layout.buckets),
        "depth": args.depth,
        "hidden": args.hidden,
        "heads": args.heads,
        "feature_dim": args.feature_dim,
        "k": args.k,
        "batch": b,
        "solver": args.solver,
        "steps": args.steps,
        "guidance": args.guidance,
        "head_modulation": args.head_modulation,
        "precision": args.precision,
        "threads": args.threads,
        "device": str(device),
        "parameters": counts["total"],
        "parameters_effective": counts["effective"],
        "build_s": round(build_s, 3),
        "optimizer": args.optimizer,
        "malloc": malloc,
        "warmup_steps": args.warmup,
        "train_step_s": _median(step_times[args.implementation]),
        **_spread(step_times[args.implementation], "train_step"),
        "train_step_all_s": [round(s, 3) for s in step_times[args.implementation]],
        "sample_batch_s": _median(sample_times[args.implementation]),
        "sample_per_slide_s": _median(sample_times[args.implementation], b),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if len(impls) > 1:
        loop_train, loop_sample = _median(step_times["loop"]), _median(sample_times["loop"], b)
        result["loop_train_step_s"] = loop_train
        result["loop_sample_per_slide_s"] = loop_sample
        if loop_train is not None:
            result["speedup_train"] = round(loop_train / result["train_step_s"], 2)
        if loop_sample is not None:
            result["speedup_sample"] = round(loop_sample / result["sample_per_slide_s"], 2)
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
