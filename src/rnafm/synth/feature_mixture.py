"""The ``mixture`` and ``tumour_normal`` feature-level designs.

``mixture``: tiles come from ``n_types`` latent tissue types with per-slide Dirichlet proportions;
a tile's features are its type centroid + a per-slide stain shift + tile noise. Bulk expression
(raw scale) is the proportion-weighted mixture of type profiles times 2**(activity @ loadings) of
all 50 Hallmark programmes, where the activity is a nonlinear function of the proportions
(tanh of linear + pairwise terms) plus a patient latent no image shows, times gene noise.

``tumour_normal``: the same, but each slide also holds a share (0 to ``max_adjacent_fraction``)
of adjacent normal tissue outside the RNA sample: tiles of a "normal" type and of tissue type 0
(stroma-like, looks like the sampled type 0), which do not enter the expression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rnafm.synth.features import DesignOutput, FeatureCohortConfig, SlideDraw

__all__ = ["run_mixture"]


def _genes(rng: np.random.Generator, sets: dict[str, list[str]], n_genes: int) -> list[str]:
    hallmark = sorted(set().union(*sets.values()))
    genes = list(rng.permutation(hallmark)[: int(0.6 * n_genes)])
    return genes + [f"SYNTH{i:05d}" for i in range(n_genes - len(genes))]


def run_mixture(
    cfg: FeatureCohortConfig, emit: Callable[[int, SlideDraw], None], *, adjacent: bool = False
) -> DesignOutput:
    """Draw a mixture (``adjacent=False``) or tumour_normal cohort; ``emit`` receives each slide."""
    from rnafm.pathways import load_gene_sets
    from rnafm.synth.features import DesignOutput, SlideDraw

    n_slides, n_genes, dim, n_types = cfg.n_slides, cfg.n_genes, cfg.dim, cfg.n_types
    rng = np.random.default_rng(cfg.seed)
    sets = load_gene_sets("hallmark")
    genes = _genes(rng, sets, n_genes)
    g_index = {g: i for i, g in enumerate(genes)}
    n_sets = len(sets)

    centroids = rng.normal(0, 1, (n_types, dim)).astype(np.float32)  # (T, D)
    base = rng.normal(3.0, 2.0, n_genes)  # (G,) log2 baseline
    type_fc = rng.normal(0, 1.2, (n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.3)
    load = np.zeros((n_sets, n_genes))  # (S, G) programme loadings
    for s, members in enumerate(sets.values()):
        idx = [g_index[g] for g in members if g in g_index]
        load[s, idx] = rng.normal(0.6, 0.3, len(idx)) * rng.choice([-1, 1])
    w_prog = rng.normal(0, 1.5, (n_types, n_sets))  # (T, S)
    w_pair = rng.normal(0, 3.0, (n_types, n_types, n_sets)) * (rng.random((1, 1, n_sets)) < 0.5)

    n_patients = int(n_slides * 0.9)
    patient_of = np.concatenate(
        [np.arange(n_patients), rng.integers(0, n_patients, n_slides - n_patients)]
    )
    concentration = rng.uniform(0.3, 2.0, n_types)
    props = rng.dirichlet(concentration, n_slides)  # (n, T)
    latent = rng.normal(0, 0.6, (n_patients, n_sets))[patient_of]  # (n, S) not in the image
    act = np.tanh(props @ w_prog + np.einsum("ni,nj,ijs->ns", props, props, w_pair)) + latent
    log_prof = base[None, None, :] + type_fc[None]  # (1, T, G)
    if cfg.state_noise > 0:  # per-slide tissue states: each type's own RNA varies unseen
        st_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3]))
        type_sd = cfg.state_noise * st_rng.uniform(0.0, 1.5, n_types)  # (T,)
        mix = np.zeros((n_slides, n_genes))
        for t in range(n_types):  # (n, G) per type keeps memory at n x G
            state = type_sd[t] * st_rng.standard_normal((n_slides, n_genes))  # (n, G)
            mix += props[:, t : t + 1] * 2.0 ** (log_prof[0, t][None] + state)
    else:
        mix = np.einsum(
            "nt,ntg->ng", props, np.broadcast_to(2.0**log_prof, (n_slides,) + log_prof.shape[1:])
        )
    raw = mix * 2.0 ** (act @ load) * 2.0 ** rng.normal(0, cfg.noise, (n_slides, n_genes))

    adj_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    normal = adj_rng.normal(0, 1, dim).astype(np.float32)  # (D,) centroid of adjacent glands
    type_names = [f"type{t}" for t in range(n_types)] + (["normal"] if adjacent else [])
    adj_frac = adj_rng.uniform(0, cfg.max_adjacent_fraction, n_slides) if adjacent else None
    for i in range(n_slides):
        n_tiles = int(rng.integers(*cfg.tiles))
        types = rng.choice(n_types, n_tiles, p=props[i])
        stain = rng.normal(0, 0.3, dim)
        feats = centroids[types] + stain + rng.normal(0, 0.8, (n_tiles, dim))  # (N, D)
        sampled = np.ones(n_tiles, dtype=bool)
        if adj_frac is not None:
            n_adj = int(round(n_tiles * adj_frac[i] / (1.0 - adj_frac[i])))
            adj_types = np.where(adj_rng.random(n_adj) < 0.6, n_types, 0)  # glands or type 0
            cents = np.vstack([centroids, normal[None]])  # (T + 1, D)
            adj = cents[adj_types] + stain + adj_rng.normal(0, 0.8, (n_adj, dim))  # (A, D)
            feats = np.vstack([feats, adj])
            types = np.concatenate([types, adj_types])
            sampled = np.concatenate([sampled, np.zeros(n_adj, dtype=bool)])
        n_all = len(types)
        coords = np.stack([np.arange(n_all) * cfg.patch_size, np.zeros(n_all)], 1)  # (N, 2)
        emit(
            i,
            SlideDraw(
                features=feats.astype(np.float32),
                coords=coords.astype(np.int64),
                tile_type=types.astype(np.int64),
                activity=np.zeros((n_all, 0), dtype=np.float32),
                sampled=sampled,
                programme_names=[],
                type_names=type_names,
            ),
        )
    fracs = np.hstack([props, np.zeros((n_slides, 1))]) if adjacent else props
    return DesignOutput(
        genes=genes,
        patient_index=patient_of.astype(np.int64),
        sites=["SITE-A"] * n_slides,
        raw=raw,
        programme_names=[],
        programme_sets={},
        hidden_sets=list(sets),
        type_names=type_names,
        slide_activity=np.zeros((n_slides, 0)),
        type_fractions=fracs,
        adjacent_fraction=np.zeros(n_slides) if adj_frac is None else adj_frac,
        extra={"programme_activity": act, "programme_activity_names": list(sets)},
    )
