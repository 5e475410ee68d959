"""Training loop shared by the neural baselines (HE2RNA, tRNAsformer, SEQUOIA).

Features are z-scored with the training fold's statistics, targets z-scored per gene; the loss
is the mean squared error; AdamW with early stopping on the validation split (the best epoch's
weights are kept). Everything stochastic is seeded; global RNG state is left untouched.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from rnafm.errors import InputError
from rnafm.evaluate.baselines.base import Predictions
from rnafm.evaluate.baselines.fitting import fit_early_stopped, save_network
from rnafm.evaluate.baselines.networks import HE2RNANet, SequoiaNet, TransformerNet

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["Architecture", "NetConfig", "TorchRegressor"]

logger = logging.getLogger(__name__)


class Architecture(str, Enum):
    """Neural baseline architectures."""

    HE2RNA = "he2rna"
    TRNASFORMER = "trnasformer"
    SEQUOIA = "sequoia"


class NetConfig(BaseModel):
    """Size and training schedule of a neural baseline (CPU-friendly defaults)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(128, ge=4, description="Width of token embeddings / MLP hidden layer.")
    depth: int = Field(2, ge=1, description="Transformer layers (tRNAsformer, SEQUOIA).")
    heads: int = Field(4, ge=1, description="Attention heads (tRNAsformer, SEQUOIA).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout probability.")
    top_k: list[int] = Field(
        default_factory=lambda: [1, 2, 5, 10, 20, 50, 100],
        description="HE2RNA: k of the top-k pooling; one sampled per batch in training, "
        "predictions averaged over all at inference.",
    )
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(16, ge=1, description="Slides per batch.")
    max_epochs: int = Field(100, ge=0, description="Maximum epochs (0: an untrained model).")
    patience: int = Field(10, ge=1, description="Epochs without validation improvement to stop.")


def _build(arch: Architecture, d_in: int, n_genes: int, c: NetConfig) -> nn.Module:
    if arch is Architecture.HE2RNA:
        return HE2RNANet(d_in, n_genes, hidden=c.hidden, dropout=c.dropout, ks=c.top_k)
    cls = TransformerNet if arch is Architecture.TRNASFORMER else SequoiaNet
    return cls(d_in, n_genes, hidden=c.hidden, depth=c.depth, heads=c.heads, dropout=c.dropout)


class TorchRegressor:
    """A neural baseline fitted with early stopping on the validation split."""

    def __init__(self, arch: Architecture | str, config: NetConfig | None = None) -> None:
        self.arch = Architecture(arch)
        self.config = config or NetConfig()
        self.net: nn.Module | None = None
        self.history: list[dict] = []

    def random_twin(self) -> TorchRegressor:
        """The same architecture left at its random initialisation (SEQUOIA's reference)."""
        return TorchRegressor(self.arch, self.config.model_copy(update={"max_epochs": 0}))

    # ---- data --------------------------------------------------------------------------
    def _inputs(self, data: CohortData) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(np.asarray(data.clusters, dtype=np.float32))  # (n, K, D)
        sizes = getattr(data, "sizes", None)
        if sizes is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool)  # (n, K)
        else:
            mask = torch.as_tensor(np.asarray(sizes)) > 0  # (n, K)
            mask[~mask.any(1)] = True  # a slide without sizes: use every row
        return (x - self.x_mu) / self.x_sd, mask  # (n, K, D), (n, K)

    def _targets(self, data: CohortData) -> Tensor:
        if data.expression is None:
            raise InputError("training data have no expression; pass a reference table")
        y = torch.as_tensor(np.asarray(data.expression, dtype=np.float32))  # (n, G)
        return (y - self.y_mu) / self.y_sd  # (n, G)

    def _forward(self, x: Tensor, mask: Tensor, gen: torch.Generator | None = None) -> Tensor:
        if self.arch is Architecture.HE2RNA and gen is not None:
            ks = self.config.top_k
            k = ks[int(torch.randint(len(ks), (1,), generator=gen))]
            return self.net(x, mask, k=k)  # (B, G)
        return self.net(x, mask)  # (B, G)

    @torch.no_grad()
    def _loss(self, x: Tensor, mask: Tensor, y: Tensor) -> float:
        self.net.eval()
        total = 0.0
        for i in range(0, len(x), 64):
            pred = self._forward(x[i : i + 64], mask[i : i + 64])  # (b, G)
            total += float(((pred - y[i : i + 64]) ** 2).sum())
        return total / y.numel()

    # ---- fit / predict -----------------------------------------------------------------
    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Fit on ``train``; stop early on ``val`` (a fixed ``max_epochs`` without it)."""
        c = self.config
        raw = np.asarray(train.clusters, dtype=np.float32)  # (n, K, D)
        sizes = getattr(train, "sizes", None)
        rows = (
            raw[np.asarray(sizes) > 0]
            if sizes is not None and (np.asarray(sizes) > 0).any()
            else raw.reshape(-1, raw.shape[-1])
        )
        self.x_mu = torch.as_tensor(rows.mean(0))  # (D,)
        self.x_sd = torch.as_tensor(np.maximum(rows.std(0), 1e-6))  # (D,)
        expr = np.asarray(train.expression, dtype=np.float32)
        self.y_mu = torch.as_tensor(expr.mean(0))  # (G,)
        self.y_sd = torch.as_tensor(np.maximum(expr.std(0), 1e-6))  # (G,)
        x, mask = self._inputs(train)
        y = self._targets(train)
        has_val = val is not None and len(val.slide_ids) > 0
        if has_val:
            xv, mv = self._inputs(val)
            yv = self._targets(val)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.net = _build(self.arch, x.shape[-1], y.shape[-1], c)
            opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)

            def run_epoch() -> float:
                self.net.train()
                perm = torch.randperm(len(x), generator=gen)
                tot = 0.0
                for i in range(0, len(x), c.batch_size):
                    idx = perm[i : i + c.batch_size]
                    pred = self._forward(x[idx], mask[idx], gen)  # (b, G)
                    loss = ((pred - y[idx]) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    tot += loss.item() * len(idx)
                return tot / len(x)

            self.history = fit_early_stopped(
                self.net,
                c.max_epochs,
                run_epoch,
                (lambda: self._loss(xv, mv, yv)) if has_val else None,
                key="val_loss",
                maximise=False,
                patience=c.patience,
            )
        self.net.eval()
        if out is not None:
            self._save(Path(out))

    def _save(self, out: Path) -> None:
        save_network(out, self.arch.value, self.config.model_dump(), self.history, self.net)

    @torch.no_grad()
    def predict(self, data: CohortData) -> Predictions:
        """Predictions on the log2(x+1) scale; no uncertainty."""
        if self.net is None:
            raise RuntimeError("fit the model before predicting")
        x, mask = self._inputs(data)
        outs = [self._forward(x[i : i + 64], mask[i : i + 64]) for i in range(0, len(x), 64)]
        z = torch.cat(outs) if outs else torch.zeros(0, len(self.y_mu))  # (n, G)
        return Predictions(mean=(z * self.y_sd + self.y_mu).numpy().astype(np.float32))
