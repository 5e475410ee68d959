"""Default `rnafm train` at the paper's scale: wall time, CPU time and peak memory, one JSON line.

A feature-level synthetic cohort (:func:`rnafm.synth.features.make_feature_cohort`, ``mixture``
design) of ``--slides`` slides with ``--dim``-d tile features and ``--tiles LO HI`` tiles per
slide (default 400 slides, 1024-d, 500-2000 tiles: the size of a diagnostic slide's tissue at
20x in 256-px tiles, in the range the paper's k-means saw) is generated once in ``--work``; its
genes are relabelled to the symbols of ``--genes`` (one per line, the paper's 20,820) and a new
reference CSV is written with those symbols (``rna_<SYMBOL>`` columns; values untouched). Then
the real CLI, ``python -m rnafm -v train --reference ... --features ... --gene-sets GMT``, runs in
a subprocess with the default configuration (only ``--out`` and ``--no-resume``), and this script
measures:

- ``wall_s``: the subprocess's wall time; ``cpu_s``: its user + system CPU time (all threads);
- ``peak_rss_gb``: the largest resident set of the subprocess (``getrusage(RUSAGE_CHILDREN)``)
  and ``peak_tree_rss_gb``: the largest sum of the RSS of the subprocess and its children,
  polled from ``/proc`` every 0.2 s;
- ``stages``: seconds per stage, from the arrival times of the run's log lines and its files:
  ``startup`` (imports and reading the reference), ``clustering`` (k-means of every slide, or
  the cache), ``tokens`` (gene sets and the split), ``prior`` (normalisation and the cross-fitted ridge prior), ``image_path``
  (the attention-MIL regression), ``flow_loop`` (flow epochs and validations, from
  ``history.jsonl``), ``calibration`` (selection, draws, spread, conformal multiplier),
  ``prior_refit`` (ridge on training + validation slides), ``tile_head`` (the maps' tile head)
  and ``exit``;
- ``load_1m``: the machine's 1-minute load average sampled during the run (min, mean, max), since
  the 2 cores may be shared.

The k-means cache beside the features is removed before the run (``--keep-cache`` keeps it), so
the time includes clustering the slides as a first ``rnafm train`` on new features would.
``pass`` is true when ``wall_s`` <= ``--max-minutes`` (20) and the peak memory (the larger of the
two) <= ``--max-gb`` (8).

    # PAPER: a folder with the paper's 20,820-gene list and its 380 GO-MF pathway GMT
    python benchmarks/paper_scale_train.py --genes PAPER/genes_20820.txt \
        --gmt PAPER/go_mf_panther_380.gmt.gz --work /tmp/paperscale/work
    # a quick check of the script: fewer slides, smaller features
    python benchmarks/paper_scale_train.py --genes PAPER/genes_20820.txt \
        --gmt PAPER/go_mf_panther_380.gmt.gz --slides 40 --dim 64 --tiles 100 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GENE_PREFIX = "rna_"
REFERENCE = "reference_paper.csv"

# log messages (substrings) that end each stage, in order; see the module docstring
_MARKS = (
    ("clustering", re.compile(r"loaded \d+ slides")),
    ("tokens", re.compile(r"training on \d+ slides, validating on")),
    ("prior", re.compile(r"ridge prior: median alpha")),
    ("image_path", re.compile(r"image path trained")),
    ("calibration", re.compile(r"trained \d+ steps in")),
    ("prior_refit", re.compile(r"ridge prior refitted")),
    ("tile_head", re.compile(r"tile head: \{")),
)
_STARTED = re.compile(r"expression scale detected|loaded \d+ slides")


def read_gene_list(path: Path) -> list[str]:
    """Gene symbols, one per line (blank lines and ``#`` comments skipped); no duplicates."""
    genes = [g.strip() for g in path.read_text().splitlines()]
    genes = [g for g in genes if g and not g.startswith("#")]
    if len(set(genes)) != len(genes):
        raise SystemExit(f"{path}: duplicated gene symbols")
    return genes


def relabel_genes(genes: list[str], symbols: list[str]) -> dict[str, str]:
    """A one-to-one map from the cohort's genes to ``symbols``.

    Genes whose name is already one of ``symbols`` keep it; the others take the unused symbols
    in the order of ``symbols``. Needs ``len(symbols) >= len(genes)``.
    """
    if len(symbols) < len(genes):
        raise SystemExit(f"{len(symbols)} gene symbols for a cohort of {len(genes)} genes")
    wanted = set(symbols)
    kept = {g for g in genes if g in wanted}
    free = iter(s for s in symbols if s not in kept)
    return {g: (g if g in kept else next(free)) for g in genes}


def write_relabelled_reference(src: Path, dst: Path, symbols: list[str]) -> list[str]:
    """Copy the reference CSV ``src`` to ``dst`` with its ``rna_`` columns renamed to ``symbols``.

    Only the header changes (the rows are copied byte for byte). Returns the new gene order.
    """
    with src.open() as f:
        header = f.readline().rstrip("\n").split(",")
        genes = [c[len(GENE_PREFIX) :] for c in header if c.startswith(GENE_PREFIX)]
        mapping = relabel_genes(genes, symbols)
        new = [
            GENE_PREFIX + mapping[c[len(GENE_PREFIX) :]] if c.startswith(GENE_PREFIX) else c
            for c in header
        ]
        tmp = dst.with_name(dst.name + ".tmp")
        with tmp.open("w") as out:
            out.write(",".join(new) + "\n")
            shutil.copyfileobj(f, out)
    tmp.replace(dst)
    return [mapping[g] for g in genes]


def make_cohort(work: Path, args: argparse.Namespace) -> dict:
    """Generate (or reuse) the synthetic cohort in ``work/cohort``; return its settings."""
    from rnafm.synth.features import make_feature_cohort

    root = work / "cohort"
    want = {
        "design": "mixture",
        "n_slides": args.slides,
        "n_genes": args.n_genes,
        "dim": args.dim,
        "tiles": list(args.tiles),
        "seed": args.seed,
    }
    meta_file = root / "cohort.json"
    if meta_file.is_file():
        cfg = json.loads(meta_file.read_text())["config"]
        if {k: cfg.get(k) for k in want} == want and (root / "reference.csv").is_file():
            return {"reused": True, "generate_s": 0.0, **want}
    t0 = time.perf_counter()
    make_feature_cohort(
        root,
        design="mixture",
        n_slides=args.slides,
        n_genes=args.n_genes,
        dim=args.dim,
        seed=args.seed,
        tiles=tuple(args.tiles),
    )
    return {"reused": False, "generate_s": round(time.perf_counter() - t0, 1), **want}


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants (0 once it is gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))  # ppid
            rss[int(entry)] = int(fields[21]) * page  # rss in pages
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


