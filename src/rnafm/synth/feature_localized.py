"""The ``localized`` feature-level design: spatial tissue layouts with per-tile programme truth.

Each slide is a grid of tiles (``grid_rows`` x ``grid_cols``) holding one irregular tissue piece
with small holes. A side of it (0 to ``max_adjacent_fraction`` of the tissue) is adjacent normal
tissue (glands and stroma) outside the RNA sample; the rest is tumour and stroma following a smooth
random field. Rare, spatially clustered tile types drive programmes around them:

- lymphoid aggregates (blobs, in or outside the sampled region) -> interferon-gamma response,
  allograft rejection and inflammatory response in the tiles around them, decaying with distance;
- necrosis blobs (inside tumour) -> hypoxia on a ring around the necrosis (zero inside it);
- proliferation (E2F targets, G2M checkpoint) in every tumour tile: the patient's level times a
  smooth spatial field.

Bulk expression of a slide (raw scale) is the RNA-content-weighted mean over SAMPLED tiles of
``2 ** (type_profile[type] + activity @ loadings)`` (loadings on the real members of each Hallmark
set), times ``2 ** (hidden @ hidden_loadings + noise)`` for patient latents no image shows.

Tile features are a fixed random 2-layer tanh network of (tile type one-hot, programme activity x
``visibility``, the slide's stain shift (site offset + slide jitter), tile nuisance noise), plus a
little additive noise: activity is visible in single tiles, but the stain shift enters before the
nonlinearity, so a mean over tiles does not carry it linearly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from rnafm.synth.features import DesignOutput, FeatureCohortConfig, SlideDraw

__all__ = [
    "TYPE_NAMES",
    "PROGRAMMES",
    "HIDDEN_SETS",
    "run_localized",
    "layout_slide",
    "TileExpression",
]

TYPE_NAMES = ("tumour", "stroma", "lymphoid", "necrosis", "normal")
TUMOUR, STROMA, LYMPHOID, NECROSIS, NORMAL = range(len(TYPE_NAMES))
_RNA_CONTENT = np.array([1.2, 0.8, 0.7, 0.2, 1.0])  # relative RNA per tile of each type
_STAIN_DIMS = 4
_NUISANCE_DIMS = 8


@dataclass(frozen=True)
class _Programme:
    name: str  # Hallmark set the programme acts on
    source: int  # tile type that drives it
    decay: float  # tiles: e-fold length away from the source (proliferation: field scale)
    reach: float  # tiles: zero beyond this distance
    gain: float  # mean log2 fold change of a member gene per unit activity


PROGRAMMES = (
    _Programme("HALLMARK_INTERFERON_GAMMA_RESPONSE", LYMPHOID, 2.0, 6.0, 1.5),
    _Programme("HALLMARK_ALLOGRAFT_REJECTION", LYMPHOID, 1.0, 3.0, 1.3),
    _Programme("HALLMARK_INFLAMMATORY_RESPONSE", LYMPHOID, 3.5, 9.0, 1.0),
    _Programme("HALLMARK_HYPOXIA", NECROSIS, 1.5, 5.0, 1.5),
    _Programme("HALLMARK_E2F_TARGETS", TUMOUR, 1.0, 0.0, 1.3),
    _Programme("HALLMARK_G2M_CHECKPOINT", TUMOUR, 0.8, 0.0, 1.1),
)
HIDDEN_SETS = (
    "HALLMARK_ESTROGEN_RESPONSE_EARLY",
    "HALLMARK_KRAS_SIGNALING_UP",
    "HALLMARK_OXIDATIVE_PHOSPHORYLATION",
    "HALLMARK_TGF_BETA_SIGNALING",
)


@dataclass
class _Patients:
    immune_rate: np.ndarray  # (n_p,) lymphoid aggregates per 1000 tissue tiles
    necrosis_rate: np.ndarray  # (n_p,) necrosis blobs per 1000 tissue tiles
    strength: np.ndarray  # (n_p, 3) interferon, hypoxia, proliferation levels
    tumour_share: np.ndarray  # (n_p,) tumour share of the sampled region
    hidden: np.ndarray  # (n_p, H) latents no image shows
    noise: np.ndarray  # (n_p, G) log2 gene noise
    site: np.ndarray  # (n_p,) site index


@dataclass
class _Model:
    genes: list[str]
    log_prof: np.ndarray  # (T, G) log2 tile-type profiles
    load: np.ndarray  # (P, Gp) float32 loadings on the programme genes
    prog_genes: np.ndarray  # (Gp,) indices of genes with a loading
    hidden_load: np.ndarray  # (H, G)
    w1: np.ndarray  # (I, Hd) encoder
    b1: np.ndarray  # (Hd,)
    w2: np.ndarray  # (Hd, D)
    b2: np.ndarray  # (D,)
    site_offset: np.ndarray  # (n_sites, _STAIN_DIMS)


def _pick_genes(sets: dict[str, list[str]], n_genes: int, share: float, rng) -> list[str]:
    """Programme-set genes (share of n_genes), other Hallmark genes (30%), then filler names."""
    prog = sorted({g for p in PROGRAMMES for g in sets[p.name]})
    n_prog = min(len(prog), int(round(share * n_genes)))
    genes = list(rng.permutation(prog)[:n_prog])
    hidden = sorted({g for s in HIDDEN_SETS for g in sets[s]} - set(prog))
    rest = sorted(set().union(*sets.values()) - set(prog) - set(hidden))
    n_other = min(int(0.3 * n_genes), n_genes - len(genes))
    n_hidden = min(len(hidden), n_other // 2)
    genes += list(rng.permutation(hidden)[:n_hidden])
    genes += list(rng.permutation(rest)[: n_other - n_hidden])
    genes += [f"SYNTH{i:05d}" for i in range(n_genes - len(genes))]
    return genes


def _build_model(cfg: FeatureCohortConfig, sets, rng: np.random.Generator) -> _Model:
    genes = _pick_genes(sets, cfg.n_genes, cfg.programme_gene_share, rng)
    index = {g: i for i, g in enumerate(genes)}
    n_g, n_t = len(genes), len(TYPE_NAMES)
    base = rng.normal(3.0, 2.0, n_g)  # (G,)
    type_fc = rng.normal(0, 1.2, (n_t, n_g)) * (rng.random((n_t, n_g)) < 0.3)  # (T, G)
    load = np.zeros((len(PROGRAMMES), n_g))  # (P, G)
    for j, p in enumerate(PROGRAMMES):
        idx = [index[g] for g in sets[p.name] if g in index]
        load[j, idx] = p.gain * rng.uniform(0.4, 1.6, len(idx))
    prog_genes = np.flatnonzero(np.abs(load).sum(0) > 0)
    hidden_load = np.zeros((len(HIDDEN_SETS), n_g))  # (H, G)
    for j, name in enumerate(HIDDEN_SETS):
        idx = [index[g] for g in sets[name] if g in index]
        hidden_load[j, idx] = rng.normal(1.0, 0.3, len(idx)) * rng.choice([-1, 1])
    n_in = n_t + len(PROGRAMMES) + _STAIN_DIMS + _NUISANCE_DIMS
    hd, d = cfg.hidden_width, cfg.dim
    return _Model(
        genes=genes,
        log_prof=base[None] + type_fc,
        load=load[:, prog_genes].astype(np.float32),
        prog_genes=prog_genes,
        hidden_load=hidden_load,
        w1=(rng.normal(0, 1.5 / np.sqrt(n_in), (n_in, hd))).astype(np.float32),
        b1=rng.normal(0, 0.5, hd).astype(np.float32),
        w2=(rng.normal(0, 1.5 / np.sqrt(hd), (hd, d))).astype(np.float32),
        b2=rng.normal(0, 0.3, d).astype(np.float32),
        site_offset=rng.normal(0, cfg.site_shift, (cfg.n_sites, _STAIN_DIMS)),
    )


def _plan_patients(cfg: FeatureCohortConfig, rng) -> np.ndarray:
    """Patient index of each slide: patients get 1 or 2 slides until n_slides are planned."""
    owner: list[int] = []
    p = 0
    while len(owner) < cfg.n_slides:
        k = 2 if rng.random() < cfg.second_slide_fraction else 1
        owner += [p] * min(k, cfg.n_slides - len(owner))
        p += 1
    return np.asarray(owner, dtype=np.int64)


def _sample_patients(cfg: FeatureCohortConfig, n_p: int, n_genes: int, rng) -> _Patients:
    site_p = np.r_[0.6, np.full(cfg.n_sites - 1, 0.4 / max(cfg.n_sites - 1, 1))][: cfg.n_sites]
    return _Patients(
        immune_rate=rng.gamma(0.9, 1.8, n_p),
        necrosis_rate=rng.gamma(0.8, 1.0, n_p),
        strength=np.exp(rng.normal([0.0, 0.0, -0.2], cfg.programme_sd, (n_p, 3))),
        tumour_share=rng.uniform(0.35, 0.8, n_p),
        hidden=rng.normal(0, cfg.hidden_sd, (n_p, len(HIDDEN_SETS))),
        noise=rng.normal(0, cfg.noise, (n_p, n_genes)),
        site=rng.choice(cfg.n_sites, n_p, p=site_p / site_p.sum()),
    )


def _smooth(shape: tuple[int, int], sigma: float, rng) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / max(f.std(), 1e-9)


def _blobs(types, allowed, n, r_range, rng) -> np.ndarray:
    """Mask of ``n`` irregular discs centred on random ``allowed`` tiles, inside ``allowed``."""
    out = np.zeros(types.shape, dtype=bool)
    cand = np.argwhere(allowed)
    if n == 0 or len(cand) == 0:
        return out
    yy, xx = np.mgrid[0 : types.shape[0], 0 : types.shape[1]]
    wobble = 1.0 + 0.25 * _smooth(types.shape, 1.0, rng)
    for cy, cx in cand[rng.integers(0, len(cand), n)]:
        r = rng.uniform(*r_range)
        out |= np.hypot(yy - cy, xx - cx) <= r * wobble
    return out & allowed


def layout_slide(
    rows: int,
    cols: int,
    *,
    adjacent: float,
    tumour_share: float,
    immune_rate: float,
    necrosis_rate: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Tile types (rows, cols) int64 (-1 = no tissue) and the sampled-region mask (rows, cols).

    ``adjacent`` is the share of tissue outside the RNA sample, ``tumour_share`` the tumour share
    of the sampled region, the rates the expected aggregates / necrosis blobs per 1000 tiles.
    """
    yn, xn = (np.mgrid[0:rows, 0:cols] + 0.5) / np.array([rows, cols])[:, None, None]
    cy, cx = rng.uniform(0.45, 0.55, 2)
    ry, rx = rng.uniform(0.38, 0.48, 2)
    prior = 1.0 - ((xn - cx) / rx) ** 2 - ((yn - cy) / ry) ** 2
    tissue = prior + 0.4 * _smooth((rows, cols), max(rows, cols) / 8, rng) > 0
    tissue &= _smooth((rows, cols), 1.2, rng) < 1.9  # small holes
    if tissue.sum() < 16:
        tissue[rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4] = True
    theta = rng.uniform(0, 2 * np.pi)
    proj = xn * np.cos(theta) + yn * np.sin(theta) + 0.05 * _smooth((rows, cols), 3.0, rng)
    adj = np.zeros_like(tissue)
    if adjacent > 0:
        adj = tissue & (proj > np.quantile(proj[tissue], 1.0 - adjacent))
    sampled = tissue & ~adj
    types = np.full((rows, cols), -1, dtype=np.int64)
    field = _smooth((rows, cols), 3.0, rng)
    if sampled.any():
        cut = np.quantile(field[sampled], 1.0 - tumour_share)
        types[sampled] = np.where(field[sampled] >= cut, TUMOUR, STROMA)
    if adj.any():
        glands = _smooth((rows, cols), 2.5, rng)
        types[adj] = np.where(glands[adj] > np.quantile(glands[adj], 0.4), NORMAL, STROMA)
    n_tissue = int(tissue.sum())
    n_necro = rng.poisson(necrosis_rate * n_tissue / 1000)
    types[_blobs(types, types == TUMOUR, n_necro, (1.2, 3.5), rng) & sampled] = NECROSIS
    n_lymph = rng.poisson(immune_rate * n_tissue / 1000)
    lymph = _blobs(types, tissue & (types != NECROSIS), n_lymph, (0.8, 2.2), rng)
    types[lymph] = LYMPHOID
    return types, sampled


