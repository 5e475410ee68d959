"""The tile head: its mixture against a plain loop, and that fitting it recovers planted tissue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnafm.model.tile_head import TileHead
from rnafm.training.config import TileHeadConfig
from rnafm.training.tile_head import fit_tile_head


def _loop_mixture(head: TileHead, means: torch.Tensor, sizes: torch.Tensor) -> np.ndarray:
    """log2 sum_i w_i 2^h_i with w = softmax(a + log n) over live pieces, one slide at a time."""
    out = []
    with torch.no_grad():
        for x, n in zip(means, sizes, strict=True):
            live = [i for i in range(len(n)) if float(n[i]) > 0]
            h, a = head(x[live])  # (L, G), (L,)
            logits = [float(a[j]) + math.log(float(n[i])) for j, i in enumerate(live)]
            top = max(logits)
            w = np.exp(np.array(logits) - top)
            w /= w.sum()
            out.append(np.log2((w[:, None] * np.exp2(h.double().numpy())).sum(0)))
    return np.stack(out)


@pytest.mark.parametrize("k,d,g", [(5, 3, 7), (1, 2, 1), (9, 11, 4)])
def test_mixture_matches_a_plain_loop(k, d, g):
    torch.manual_seed(0)
    head = TileHead(d, g, hidden=6, dropout=0.0).eval()
    means = torch.randn(3, k, d)
    sizes = torch.randint(1, 50, (3, k)).float()
    if k > 1:
        sizes[0, -1] = 0.0  # padding row of slide 0
        means[0, -1] = 1e3  # its mean must not matter
    with torch.no_grad():
        got = head.slide_log2(means, sizes).double().numpy()
    np.testing.assert_allclose(got, _loop_mixture(head, means, sizes), rtol=1e-5, atol=1e-5)


def test_one_kind_of_tissue_is_its_own_profile():
    """A slide whose clusters are all the same tissue is that tissue's h, whatever the sizes."""
    torch.manual_seed(1)
    head = TileHead(4, 6, hidden=8, dropout=0.0).eval()
    x = torch.randn(4)
    means = x.expand(1, 5, 4).clone()
    sizes = torch.tensor([[1.0, 7.0, 0.0, 30.0, 2.0]])
    with torch.no_grad():
        h, _ = head(x[None])
        np.testing.assert_allclose(head.slide_log2(means, sizes), h, rtol=1e-5, atol=1e-5)


def _planted(n_slides: int, seed: int):
    """Slides mixing tumour (gene 0 high) and stroma (gene 1 high) in varying shares; features
    are the tissue's noisy code. Returns clusters (n, 2, D), sizes (n, 2), log2 bulk (n, G)
    and the two tissues' features."""
    d, g = 5, 3
    tumour, stroma = np.random.default_rng(99).normal(size=(2, d))  # the same in every cohort
    rng = np.random.default_rng(seed)
    expr = np.array([[64.0, 4.0, 8.0], [2.0, 32.0, 8.0]])  # linear-scale (tissue, G)
    share = rng.uniform(0.05, 0.95, n_slides)  # (n,)
    n_tiles = rng.integers(200, 2000, n_slides).astype(np.float32)  # (n,)
    sizes = np.stack([share * n_tiles, (1 - share) * n_tiles], 1).astype(np.float32)  # (n, 2)
    feats = np.stack([tumour, stroma])[None] + 0.05 * rng.normal(size=(n_slides, 2, d))
    bulk = share[:, None] * expr[0] + (1 - share[:, None]) * expr[1]  # (n, G)
    y = np.log2(bulk + 1.0) + 0.02 * rng.normal(size=(n_slides, g))
    return feats.astype(np.float32), sizes, y.astype(np.float32), tumour, stroma, expr


def test_fitting_recovers_each_tissues_expression():
    x, s, y, tumour, stroma, expr = _planted(96, 0)
    cfg = TileHeadConfig(
        tile_hidden=16, tile_dropout=0.0, tile_epochs=60, tile_lr=5e-3, tile_batch_size=16
    )
    val = _planted(40, 1)
    head, record = fit_tile_head(x, s, y, std=y.std(0), val=val[:3], config=cfg, seed=0)
    assert record["epochs"] == 60
    assert record["val_pcc"] > 0.6  # genes 0 and 1 near 1, gene 2 is noise only
    with torch.no_grad():
        h, _ = head(torch.as_tensor(np.stack([tumour, stroma]), dtype=torch.float32))
    h = h.numpy()
    # tumour tiles carry gene 0, stroma tiles gene 1: the tile profiles separate them
    assert h[0, 0] - h[1, 0] > 2.0
    assert h[1, 1] - h[0, 1] > 2.0
    assert abs(h[0, 2] - h[1, 2]) < 0.7  # gene 2 is the same in both
    np.testing.assert_allclose(h[:, 2], np.log2(expr[:, 2]), atol=0.6)


def test_a_deadline_stops_after_an_epoch():
    x, s, y, *_ = _planted(20, 2)
    cfg = TileHeadConfig(tile_hidden=4, tile_epochs=50)
    _, record = fit_tile_head(x, s, y, std=y.std(0), val=None, config=cfg, seed=0, deadline=0.0)
    assert record == {**record, "epochs": 1, "time_limited": True, "val_pcc": None}


def test_a_gene_subset_is_those_columns_of_the_full_mixture():
    torch.manual_seed(3)
    head = TileHead(4, 9, hidden=5, dropout=0.0).eval()
    means, sizes = torch.randn(2, 6, 4), torch.rand(2, 6) * 10 + 1
    genes = torch.tensor([7, 0, 3])
    with torch.no_grad():
        full = head.slide_log2(means, sizes)
        np.testing.assert_allclose(head.slide_log2(means, sizes, genes), full[:, genes], rtol=1e-6)


def test_fitting_on_gene_subsets_still_separates_the_tissues():
    x, s, y, tumour, stroma, _ = _planted(96, 0)
    cfg = TileHeadConfig(tile_hidden=16, tile_dropout=0.0, tile_epochs=60, tile_lr=5e-3,
                         tile_batch_size=16, tile_genes=2)  # fmt: skip
    head, _ = fit_tile_head(x, s, y, std=y.std(0), val=None, config=cfg, seed=0)
    with torch.no_grad():
        h, _ = head(torch.as_tensor(np.stack([tumour, stroma]), dtype=torch.float32))
    assert h[0, 0] - h[1, 0] > 2.0 and h[1, 1] - h[0, 1] > 2.0


def test_divergence_is_a_clear_error():
    from rnafm.errors import RnafmError

    x, s, y, *_ = _planted(16, 4)
    x[3, 0, 0] = np.inf
    with pytest.raises(RnafmError, match="tile head diverged.*tile_head.tile_lr"):
        fit_tile_head(x, s, y, std=y.std(0), val=None, config=TileHeadConfig(), seed=0)
