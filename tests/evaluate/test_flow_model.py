"""The RNA-FM flow model inside the harness (tiny config; slow because it trains 2 x 3 epochs)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from rnafm.evaluate import CVConfig, cross_validate

TINY_FLOW = {
    "draws": 4,
    "train": {
        "optim.epochs": 3,
        "optim.max_minutes": None,  # budget by epochs: the same result on a busy machine
        "optim.warmup_steps": 1,
        "model.hidden": 16,
        "model.depth": 1,
        "model.heads": 2,
        "model.image_heads": 2,
        "device": "cpu",
        "sampler.steps": 4,
        "validation.steps": 2,
        "validation.draws": 2,
    },
}


@pytest.mark.slow
def test_rnafm_model_cross_validates(tmp_path, make) -> None:
    from rnafm.pathways import load_gene_sets

    sets = load_gene_sets("hallmark")
    genes: list[str] = []
    for name in sorted(sets)[:3]:
        genes += [g for g in sets[name] if g not in genes][:5]
    data = make(13, g=15, seed=2)
    data.genes = genes[:15]
    res = cross_validate(
        data,
        out=tmp_path,
        models=["rnafm"],
        config=CVConfig(n_folds=2),
        model_options={"rnafm": TINY_FLOW},
        gene_sets="hallmark",
    )
    a = ad.read_h5ad(tmp_path / "rnafm" / "oof_predictions.h5ad")
    assert list(a.obs_names) == data.slide_ids and {"std", "lower", "upper"} <= set(a.layers)
    assert np.all(a.layers["lower"] <= a.X) and np.all(a.X <= a.layers["upper"])
    assert (tmp_path / "rnafm" / "oof_draws.h5").is_file()
    assert (tmp_path / "rnafm" / "fold_0" / "model.safetensors").is_file()
    m = res.metrics["rnafm"]
    assert "crps_draws" in m["uncertainty"] and "stored_interval" in m["uncertainty"]
    assert m["genes"]["mean_pearson_r"] > 0.3
    assert "prior_gaussian" in res.metrics  # the ablation row comes with rnafm
    assert (tmp_path / "prior_gaussian" / "oof_predictions.h5ad").is_file()