class Monitor(threading.Thread):
    """Polls the subprocess tree's RSS and the load average until stopped."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.loads: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        last_load = 0.0
        while not self._halt.is_set():
            self.peak = max(self.peak, _tree_rss(self.pid))
            if time.monotonic() - last_load >= 5.0:
                self.loads.append(os.getloadavg()[0])
                last_load = time.monotonic()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_train(cmd: list[str], log_path: Path, run: Path) -> dict:
    """Run ``cmd``, stamp every stderr/stdout line with its arrival time, measure resources."""
    env = {**os.environ, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}  # one log record per line
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    mon = Monitor(proc.pid)
    mon.start()
    lines: list[tuple[float, str]] = []
    with log_path.open("w") as log:
        for line in proc.stdout:
            now = time.time()
            lines.append((now, line.rstrip("\n")))
            log.write(f"{now - t0:9.2f} {line}")
            log.flush()
    rc = proc.wait()
    wall = time.time() - t0
    mon.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rc": rc,
        "t0": t0,
        "wall_s": wall,
        "cpu_s": cpu,
        "maxrss_gb": after.ru_maxrss * 1024 / 1e9,  # ru_maxrss is in KiB on Linux
        "tree_gb": mon.peak / 1e9,
        "loads": mon.loads,
        "lines": lines,
    }


def stage_times(res: dict, run: Path) -> dict:
    """Seconds per stage from the log lines' arrival times and the run's history."""
    t0, lines = res["t0"], res["lines"]
    marks: dict[str, float] = {}
    for when, text in lines:
        for name, pat in _MARKS:
            if name not in marks and pat.search(text):
                marks[name] = when
    start = next((w for w, text in lines if _STARTED.search(text)), None)
    history = run / "history.jsonl"
    loop_s = None
    if history.is_file():
        rows = [json.loads(x) for x in history.read_text().splitlines() if x.strip()]
        loop_s = rows[-1]["time_s"] if rows else None
        epochs = len(rows)
    else:
        epochs = 0
    end = t0 + res["wall_s"]
    out: dict[str, float | int | None] = {}
    prev = t0
    # startup: imports and reading the reference (up to the expression-scale log line)
    out["startup"] = None if start is None else start - t0
    for name in ("clustering", "tokens", "prior", "image_path"):
        if name in marks:
            out[name] = marks[name] - (start if name == "clustering" and start else prev)
            prev = marks[name]
    if "calibration" in marks and loop_s is not None:
        out["flow_loop"] = loop_s
        out["calibration"] = marks["calibration"] - prev - loop_s
        prev = marks["calibration"]
    for name in ("prior_refit", "tile_head"):
        if name in marks:
            out[name] = marks[name] - prev
            prev = marks[name]
    out["exit"] = end - prev
    rounded = {k: (None if v is None else round(float(v), 1)) for k, v in out.items()}
    rounded["flow_epochs"] = epochs
    return rounded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=Path, required=True, help="Gene symbols, one per line.")
    ap.add_argument("--gmt", type=Path, required=True, help="Gene sets (.gmt or .gmt.gz).")
    ap.add_argument("--slides", type=int, default=400)
    ap.add_argument("--dim", type=int, default=1024, help="Tile feature dimension.")
    ap.add_argument(
        "--tiles", type=int, nargs=2, default=(500, 2000), metavar=("LO", "HI"),
        help="Tiles per slide, uniform in [LO, HI).",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="Seed of the synthetic cohort.")
    ap.add_argument(
        "--work", type=Path, default=None,
        help="Folder for the cohort and the run (a cohort of the same settings there is reused).",
    )  # fmt: skip
    ap.add_argument("--keep-cache", action="store_true", help="Keep the k-means cache.")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="Wall-time target.")
    ap.add_argument("--max-gb", type=float, default=8.0, help="Peak-memory target.")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="Passed to `rnafm train --set` (the default configuration when none is given).",
    )  # fmt: skip
    args = ap.parse_args()

    symbols = read_gene_list(args.genes)
    args.n_genes = len(symbols)
    work = args.work or Path(tempfile.mkdtemp(prefix="rnafm_paperscale_"))
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(work, args)
    root = work / "cohort"
    write_relabelled_reference(root / "reference.csv", work / REFERENCE, symbols)
    if not args.keep_cache:
        shutil.rmtree(root / "features" / ".rnafm_cache", ignore_errors=True)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "rnafm", "-v", "train",
        "--reference", str(work / REFERENCE), "--features", str(root / "features"),
        "--gene-sets", str(args.gmt), "--out", str(run), "--no-resume",
    ]  # fmt: skip
    for item in args.set:
        cmd += ["--set", item]
    res = run_train(cmd, work / "train.log", run)
    if res["rc"] != 0:
        tail = "\n".join(text for _, text in res["lines"][-30:])
        raise SystemExit(f"rnafm train failed (exit {res['rc']}); see {work / 'train.log'}\n{tail}")
    tokens = json.loads((run / "tokens.json").read_text())
    config = json.loads((run / "config.json").read_text())
    n_tokens = len(tokens["names"])
    n_background = int(sum(tokens["is_background"]))
    peak = max(res["maxrss_gb"], res["tree_gb"])
    loads = res["loads"] or [os.getloadavg()[0]]
    out = {
        "slides": args.slides,
        "genes": len(json.loads((run / "genes.json").read_text())),
        "tokens": n_tokens,
        "pathway_tokens": n_tokens - n_background,
        "background_tokens": n_background,
        "dim": args.dim,
        "tiles": list(args.tiles),
        "n_train": config.get("n_train"),
        "n_val": config.get("n_val"),
        "wall_s": round(res["wall_s"], 1),
        "cpu_s": round(res["cpu_s"], 1),
        "cpu_per_wall": round(res["cpu_s"] / max(res["wall_s"], 1e-9), 2),
        "peak_rss_gb": round(res["maxrss_gb"], 2),
        "peak_tree_rss_gb": round(res["tree_gb"], 2),
        "stages": stage_times(res, run),
        "load_1m": {
            "min": round(min(loads), 2),
            "mean": round(sum(loads) / len(loads), 2),
            "max": round(max(loads), 2),
        },
        "cores": os.cpu_count(),
        "torch_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "cohort": cohort,
        "overrides": args.set,
        "max_minutes": args.max_minutes,
        "max_gb": args.max_gb,
        "pass_time": res["wall_s"] <= args.max_minutes * 60,
        "pass_memory": peak <= args.max_gb,
    }
    out["pass"] = out["pass_time"] and out["pass_memory"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
