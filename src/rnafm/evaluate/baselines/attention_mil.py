"""Attention-MIL regressor: gated attention pooling over the K cluster means (Ilse et al. 2018).

Each cluster mean is normalised and projected (LayerNorm -> Linear -> GELU -> Dropout), pooled by
the model's :class:`rnafm.model.condition.GatedAttentionPool` (P heads, an additive log(size)
bias so a cluster's weight scales with its tile count, empty clusters masked) and mapped to
z-scored expression by a linear head. MSE, AdamW; with a validation split the mean per-gene PCC
on it is checked every few epochs and the best weights are kept (early stopping), without one a
fixed number of epochs is trained. Everything stochastic is seeded; global RNG state is left
untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from rnafm.errors import InputError
from rnafm.evaluate.baselines.base import Predictions
from rnafm.evaluate.baselines.fitting import fit_early_stopped, save_network
from rnafm.metrics import mean_pcc
from rnafm.model.condition import GatedAttentionPool, cluster_attention_bias

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["AttentionMILNet", "MILConfig", "AttentionMILRegressor"]

logger = logging.getLogger(__name__)

_EVAL_BATCH = 64


class MILConfig(BaseModel):
    """Size and training schedule of the attention-MIL baseline."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(128, ge=4, description="Width H of the projected cluster tokens.")
    heads: int = Field(4, ge=1, description="Gated attention pooling heads P.")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="Dropout after the projection.")
    use_sizes: bool = Field(
        True, description="Add log(cluster size) to the attention logits (tile-count weighting)."
    )
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(32, ge=1, description="Slides per batch.")
    max_epochs: int = Field(60, ge=0, description="Maximum epochs with a validation split.")
    fixed_epochs: int = Field(
        50, ge=0, description="Epochs without a validation split (at most max_epochs)."
    )
    check_every: int = Field(5, ge=1, description="Epochs between validation checks.")
    patience: int = Field(4, ge=1, description="Checks without improvement before stopping.")


class AttentionMILNet(nn.Module):
    """Cluster means (B, K, D) and attention bias (B, K) -> z-scored expression (B, G)."""

    def __init__(self, d_in: int, n_genes: int, *, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.pool = GatedAttentionPool(hidden, heads)  # heads concatenated -> Linear(P H, H)
        self.head = nn.Linear(hidden, n_genes)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """Predictions (B, G)."""
        z = self.proj(x)  # (B, K, H)
        return self.head(self.pool(z, bias))  # (B, G)


class AttentionMILRegressor:
    """Gated-attention MIL over cluster tokens; validation only for early stopping."""

    def __init__(self, config: MILConfig | None = None) -> None:
        self.config = config or MILConfig()
        self.net: AttentionMILNet | None = None
        self.history: list[dict] = []

    def random_twin(self) -> AttentionMILRegressor:
        """The same network left at its random initialisation (SEQUOIA's reference)."""
        return AttentionMILRegressor(self.config.model_copy(update={"max_epochs": 0}))

    def _inputs(self, data: CohortData) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(np.asarray(data.clusters, dtype=np.float32))  # (n, K, D)
        sizes = getattr(data, "sizes", None)
        s = (
            torch.ones(x.shape[:2])
            if sizes is None
            else torch.as_tensor(np.asarray(sizes, dtype=np.float32))
        )  # (n, K)
        return x, cluster_attention_bias(s, use_sizes=self.config.use_sizes)  # (n,K,D), (n,K)

    def _targets(self, data: CohortData) -> np.ndarray:
        if data.expression is None:
            raise InputError("training data have no expression; pass a reference table")
        return np.asarray(data.expression, dtype=np.float32)  # (n, G)

    @torch.no_grad()
    def _predict_z(self, x: Tensor, bias: Tensor) -> Tensor:
        self.net.eval()
        outs = [
            self.net(x[i : i + _EVAL_BATCH], bias[i : i + _EVAL_BATCH])
            for i in range(0, len(x), _EVAL_BATCH)
        ]
        return torch.cat(outs) if outs else torch.zeros(0, len(self.y_mu))  # (n, G)

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Fit on ``train``; with ``val``, keep the weights of the best validation mean PCC."""
        c = self.config
        expr = self._targets(train)
        self.y_mu = torch.as_tensor(expr.mean(0))  # (G,)
        self.y_sd = torch.as_tensor(np.maximum(expr.std(0), 1e-6))  # (G,)
        x, bias = self._inputs(train)
        y = (torch.as_tensor(expr) - self.y_mu) / self.y_sd  # (n, G)
        has_val = val is not None and len(val.slide_ids) > 0 and val.expression is not None
        epochs = c.max_epochs if has_val else min(c.fixed_epochs, c.max_epochs)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.net = AttentionMILNet(
                x.shape[-1], y.shape[-1], hidden=c.hidden, heads=c.heads, dropout=c.dropout
            )
            opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
            self.history = fit_early_stopped(
                self.net,
                epochs,
                lambda: self._epoch(x, bias, y, opt, gen),
                (lambda: self._val_pcc(val)) if has_val else None,
                key="val_mean_pcc",
                maximise=True,
                patience=c.patience,
                every=c.check_every,
            )
        self.net.eval()
        if out is not None:
            self._save(Path(out))

    def _epoch(self, x: Tensor, bias: Tensor, y: Tensor, opt, gen: torch.Generator) -> float:
        """One pass over the training slides in a seeded order; mean training loss."""
        self.net.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), self.config.batch_size):
            idx = perm[i : i + self.config.batch_size]
            loss = ((self.net(x[idx], bias[idx]) - y[idx]) ** 2).mean()  # MSE over (b, G)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return total / max(len(x), 1)

    def _val_pcc(self, val: CohortData) -> float:
        xv, bv = self._inputs(val)
        pred = self._predict_z(xv, bv).numpy()  # (m, G) z-scores; PCC is scale-free
        return mean_pcc(pred, np.asarray(val.expression, dtype=np.float64))

    def _save(self, out: Path) -> None:
        save_network(out, "attention_mil", self.config.model_dump(), self.history, self.net)

    def predict(self, data: CohortData) -> Predictions:
        """Predictions on the log2(x+1) scale; no uncertainty."""
        if self.net is None:
            raise RuntimeError("fit the model before predicting")
        x, bias = self._inputs(data)
        z = self._predict_z(x, bias)  # (n, G)
        return Predictions(mean=(z * self.y_sd + self.y_mu).numpy().astype(np.float32))