def programme_activity(types: np.ndarray, strength: np.ndarray, rng) -> np.ndarray:
    """Per-tile activity (P, rows, cols) >= 0 of :data:`PROGRAMMES` on a type grid."""
    tissue = types >= 0
    act = np.zeros((len(PROGRAMMES),) + types.shape)  # (P, rows, cols)
    dist = {}
    for src in (LYMPHOID, NECROSIS):
        mask = types == src
        dist[src] = ndimage.distance_transform_edt(~mask) if mask.any() else None
    prolif = np.exp(0.5 * _smooth(types.shape, 6.0, rng)) * (types == TUMOUR)
    for j, p in enumerate(PROGRAMMES):
        if p.source == TUMOUR:
            act[j] = strength[2] * p.decay * prolif
            continue
        d = dist[p.source]
        if d is None:
            continue
        if p.source == LYMPHOID:
            act[j] = strength[0] * np.exp(-d / p.decay) * (d <= p.reach)
        else:  # a rim: zero inside necrosis, highest next to it
            act[j] = strength[1] * np.exp(-(d - 1.0) / p.decay) * (d >= 1.0) * (d <= p.reach)
    act[:, ~tissue | (types == NECROSIS)] = 0.0
    return act


def _encode(m: _Model, types, act, stain, cfg: FeatureCohortConfig, rng) -> np.ndarray:
    """Tile features (N, D) from types (N,), activity (N, P) and the slide's stain (S,)."""
    n = len(types)
    u = np.empty((n, m.w1.shape[0]), dtype=np.float32)  # (N, I)
    n_t, n_p = len(TYPE_NAMES), len(PROGRAMMES)
    u[:, :n_t] = 2.0 * np.eye(n_t, dtype=np.float32)[types]
    u[:, n_t : n_t + n_p] = cfg.visibility * act
    u[:, n_t + n_p : n_t + n_p + _STAIN_DIMS] = stain
    u[:, n_t + n_p + _STAIN_DIMS :] = cfg.tile_noise * rng.standard_normal(
        (n, _NUISANCE_DIMS), np.float32
    )
    h = np.tanh(u @ m.w1 + m.b1)  # (N, Hd)
    x = np.tanh(h @ m.w2 + m.b2, dtype=np.float32)  # (N, D)
    if cfg.feature_noise > 0:  # uniform noise with sd feature_noise (10x faster than normal)
        noise = rng.random(x.shape, np.float32) - np.float32(0.5)  # (N, D)
        x += np.float32(cfg.feature_noise * np.sqrt(12.0)) * noise
    return x


