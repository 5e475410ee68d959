"""The hidden biology: mixture maths against an independent oracle, markers follow composition."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.synth.biology import build_gene_model, expression_from_latents, sample_patients
from rnafm.synth.config import CellType, Programme, SynthConfig


def _sets() -> dict[str, list[str]]:
    from rnafm.pathways import load_gene_sets

    return {k: list(v) for k, v in load_gene_sets("hallmark").items()}


@pytest.fixture(scope="module")
def biology():
    cfg = SynthConfig(n_patients=301, seed=5, n_genes=613, dispersion=0.05)
    rng = np.random.default_rng(5)
    genes = build_gene_model(_sets(), cfg, rng)
    patients = sample_patients(cfg, rng)
    expr = expression_from_latents(genes, patients, cfg, rng)
    return cfg, genes, patients, expr


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_mixture_matches_oracle(biology):
    """tpm_true recomputed with a plain loop over patients and cell types."""
    _, genes, patients, expr = biology
    n, g = expr["tpm_true"].shape
    mix = np.zeros((n, g))
    for p in range(n):
        w = patients.proportions[p] * genes.rna_content
        w = w / w.sum()
        for t in range(len(CellType)):
            level = genes.type_log[t].copy()
            for j in range(len(Programme)):
                level += patients.programmes[p, j] * genes.effect[j, t]
            mix[p] += w[t] * 2.0**level
    total = mix.sum(1).mean()
    oracle = mix / mix.sum(1, keepdims=True) * total
    np.testing.assert_allclose(expr["tpm_true"], oracle, rtol=1e-10)
    np.testing.assert_allclose(expr["log2_true"], np.log2(oracle + 1))


def test_counts_noise_is_unbiased(biology):
    cfg, genes, patients, expr = biology
    lam = expr["tpm_true"] * genes.length / 1e3 * cfg.depth * patients.library[:, None]
    ratio = expr["counts"].sum() / lam.sum()
    assert ratio == pytest.approx(1.0, abs=0.01)
    # negative binomial: variance above Poisson for highly expressed genes
    hi = lam > 2000
    z = (expr["counts"][hi] - lam[hi]) / np.sqrt(lam[hi])
    assert z.var() > 5.0


def test_genes_real_symbols_and_unassigned(biology):
    _, genes, _, _ = biology
    sets = _sets()
    members = {g for v in sets.values() for g in v}
    assert len(genes.genes) == len(set(genes.genes))
    assert all(g in members for g, s in zip(genes.genes, genes.in_set, strict=True) if s)
    extra = [g for g, s in zip(genes.genes, genes.in_set, strict=True) if not s]
    assert 20 <= len(extra) and not set(extra) & members
    assert all(r for r in genes.marker_sets.values())


@pytest.mark.parametrize("ct", list(CellType))
def test_marker_score_follows_proportion(biology, ct):
    """Mean log-expression of a cell type's marker genes tracks that type's share of the RNA."""
    _, genes, patients, expr = biology
    t = list(CellType).index(ct)
    others = np.delete(genes.type_log, t, axis=0).max(0)
    markers = genes.type_log[t] - others > 1.5
    assert markers.sum() >= 5
    y = np.log2(expr["tpm"][:, markers] + 1).mean(1)
    share = patients.proportions * genes.rna_content
    x = np.log(share[:, t] / share.sum(1))
    assert _corr(x, y) > 0.5


def test_infiltration_moves_its_gene_sets(biology):
    _, genes, patients, expr = biology
    j = list(Programme).index(Programme.INFILTRATION)
    hit = genes.effect[j].max(0) > 0.5
    resid = np.log2(expr["tpm_true"][:, hit] + 1).mean(1)
    # remove composition: regress on log proportions, then the residual follows the programme
    x = np.c_[np.ones(len(resid)), np.log(patients.proportions)]
    beta, *_ = np.linalg.lstsq(x, resid, rcond=None)
    assert _corr(resid - x @ beta, patients.programmes[:, j]) > 0.6
    assert 0.0 <= patients.programmes[:, j].min() and patients.programmes[:, j].max() <= 1.0


def test_custom_gmt_collection(tmp_path):
    """A collection without Hallmark names still gives every role some sets."""
    from rnafm.synth.biology import load_sets

    gmt = tmp_path / "tiny.gmt"
    syms = [f"ZNF{i}" for i in (10, 12, 14, 16, 17, 18, 19, 20)] + ["TP53", "MYC", "CD3E", "COL1A1"]
    lines = [f"SET_{k}\tna\t" + "\t".join(syms[k::3]) for k in range(3)]
    gmt.write_text("\n".join(lines) + "\n")
    cfg = SynthConfig(n_patients=9, gene_sets=str(gmt))
    genes = build_gene_model(load_sets(str(gmt)), cfg, np.random.default_rng(0))
    assert set(genes.genes) >= set(syms)
    assert all(genes.marker_sets.values()) or len(load_sets(str(gmt))) < 5
