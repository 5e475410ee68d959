"""The image-path regression honours a deadline (what keeps paper-scale training in budget).

No timing is asserted: a deadline already in the past must stop the regression after its first
epoch, with one validation, and the weights it keeps are the validated ones.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def _setup(seed: int = 4):
    from rnafm.model import ModelConfig, build_model
    from rnafm.pathways import PathwayTokens
    from rnafm.training.config import TrainConfig, apply_overrides

    rng = np.random.default_rng(seed)
    n, k, d, g = 40, 5, 4, 7
    clusters = rng.normal(size=(n, k, d))  # (n, K, D)
    sizes = rng.integers(1, 50, (n, k)).astype(float)  # (n, K)
    z = rng.normal(size=(n, g))  # (n, G)
    tokens = PathwayTokens(
        genes=[f"G{i}" for i in range(g)],
        names=["a", "background_0"],
        members=[np.arange(0, 4), np.arange(4, g)],
        is_background=np.array([False, True]),
    )
    torch.manual_seed(0)
    model = build_model(tokens, feature_dim=d, n_clusters=k, config=ModelConfig(hidden=8))
    cfg = apply_overrides(TrainConfig(), {"head_epochs": 12, "head_every": 5, "batch_size": 16})
    t = [torch.as_tensor(a, dtype=torch.float32) for a in (clusters, sizes, z)]
    train = (t[0][:30], t[1][:30], t[2][:30])
    val = (t[0][30:], t[1][30:], z[30:])
    return model, train, val, cfg


def test_past_deadline_stops_after_one_validated_epoch():
    from rnafm.training.image_path import fit_image_path

    model, train, val, cfg = _setup()
    info = fit_image_path(
        model, *train, val=val, config=cfg, seed=0, deadline=time.monotonic() - 1.0
    )
    assert info["epochs"] == 1 and info["time_limited"] is True
    assert info["best_epoch"] == 1 and info["val_pcc"] is not None  # validated off-cadence


def test_no_deadline_runs_the_configured_epochs():
    from rnafm.training.image_path import fit_image_path

    model, train, val, cfg = _setup()
    info = fit_image_path(model, *train, val=val, config=cfg, seed=0, deadline=None)
    assert info["time_limited"] is False
    assert info["epochs"] == 12 or info["best_epoch"] < info["epochs"]  # all, or patience
    assert info["best_epoch"] % 5 == 0  # validations only on the cadence
