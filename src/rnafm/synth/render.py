"""Draw an H&E-like RGB image from a slide's label grid.

Stains are modelled as optical densities (Beer-Lambert): every pixel has a haematoxylin and an
eosin concentration, and ``RGB = 255 * 10 ** -(h * H_VEC + e * E_VEC + glass)``; colour
deconvolution recovers the two channels. Sizes are in microns and converted with the slide's mpp.
Per tissue type:

- tumour: pale cytoplasm, large vesicular pleomorphic nuclei (radius ~5.5 um, rim, nucleolus),
  mitoses; bigger, denser nuclei and more mitoses with the proliferation programme;
- infiltrated tumour: the same nests at half density with lymphocytes in between;
- lymphoid aggregates: densely packed small round very dark nuclei (radius ~3.2 um);
- stroma: pink collagen fibres, sparse spindle nuclei (plumper and more with stromal activation);
- necrosis: pale mottled eosinophilic debris with nuclear fragments and ghost nuclei;
- glands (sampled normal epithelium and adjacent normal): white lumens ringed by regular nuclei;
- adjacent smooth muscle: dense deep-pink fascicles with long cigar-shaped nuclei.

Textures come from a small periodic bank (computed once per cohort) placed at random offsets, and
nuclei are stamped from cached shapes, so a 4000 x 3000 slide takes about a second.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from rnafm.synth.config import Label
from rnafm.synth.layout import cell_px

__all__ = ["TextureBank", "make_texture_bank", "render_slide"]

H_VEC = np.array([0.650, 0.704, 0.286], dtype=np.float32)
E_VEC = np.array([0.072, 0.990, 0.105], dtype=np.float32)
_GLASS_OD = np.float32(0.025)
_BANK = 512
_STRIP = 512
_LOW = 4  # labels, jitter and fibre orientation are computed on a grid of _LOW x _LOW pixels
_H_MAX, _E_MAX, _LUT_H, _LUT_E = 3.0, 1.5, 768, 384
_KINDS = ("solid", "vesicular", "mitosis", "spindle", "plump", "cigar")
_ANGLES = 8
_MINOR = {"spindle": 0.28, "plump": 0.5, "cigar": 0.18}

# label -> (base haematoxylin, base eosin, grain sd, fibre amplitude)
_BASE = {
    Label.BACKGROUND: (0.0, 0.0, 0.004, 0.0),
    Label.TUMOUR: (0.13, 0.14, 0.03, 0.0),
    Label.TUMOUR_INFILTRATED: (0.13, 0.13, 0.03, 0.0),
    Label.LYMPHOCYTE: (0.12, 0.08, 0.03, 0.0),
    Label.STROMA: (0.02, 0.20, 0.03, 0.22),
    Label.NECROSIS: (0.05, 0.17, 0.06, 0.0),
    Label.NORMAL_EPITHELIUM: (0.04, 0.20, 0.025, 0.0),
    Label.ADJACENT_GLANDS: (0.04, 0.20, 0.025, 0.0),
    Label.ADJACENT_MUSCLE: (0.03, 0.36, 0.025, 0.12),
}


@dataclass
class TextureBank:
    """Periodic texture tiles and nucleus stamps shared by all slides of a cohort."""

    mpp: float
    grain: np.ndarray  # float32 (B, B) white noise
    mottle: np.ndarray  # float32 (B, B) smooth noise, unit sd
    fibre_h: np.ndarray  # float32 (B, B) horizontal streaks in [0, 1]
    fibre_v: np.ndarray  # float32 (B, B) vertical streaks in [0, 1]
    _stamps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp(self, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets (dy, dx) and values of the nucleus shape ``code`` (see :func:`_code`)."""
        with self._lock:
            if code not in self._stamps:
                kind, size, angle = code // 10_000, (code // 100) % 100, code % 100
                self._stamps[code] = _stamp(_KINDS[kind], size, np.pi * angle / _ANGLES)
            return self._stamps[code]


