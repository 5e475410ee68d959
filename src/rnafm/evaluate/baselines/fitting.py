"""Shared fitting loop of the neural baselines: epochs, early stopping on validation, saving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from rnafm._io import atomic_path, write_json

__all__ = ["fit_early_stopped", "save_network"]


def fit_early_stopped(
    net: nn.Module,
    epochs: int,
    run_epoch: Callable[[], float],
    score: Callable[[], float] | None = None,
    *,
    key: str,
    maximise: bool,
    patience: int,
    every: int = 1,
) -> list[dict]:
    """Train for up to ``epochs`` epochs and keep the best weights on validation.

    Parameters
    ----------
    net
        The network; it ends with the weights of the best validation score (when scored).
    run_epoch
        One training epoch; returns its mean training loss.
    score
        Validation score, evaluated every ``every`` epochs and after the last; None: no
        validation, all ``epochs`` are trained.
    key
        Name of the score in the history records.
    maximise
        True when a larger score is better.
    patience
        Stop after this many validations without an improvement of more than 1e-6.

    Returns
    -------
    list[dict]
        One record per epoch: ``epoch``, ``train_loss`` and ``key`` where validated.
    """
    history: list[dict] = []
    best: float | None = None
    best_state, bad = None, 0
    for epoch in range(1, epochs + 1):
        rec = {"epoch": epoch, "train_loss": run_epoch()}
        if score is not None and (epoch % every == 0 or epoch == epochs):
            s = rec[key] = score()
            if best is None or (s > best + 1e-6 if maximise else s < best - 1e-6):
                best, bad = s, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
        history.append(rec)
        if bad >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return history


def save_network(out: Path, name: str, config: dict, history: list[dict], net: nn.Module) -> None:
    """Write ``config.json``, ``history.jsonl`` and ``model.pt`` of a fitted baseline in ``out``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"model": name, **config})
    with atomic_path(out / "history.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    with atomic_path(out / "model.pt") as tmp:
        torch.save(net.state_dict(), tmp)
