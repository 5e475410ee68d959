"""benchmarks/gpu_speed.py runs on CPU with tiny shapes and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_speed.py"


def test_gpu_speed_small_on_cpu() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--slides", "5", "--draws", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["small"] is True
    assert result["device"] == "cpu"
    assert result["cohort_slides"] == 5 and result["cohort_draws"] == 2
    for key in ("fast_train_step_s", "loop_train_step_s", "fast_sample_per_slide_s",
                "speedup_train", "speedup_sample", "cohort_sample_s"):  # fmt: skip
        assert result[key] > 0, key
