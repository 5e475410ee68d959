"""The shared early-stopping loop of the neural baselines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnafm.evaluate.baselines.fitting import fit_early_stopped, save_network


@pytest.mark.parametrize("maximise", [True, False])
def test_keeps_the_best_weights_and_stops_after_patience(maximise):
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    scores = iter([1.0, 3.0, 2.0, 2.5, 2.9, 5.0])  # best at the 2nd validation, then 3 worse
    sign = 1.0 if maximise else -1.0

    def run_epoch() -> float:
        with torch.no_grad():
            net.weight += 1.0  # weight = epoch after each epoch
        return 0.0

    hist = fit_early_stopped(
        net, 20, run_epoch, lambda: sign * next(scores), key="s", maximise=maximise,
        patience=3, every=2,
    )  # fmt: skip
    assert [r["epoch"] for r in hist] == list(range(1, 11))  # 3 worse validations: 6, 8, 10
    assert [r["s"] for r in hist if "s" in r] == [sign * v for v in (1.0, 3.0, 2.0, 2.5, 2.9)]
    assert net.weight.item() == pytest.approx(4.0)  # the weights of epoch 4


def test_without_validation_trains_every_epoch_and_saves(tmp_path):
    net = nn.Linear(2, 1)
    hist = fit_early_stopped(net, 5, lambda: 1.0, None, key="s", maximise=True, patience=1)
    assert len(hist) == 5 and all("s" not in r for r in hist)
    save_network(tmp_path / "m", "x", {"a": 1}, hist, net)
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "config.json", "history.jsonl", "model.pt"
    }  # fmt: skip