def _bulk(m: _Model, types: np.ndarray, act: np.ndarray) -> np.ndarray:
    """RNA-weighted mean over the given tiles of 2 ** (profile + activity @ loadings), split by
    tile type: (T, G), whose column sums are the bulk (G,)."""
    n_t = len(TYPE_NAMES)
    prof = np.exp2(m.log_prof)  # (T, G)
    wt = _RNA_CONTENT * np.bincount(types, minlength=n_t)  # (T,) RNA of each type
    mix = wt[:, None] * prof  # (T, G) without programmes
    on = act.any(axis=1)  # tiles without activity have 2 ** 0 = 1 everywhere
    if on.any():
        e = np.exp2(act[on].astype(np.float32) @ m.load) - 1.0  # (N_on, Gp)
        onehot = np.eye(n_t, dtype=np.float32)[types[on]]  # (N_on, T)
        extra = (onehot.T @ e) * _RNA_CONTENT[:, None]  # (T, Gp)
        mix[:, m.prog_genes] += prof[:, m.prog_genes] * extra
    return mix / max(wt.sum(), 1e-12)


# how strongly each tile type's own RNA varies with unseen tissue states (x state_noise)
_STATE_SD = np.array([1.0, 0.4, 0.8, 0.2, 0.5])


def _draw_slide(cfg: FeatureCohortConfig, m: _Model, pats: _Patients, p: int, rng):
    """One slide of patient ``p``: its SlideDraw and its raw bulk expression (G,)."""
    from rnafm.synth.features import SlideDraw

    rows = int(rng.integers(cfg.grid_rows[0], cfg.grid_rows[1] + 1))
    cols = int(rng.integers(cfg.grid_cols[0], cfg.grid_cols[1] + 1))
    types, sampled = layout_slide(
        rows,
        cols,
        adjacent=rng.uniform(0, cfg.max_adjacent_fraction),
        tumour_share=float(np.clip(pats.tumour_share[p] + rng.normal(0, 0.05), 0.2, 0.9)),
        immune_rate=float(pats.immune_rate[p]),
        necrosis_rate=float(pats.necrosis_rate[p]),
        rng=rng,
    )
    strength = pats.strength[p] * np.exp(rng.normal(0, 0.15, 3))
    act_grid = programme_activity(types, strength, rng)  # (P, rows, cols)
    rr, cc = np.nonzero(types >= 0)
    t_tiles = types[rr, cc]  # (N,)
    a_tiles = act_grid[:, rr, cc].T.astype(np.float32)  # (N, P)
    s_tiles = sampled[rr, cc]  # (N,)
    stain = m.site_offset[pats.site[p]] + rng.normal(0, cfg.stain_sd, _STAIN_DIMS)  # (S,)
    feats = _encode(m, t_tiles, a_tiles, stain.astype(np.float32), cfg, rng)  # (N, D)
    origin = rng.integers(0, 8, 2)
    coords = np.stack([cc + origin[0], rr + origin[1]], 1) * cfg.patch_size  # (N, 2) x, y
    draw = SlideDraw(
        features=feats,
        coords=coords.astype(np.int64),
        tile_type=t_tiles,
        activity=a_tiles,
        sampled=s_tiles,
        programme_names=[q.name for q in PROGRAMMES],
        type_names=list(TYPE_NAMES),
    )
    hidden = pats.hidden[p] @ m.hidden_load + pats.noise[p]  # (G,) log2, no image shows it
    by_type = _bulk(m, t_tiles[s_tiles], a_tiles[s_tiles])  # (T, G)
    raw = by_type.sum(0) * np.exp2(hidden + rng.normal(0, 0.1, len(m.genes)))  # (G,)
    if cfg.state_noise > 0:  # unseen tissue states: each type's share varies on its own
        state = cfg.state_noise * _STATE_SD[:, None] * rng.standard_normal(by_type.shape)
        ratio = (by_type * np.exp2(state)).sum(0) / np.maximum(by_type.sum(0), 1e-300)  # (G,)
        raw = raw * ratio
    return draw, raw


