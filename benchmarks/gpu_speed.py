"""GPU speed of RNA-FM at the paper's scale: fast path vs the per-pathway loop, one JSON line.

On CUDA (defaults = the paper's scale: 20,820 genes, 380 GO-MF pathways, depth 7, hidden 256,
8 heads, batch 32, K=100 clusters of 1024-d features, bf16 autocast)::

    python benchmarks/gpu_speed.py [--compile] [--genes FILE --gmt FILE]

times, in the same run and on the same weights,
- a training step (AdamW, condition dropout, flow-matching loss, clipping) for the fast path and
  the plain per-pathway loop, and their ratio (target on one H200: >= 20x);
- guided sampling per slide (20 Euler steps, guidance 2, batch 32) for both, and the ratio;
- sampling 1,000 slides x 16 draws x 20,820 genes with the fast path (target: < 60 s).

Without CUDA (or with ``--small``) it runs the same code on tiny shapes, so CI exercises it.
Pass the paper's 20,820-gene list and its 380 GO-MF pathway GMT with ``--genes`` / ``--gmt``;
without them a random pathway layout of the same size is used and the JSON says
``"layout": "random"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rnafm.flow import SamplerConfig, flow_matching_loss, sample
from rnafm.model import Condition, ModelConfig, Precision, autocast, build_model
from rnafm.pathways import TokenConfig, load_gene_sets, select_tokens

log = logging.getLogger("gpu_speed")

FULL = {"genes": 20820, "pathways": 380, "depth": 7, "hidden": 256, "heads": 8, "k": 100,
        "feature_dim": 1024, "batch": 32, "slides": 1000, "draws": 16, "steps": 20,
        "train_steps": 10, "loop_train_steps": 3}  # fmt: skip
SMALL = {"genes": 301, "pathways": 23, "depth": 2, "hidden": 32, "heads": 4, "k": 7,
         "feature_dim": 33, "batch": 6, "slides": 10, "draws": 3, "steps": 4,
         "train_steps": 2, "loop_train_steps": 1}  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:<i> or cpu")
    p.add_argument("--small", action="store_true", help="tiny shapes (automatic without CUDA)")
    p.add_argument("--genes", type=Path, default=None, help="The paper's gene list (one a line).")
    p.add_argument("--gmt", type=Path, default=None, help="The paper's 380 GO-MF pathway GMT.")
    p.add_argument("--precision", choices=[x.value for x in Precision], default=None,
                   help="default bf16 on CUDA, fp32 on CPU")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--no-loop", action="store_true", help="skip the per-pathway loop timings")
    p.add_argument("--sample-rows", type=int, default=4096,
                   help="draw rows per sampling chunk (x2 inside guidance)")  # fmt: skip
    p.add_argument("--slides", type=int, help="slides for the throughput run")
    p.add_argument("--draws", type=int, help="draws per slide for the throughput run")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_tokens(args: argparse.Namespace, shape: dict) -> tuple[object, str]:
    """Paper tokens from the gene list + GMT (every set kept), or a random layout like it."""
    cfg = TokenConfig(min_size=1, max_size=10**6, max_tokens=10**4, jaccard_threshold=1.0)
    if not args.small and args.genes and args.gmt and args.genes.is_file() and args.gmt.is_file():
        genes = [g for g in args.genes.read_text().split() if g]
        return select_tokens(genes, load_gene_sets(args.gmt), cfg), "paper"
    rng = np.random.default_rng(args.seed)
    n = shape["genes"]
    genes = [f"G{i}" for i in range(n)]
    covered = rng.choice(n, int(n * 0.825), replace=False)  # ~3,645 of 20,820 in no set
    sizes = np.clip(rng.lognormal(np.log(60), 1.0, shape["pathways"]).astype(int), 3, n // 3)
    sets = {f"P{i}": [genes[j] for j in rng.choice(covered, s, replace=False)]
            for i, s in enumerate(sizes)}  # fmt: skip
    return select_tokens(genes, sets, cfg), "random"


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device != "auto":
        device = torch.device(args.device)
    args.small = args.small or device.type != "cuda"
    shape = dict(SMALL if args.small else FULL)
    shape["slides"] = args.slides or shape["slides"]
    shape["draws"] = args.draws or shape["draws"]
    precision = Precision(args.precision or ("bf16" if device.type == "cuda" else "fp32"))
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    tokens, layout = make_tokens(args, shape)
    n_genes = len(tokens.genes)
    config = ModelConfig(hidden=shape["hidden"], depth=shape["depth"], heads=shape["heads"],
                         image_heads=shape["heads"])  # fmt: skip
    model = build_model(tokens, feature_dim=shape["feature_dim"], n_clusters=shape["k"],
                        config=config).to(device)  # fmt: skip
    fast = torch.compile(model) if args.compile else model  # forward compiled; same weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    b, k, d = shape["batch"], shape["k"], shape["feature_dim"]
    clusters = torch.randn(b, k, d, device=device)  # (B, K, D)
    sizes = torch.randint(1, 50, (b, k), device=device).float()  # (B, K)
    x1 = torch.randn(b, n_genes, device=device)  # (B, G)
    sampler = SamplerConfig(steps=shape["steps"], guidance=2.0)

    def train_step(net: torch.nn.Module) -> None:
        model.train()
        with autocast(device, precision):
            drop = model.draw_dropout(b, generator=gen)  # (B,)
            cond = model.encode_condition(clusters, sizes, drop=drop)
            loss = flow_matching_loss(net, x1, cond, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sample_rows(net: torch.nn.Module, feats: torch.Tensor, draws: int) -> torch.Tensor:
        model.eval()
        with torch.no_grad(), autocast(device, precision):
            cond = model.encode_condition(feats, None).repeat(draws)  # once per slide
            cond = Condition(cond.vec.float(), cond.tokens, cond.token_bias)  # fp32 ODE state
            null = model.null_condition(1)
            return sample(net, cond, null, n_genes=n_genes, config=sampler, generator=gen)

    def run_impl(impl: str, net: torch.nn.Module, n_steps: int) -> dict[str, float]:
        model.set_implementation(impl)
        for _ in range(3 if impl == "fast" else 1):  # warm-up (compile, allocator, autotune)
            train_step(net)
        steps = [timed(lambda: train_step(net), device) for _ in range(n_steps)]
        sample_rows(net, clusters, 1)  # warm-up
        per_slide = timed(lambda: sample_rows(net, clusters, 1), device) / b
        return {"train_step_s": statistics.median(steps), "sample_per_slide_s": per_slide}

    result: dict[str, object] = {
        "benchmark": "gpu_speed",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "small": args.small,
        "layout": layout,
        "genes": n_genes,
        "tokens": len(tokens.names),
        "pathways": int((~np.asarray(tokens.is_background)).sum()),
        **{key: shape[key] for key in ("depth", "hidden", "heads", "k", "feature_dim", "batch")},
        "solver": sampler.solver.value,
        "sampler_steps": sampler.steps,
        "guidance": sampler.guidance,
        "precision": precision.value,
        "compile": args.compile,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    fast_t = run_impl("fast", fast, shape["train_steps"])
    log.info("fast: %s", fast_t)
    result.update({f"fast_{key}": round(v, 5) for key, v in fast_t.items()})
    if not args.no_loop:
        loop_t = run_impl("loop", model, shape["loop_train_steps"])
        log.info("loop: %s", loop_t)
        result.update({f"loop_{key}": round(v, 5) for key, v in loop_t.items()})
        result["speedup_train"] = round(loop_t["train_step_s"] / fast_t["train_step_s"], 2)
        result["speedup_sample"] = round(
            loop_t["sample_per_slide_s"] / fast_t["sample_per_slide_s"], 2
        )
    model.set_implementation("fast")

    # throughput: slides x draws x genes through the predictor's sampler (the real path:
    # features on the host, chunks of rows to the device, draws back as float32 numpy)
    from rnafm.flow.draws import draw_samples

    n_slides, draws = shape["slides"], shape["draws"]
    rng = np.random.default_rng(args.seed)
    feats = rng.standard_normal((n_slides, k, d), dtype=np.float32)  # (S, K, D)
    counts = rng.integers(1, 50, (n_slides, k)).astype(np.float32)  # (S, K)

    def sample_cohort(n: int) -> None:
        out = draw_samples(fast, feats[:n], counts[:n], draws=draws, sampler=sampler,
                           seed=args.seed, device=device, max_rows=args.sample_rows)  # fmt: skip
        if not np.isfinite(out).all():  # (n, draws, G)
            raise RuntimeError("non-finite samples")

    sample_cohort(min(n_slides, max(1, args.sample_rows // draws)))  # warm-up, one chunk
    cohort_s = timed(lambda: sample_cohort(n_slides), device)
    result.update({"cohort_slides": n_slides, "cohort_draws": draws,
                   "cohort_sample_s": round(cohort_s, 3),
                   "cohort_precision": "bf16" if device.type == "cuda" else "fp32"})  # fmt: skip
    if device.type == "cuda":
        result["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if not args.small:
        result["target_train_20x"] = result.get("speedup_train", 0) >= 20
        result["target_cohort_under_60s"] = cohort_s < 60
    print(json.dumps(result))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