def _code(kind: str, size_px: np.ndarray, angle: np.ndarray | int = 0) -> np.ndarray:
    """Integer shape codes: kind, radius in whole pixels (1..99) and angle index."""
    size = np.clip(np.round(size_px), 1, 99).astype(np.int64)
    return _KINDS.index(kind) * 10_000 + size * 100 + np.asarray(angle, dtype=np.int64)


def _streaks(noise: np.ndarray, axis: int, scale: float) -> np.ndarray:
    sigma = (1.2 * scale, 9.0 * scale) if axis == 1 else (9.0 * scale, 1.2 * scale)
    s = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    s = (s - s.mean()) / max(s.std(), 1e-9)
    return (0.5 + 0.5 * np.tanh(1.5 * s)).astype(np.float32)


def _stamp(kind: str, size: int, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets and values of one nucleus shape (centre at 0); ``size`` is the radius in pixels."""
    r = float(size)
    a, b = (r, max(1.0, r * _MINOR[kind])) if kind in _MINOR else (r, r)
    half = int(np.ceil(max(a, b))) + 1
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 at the edge
    edge = np.clip((1.0 - rho) * max(a, b) + 0.5, 0.0, 1.0)
    if kind == "vesicular":  # dark rim, pale chromatin, a nucleolus off centre
        val = edge * (0.55 + 0.45 * np.clip((rho - 0.6) / 0.3, 0, 1))
        nuc = np.sqrt((dx - 0.25 * r) ** 2 + (dy + 0.2 * r) ** 2) < max(1.2, 0.18 * r)
        val = val + 0.6 * nuc
    elif kind == "mitosis":  # clumped irregular chromatin
        val = edge * (0.7 + 0.6 * (np.sin(3 * np.arctan2(dy, dx) + angle) > 0))
    else:
        val = edge
    keep = val > 0.02
    return dy[keep].astype(np.int32), dx[keep].astype(np.int32), val[keep].astype(np.float32)


def make_texture_bank(rng: np.random.Generator, *, mpp: float) -> TextureBank:
    """Build the shared textures for slides at ``mpp`` microns per pixel."""
    scale = 0.5 / mpp
    noise = rng.standard_normal((_BANK, _BANK))
    mottle = ndimage.gaussian_filter(rng.standard_normal((_BANK, _BANK)), 6.0 * scale, mode="wrap")
    mottle = (mottle - mottle.mean()) / mottle.std()
    return TextureBank(
        mpp=mpp,
        grain=rng.standard_normal((_BANK, _BANK)).astype(np.float32),
        mottle=mottle.astype(np.float32),
        fibre_h=_streaks(noise, 1, scale),
        fibre_v=_streaks(noise, 0, scale),
    )


@dataclass
class _Nuclei:
    y: np.ndarray  # int64 (N,) centre row, level-0 pixels
    x: np.ndarray  # int64 (N,)
    code: np.ndarray  # int64 (N,) shape code (_code)
    amp: np.ndarray  # float32 (N,) haematoxylin at full stamp value

    @staticmethod
    def concat(parts: list[_Nuclei]) -> _Nuclei:
        fields = ("y", "x", "code", "amp")
        return _Nuclei(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def _points(labels: np.ndarray, label: Label, per_um2: float, mpp: float, rng: np.random.Generator):
    """Uniform random points (level-0 pixels) in the grid cells of ``label``, ``per_um2`` density."""
    cell = cell_px(mpp)
    cy, cx = np.nonzero(labels == label)
    n = rng.poisson(per_um2 * (cell * mpp) ** 2, cy.size)
    cy, cx = np.repeat(cy, n), np.repeat(cx, n)
    y = (cy * cell + rng.uniform(0, cell, cy.size)).astype(np.int64)
    x = (cx * cell + rng.uniform(0, cell, cx.size)).astype(np.int64)
    return y, x


def _nuclei(
    labels: np.ndarray, programmes: np.ndarray, mpp: float, rng: np.random.Generator
) -> _Nuclei:
    """Nucleus centres, shapes and darkness for every tissue type on the slide."""
    prolif, activation = float(programmes[0]), float(np.clip(programmes[2], -1.5, 2.0))
    parts: list[_Nuclei] = []

    def add(y, x, code, amp):
        parts.append(_Nuclei(y, x, np.asarray(code, np.int64), np.asarray(amp, np.float32)))

    def pts(lab, dens):
        return _points(labels, lab, dens, mpp, rng)

    grow = float(np.clip(1.0 + 0.12 * prolif, 0.75, 1.4))
    for lab, dens in ((Label.TUMOUR, 1 / 330), (Label.TUMOUR_INFILTRATED, 0.5 / 330)):
        y, x = pts(lab, dens * grow)
        size = np.clip(rng.normal(5.5 * grow, 1.1, y.size), 3.0, 10.0) / mpp
        mit = rng.random(y.size) < 0.03 * np.exp(0.8 * prolif)
        add(
            y,
            x,
            np.where(mit, _code("mitosis", size), _code("vesicular", size)),
            rng.uniform(0.75, 1.05, y.size),
        )
    for lab, dens in ((Label.LYMPHOCYTE, 1 / 60), (Label.TUMOUR_INFILTRATED, 0.5 / 60)):
        y, x = pts(lab, dens)
        size = np.clip(rng.normal(3.2, 0.3, y.size), 2.5, 4.0) / mpp
        add(y, x, _code("solid", size), rng.uniform(1.3, 1.7, y.size))
    y, x = pts(Label.STROMA, (1 / 550) * (1.0 + 0.45 * max(activation, -1.0)))
    plump = rng.random(y.size) < float(np.clip(0.25 + 0.3 * activation, 0.0, 0.95))
    ang = rng.integers(0, _ANGLES, y.size)
    size = np.clip(rng.normal(6.0, 1.0, y.size), 4.0, 9.0) / mpp
    add(
        y,
        x,
        np.where(plump, _code("plump", size, ang), _code("spindle", size, ang)),
        rng.uniform(0.9, 1.2, y.size),
    )
    y, x = pts(Label.ADJACENT_MUSCLE, 1 / 400)
    size = np.clip(rng.normal(8.0, 0.8, y.size), 6.0, 10.0) / mpp
    add(y, x, _code("cigar", size, rng.integers(0, _ANGLES, y.size)), rng.uniform(0.8, 1.0, y.size))
    y, x = pts(Label.NECROSIS, 1 / 65)
    add(y, x, _code("solid", rng.uniform(0.5, 1.2, y.size) / mpp), rng.uniform(0.9, 1.5, y.size))
    y, x = pts(Label.NECROSIS, 1 / 375)
    add(y, x, _code("solid", rng.uniform(3.0, 4.5, y.size) / mpp), rng.uniform(0.15, 0.3, y.size))
    return _Nuclei.concat(parts)


def _glands(labels: np.ndarray, mpp: float, rng: np.random.Generator):
    """Lumen centres and radii (pixels), plus the ring nuclei around them, for gland labels."""
    gy, gx, gr = [], [], []
    for lab in (Label.NORMAL_EPITHELIUM, Label.ADJACENT_GLANDS):
        y, x = _points(labels, lab, 1 / 1600, mpp, rng)
        gy.append(y)
        gx.append(x)
        gr.append(rng.uniform(6.0, 9.0, y.size) / mpp)
    y, x, r = np.concatenate(gy), np.concatenate(gx), np.concatenate(gr)
    gap = 3.0 / mpp
    n_ring = np.maximum(6, (2 * np.pi * (r + gap) / (2.2 * gap)).astype(np.int64))
    owner = np.repeat(np.arange(y.size), n_ring)
    phase = rng.uniform(0, 2 * np.pi, y.size)[owner]
    k = np.arange(owner.size) - np.repeat(np.cumsum(n_ring) - n_ring, n_ring)
    ang = phase + 2 * np.pi * k / n_ring[owner]
    ring_r = r[owner] + gap
    ny = (y[owner] + ring_r * np.sin(ang)).astype(np.int64)
    nx = (x[owner] + ring_r * np.cos(ang)).astype(np.int64)
    ring = _Nuclei(
        ny, nx, _code("solid", np.full(ny.size, 2.6 / mpp)), rng.uniform(1.0, 1.3, ny.size)
    )
    return (y, x, r), ring


def _splat(
    nuclei: _Nuclei, bank: TextureBank, y0: int, y1: int, width: int, reach: int
) -> np.ndarray:
    """Haematoxylin (rows y1 - y0, width) from the nuclei whose stamps touch the strip."""
    h = y1 - y0
    sel = np.nonzero((nuclei.y >= y0 - reach) & (nuclei.y < y1 + reach))[0]
    idx_all, val_all = [], []
    for code in np.unique(nuclei.code[sel]):
        dy, dx, val = bank.stamp(int(code))
        m = sel[nuclei.code[sel] == code]
        yy = nuclei.y[m, None] - y0 + dy[None, :]  # (n, s)
        xx = nuclei.x[m, None] + dx[None, :]  # (n, s)
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < width)
        idx_all.append((yy * width + xx)[ok])
        val_all.append((nuclei.amp[m, None] * val[None, :])[ok])
    if not idx_all:
        return np.zeros((h, width), np.float32)
    flat = np.bincount(np.concatenate(idx_all), np.concatenate(val_all), minlength=h * width)
    return flat.reshape(h, width).astype(np.float32)


def _lumen(glands, y0: int, y1: int, width: int) -> np.ndarray:
    """Lumen mask in [0, 1] for rows y0:y1 (soft edge)."""
    gy, gx, gr = glands
    out = np.zeros((y1 - y0, width), np.float32)
    for i in np.nonzero((gy + gr >= y0 - 1) & (gy - gr < y1 + 1))[0]:
        r = gr[i]
        ya, yb = max(int(gy[i] - r - 1), y0), min(int(gy[i] + r + 2), y1)
        xa, xb = max(int(gx[i] - r - 1), 0), min(int(gx[i] + r + 2), width)
        if ya >= yb or xa >= xb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        d = np.sqrt((yy - gy[i]) ** 2 + (xx - gx[i]) ** 2)
        view = out[ya - y0 : yb - y0, xa:xb]
        np.maximum(view, np.clip(r - d + 0.5, 0, 1), out=view)
    return out


def _unit(f: np.ndarray) -> np.ndarray:
    return ((f - f.mean()) / max(float(f.std()), 1e-9)).astype(np.float32)


def _interp_matrix(n_px: int, n_grid: int, step: float, cell: int) -> np.ndarray:
    """Linear interpolation weights (n_grid, n_px) from grid-cell centres to points ``step`` apart."""
    g = np.clip((np.arange(n_px) + 0.5) * step / cell - 0.5, 0, n_grid - 1)
    lo = np.floor(g).astype(np.int64)
    hi = np.minimum(lo + 1, n_grid - 1)
    frac = (g - lo).astype(np.float32)
    m = np.zeros((n_grid, n_px), np.float32)
    m[lo, np.arange(n_px)] += 1 - frac
    m[hi, np.arange(n_px)] += frac
    return m


def _colour_lut() -> np.ndarray:
    """RGB uint8 (_LUT_H * _LUT_E, 3) for quantised haematoxylin and eosin concentrations."""
    h = np.linspace(0, _H_MAX, _LUT_H, dtype=np.float32)[:, None, None]
    e = np.linspace(0, _E_MAX, _LUT_E, dtype=np.float32)[None, :, None]
    od = h * H_VEC + e * E_VEC + _GLASS_OD  # (LH, LE, 3)
    return np.clip(255.0 * np.power(10.0, -od) + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)


def _periodic(tex: np.ndarray, y0: int, h: int, w: int, oy: int, ox: int) -> np.ndarray:
    """Rows y0:y0+h, columns 0:w of the plane tiled with ``tex`` shifted by (oy, ox)."""
    rolled = np.roll(tex, (-((y0 + oy) % _BANK), -(ox % _BANK)), axis=(0, 1))
    return np.tile(rolled, (-(-h // _BANK), -(-w // _BANK)))[:h, :w]


def render_slide(
    labels: np.ndarray,
    *,
    width: int,
    height: int,
    programmes: np.ndarray,
    bank: TextureBank,
    rng: np.random.Generator,
) -> np.ndarray:
    """RGB uint8 (height, width, 3) image of a slide from its label grid (gh, gw)."""
    gh, gw = labels.shape
    mpp, cell = bank.mpp, cell_px(bank.mpp)
    glands, ring = _glands(labels, mpp, rng)
    nuclei = _Nuclei.concat([_nuclei(labels, programmes, mpp, rng), ring])
    reach = int(np.ceil(12.0 / mpp)) + 2
    lh, lw = -(-height // _LOW), -(-width // _LOW)
    wx = _interp_matrix(lw, gw, _LOW, cell)  # (gw, lw)
    wy = _interp_matrix(lh, gh, _LOW, cell).T  # (lh, gh)
    amp = 6.0 / mpp  # boundary jitter in pixels
    jit = [
        wy @ (_unit(ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 1.0)) * amp) @ wx
        for _ in "yx"
    ]
    mix = wy @ _unit(ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 2.0)) @ wx  # (lh, lw)
    ly = ((np.arange(lh)[:, None] + 0.5) * _LOW + jit[0]) // cell
    lx = ((np.arange(lw)[None, :] + 0.5) * _LOW + jit[1]) // cell
    lab_low = labels[
        np.clip(ly, 0, gh - 1).astype(np.int64), np.clip(lx, 0, gw - 1).astype(np.int64)
    ]
    w_h_low = (0.5 + 0.5 * np.tanh(1.5 * mix)).astype(
        np.float32
    )  # (lh, lw) weight of horizontal fibres
    oy, ox = (int(v) for v in rng.integers(0, _BANK, 2))
    lut = np.array([_BASE[lab] for lab in Label], dtype=np.float32)  # (n_labels, 4)
    colour = _colour_lut()
    img = np.empty((height, width, 3), dtype=np.uint8)
    strip = _STRIP - _STRIP % _LOW
    for y0 in range(0, height, strip):
        y1 = min(y0 + strip, height)
        h = y1 - y0
        sl = slice(y0 // _LOW, -(-y1 // _LOW))

        def up(a: np.ndarray, h: int = h) -> np.ndarray:
            return np.repeat(np.repeat(a, _LOW, axis=0), _LOW, axis=1)[:h, :width]

        lab = up(lab_low[sl])  # (h, w)
        base = lut[lab_low[sl]]  # (h/4, w/4, 4)
        w_h = up(w_h_low[sl])
        grain = _periodic(bank.grain, y0, h, width, oy, ox)  # (h, w)
        mottle = _periodic(bank.mottle, y0, h, width, oy, ox) * (lab != Label.BACKGROUND)
        fibre = w_h * _periodic(bank.fibre_h, y0, h, width, oy, ox)
        fibre += (1 - w_h) * _periodic(bank.fibre_v, y0, h, width, oy, ox)
        h_c = (
            up(base[..., 0]) + up(base[..., 2]) * grain + _splat(nuclei, bank, y0, y1, width, reach)
        )
        e_c = up(base[..., 1]) * (1 + np.float32(0.15) * mottle) + up(base[..., 2]) * grain
        e_c += up(base[..., 3]) * fibre
        lumen = _lumen(glands, y0, y1, width)
        h_c *= 1 - np.float32(0.9) * lumen
        e_c *= 1 - np.float32(0.85) * lumen
        hq = np.clip(h_c * ((_LUT_H - 1) / _H_MAX) + 0.5, 0, _LUT_H - 1).astype(np.int32)
        eq = np.clip(e_c * ((_LUT_E - 1) / _E_MAX) + 0.5, 0, _LUT_E - 1).astype(np.int32)
        img[y0:y1] = colour[hq * _LUT_E + eq]
    return img