def _seeds(cfg: FeatureCohortConfig) -> list[np.random.SeedSequence]:
    """The cohort's seeds of the expression model, the patients and the slides."""
    return np.random.SeedSequence(cfg.seed).spawn(3)


def _model_of(cfg: FeatureCohortConfig, seed: np.random.SeedSequence) -> _Model:
    from rnafm.pathways import load_gene_sets

    return _build_model(cfg, load_gene_sets("hallmark"), np.random.default_rng(seed))


class TileExpression:
    """The true log2 expression of single tiles of a ``localized`` cohort, for scoring maps.

    ``type_profile[type] + activity @ loadings`` of every tile (no patient latents, no noise):
    what a perfect per-tile expression map would show. Rebuilt from the cohort's config (the
    generator is deterministic in its seed), restricted to ``genes``.
    """

    def __init__(self, cfg: FeatureCohortConfig, genes: list[str]) -> None:
        if cfg.design != "localized":
            raise ValueError(f"tile expression exists for localized cohorts, not {cfg.design!r}")
        self._m = _model_of(cfg, _seeds(cfg)[0])
        index = {g: i for i, g in enumerate(self._m.genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            raise KeyError(f"genes not in the cohort: {missing[:5]}")
        self._cols = np.array([index[g] for g in genes], dtype=np.int64)  # (G,)

    def log2(self, tile_type: np.ndarray, activity: np.ndarray, names: list[str]) -> np.ndarray:
        """float64 (N, G) of tile types (N,) and the activities (N, P) of programmes ``names``
        (a tile truth's columns, any order)."""
        m = self._m
        order = [list(names).index(p.name) for p in PROGRAMMES]
        act = np.asarray(activity, dtype=np.float64)[:, order]  # (N, P) in PROGRAMMES order
        full = m.log_prof[np.asarray(tile_type)].copy()  # (N, G_all)
        full[:, m.prog_genes] += act @ m.load
        return full[:, self._cols]


def run_localized(cfg: FeatureCohortConfig, emit: Callable[[int, SlideDraw], None]) -> DesignOutput:
    """Draw a localized cohort; ``emit(i, draw)`` receives each slide."""
    from rnafm.synth.features import DesignOutput

    s_model, s_pat, s_slides = _seeds(cfg)
    m = _model_of(cfg, s_model)
    prng = np.random.default_rng(s_pat)
    owner = _plan_patients(cfg, prng)
    pats = _sample_patients(cfg, int(owner.max()) + 1, len(m.genes), prng)
    n, n_t = cfg.n_slides, len(TYPE_NAMES)
    raw = np.zeros((n, len(m.genes)))  # (n, G)
    slide_act = np.zeros((n, len(PROGRAMMES)))  # (n, P)
    fracs, adj_frac = np.zeros((n, n_t)), np.zeros(n)
    for i, seed in enumerate(s_slides.spawn(n)):
        draw, raw[i] = _draw_slide(cfg, m, pats, int(owner[i]), np.random.default_rng(seed))
        emit(i, draw)
        s = draw.sampled
        slide_act[i] = draw.activity[s].mean(0)
        fracs[i] = np.bincount(draw.tile_type[s], minlength=n_t) / max(s.sum(), 1)
        adj_frac[i] = 1.0 - s.mean()
    return DesignOutput(
        genes=m.genes,
        patient_index=owner,
        sites=[f"SITE-{chr(65 + int(pats.site[p]))}" for p in owner],
        raw=raw,
        programme_names=[q.name for q in PROGRAMMES],
        programme_sets={q.name: [q.name] for q in PROGRAMMES},
        hidden_sets=list(HIDDEN_SETS),
        type_names=list(TYPE_NAMES),
        slide_activity=slide_act,
        type_fractions=fracs,
        adjacent_fraction=adj_frac,
        extra={"hidden_latent": pats.hidden[owner], "hidden_latent_names": list(HIDDEN_SETS)},
    )
