"""TrainConfig: the root configuration of a training run, saved as ``config.json`` in the run."""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnafm.cohort.reference import ExpressionScale
from rnafm.cohort.splits import ValidationHoldOut
from rnafm.features.clusters import ClusterConfig
from rnafm.flow import SamplerConfig
from rnafm.flow.options import TimeSampling
from rnafm.model.config import ModelConfig
from rnafm.pathways import TokenConfig
from rnafm.training.options import CalibrationMethod, Device, PriorKind, Schedule

__all__ = [
    "Device",
    "Schedule",
    "PriorKind",
    "CalibrationMethod",
    "OptimConfig",
    "ValidationConfig",
    "ImagePathConfig",
    "PriorConfig",
    "CalibrationConfig",
    "TrainConfig",
    "apply_overrides",
]


class OptimConfig(BaseModel):
    """Optimiser, schedule, EMA and stopping rules."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    batch_size: int = Field(32, ge=1, description="Slides per optimisation step.")
    epochs: int = Field(300, ge=1, description="Maximum number of passes over the training slides.")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warm-up steps.")
    schedule: Schedule = Field(Schedule.COSINE, description="Learning-rate schedule after warm-up.")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Final lr / peak lr (cosine).")
    grad_clip: float = Field(1.0, gt=0, description="Clip the global gradient norm to this.")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the weights kept.")
    max_minutes: float | None = Field(
        6.0, gt=0, description="Wall-clock budget of the training loop in minutes (None: no limit)."
    )
    patience: int = Field(
        6, ge=1, description="Stop after this many validations without improvement."
    )
    min_delta: float = Field(1e-4, ge=0, description="Improvement of the val metric that counts.")


class ValidationConfig(BaseModel):
    """Validation split (training patients only) and the multi-draw selection metric."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(
        0.15, ge=0, lt=1, description="Fraction of training patients held out for validation."
    )
    min_patients: int = Field(5, ge=1, description="Fewest validation patients; fewer: no split.")
    hold_out: ValidationHoldOut = Field(
        ValidationHoldOut.AUTO,
        description="What the validation split holds out whole: 'patient' (random patients), "
        "'site' (whole tissue source sites: the reference's 'site' column, else TCGA barcodes), "
        "so that early stopping, the mean's mix and the interval's calibration see a site "
        "shift, as a user whose new slides come from another site will; or 'auto': sites when "
        "every slide has one, there are at least three, and whole sites can make up about the "
        "validation fraction (at most twice it), else patients. split.json records the choice.",
    )
    evaluations: int = Field(
        15, ge=1, description="About this many validations over the planned training run."
    )
    every: int | None = Field(
        None, ge=1, description="Validate every this many epochs (None: from `evaluations`)."
    )
    draws: int = Field(
        4, ge=1, description="Draws per slide whose mean gives the validation prediction."
    )
    steps: int | None = Field(
        None, ge=1, description="Solver steps while validating (None: the sampler's steps)."
    )
    blends: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0),
        description="Shrinkage factors of the flow's mean correction over the ridge prior tried "
        "on validation (with prior.kind = ridge); the best is stored in calibration.json.",
    )
    head_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0),
        description="Weights of the slide head's direct estimate in the predictive mean "
        "(1 - w on the prior + flow mean) tried on validation when the model has a slide head.",
    )
    head_weight_slopes: tuple[float, ...] = Field(
        (0.0, 0.5, 1.0, 2.0),
        description="Slopes s of the slide head's weight in each gene's image signal tried on "
        "validation with every head weight w: gene g gets clip(w + s R2_g, 0, 1), R2_g the ridge "
        "prior's cross-fitted R^2 (genes the image predicts well lean on the attention head).",
    )
    head_slope_min_slides: int = Field(
        20,
        ge=1,
        description="Fewest validation slides for which the slopes are tried (with fewer, "
        "validation PCCs cannot tell a per-gene weight from one weight; slope 0 is used).",
    )
    spread_powers: tuple[float, ...] = Field(
        (0.0, 0.5, 1.0),
        description="How much of the flow's slide-specific spread the interval keeps: the std "
        "is gene_scale x (flow std / its mean over validation slides) ** power; 0 keeps the "
        "per-gene scale only. Chosen on validation by the Gaussian CRPS.",
    )
    novelty_powers: tuple[float, ...] = Field(
        (0.0, 0.5, 1.0, 2.0),
        description="Powers of (1 + h) in the slide factor of the std tried on validation (h: "
        "leverage of the slide embedding among the training slides); chosen by the CRPS. "
        "0 widens only slides beyond every training slide, by sqrt((1 + h) / (1 + h_max)).",
    )
    difficulty_powers: tuple[float, ...] = Field(
        (0.0, 1.0),
        description="Powers of the predicted slide difficulty (from the slide embedding, fitted "
        "on the training slides' cross-fitted residuals) tried on validation; chosen by CRPS.",
    )
    trend_powers: tuple[float, ...] = Field(
        (0.0, 1.0),
        description="Powers of the error trend of the std tried on validation: how the error "
        "size of one value changes with its predicted level (counting noise makes lowly "
        "expressed values noisier on the log scale, as in voom's mean-variance trend) and with "
        "the disagreement of the slide head and prior + flow; fitted on one half of the "
        "validation patients, chosen by the CRPS on the other.",
    )


class ImagePathConfig(BaseModel):
    """Direct supervision of the image path: the condition encoder and the slide head are
    first trained as an attention-MIL regressor of the z-scored expression, then frozen while
    the flow learns on the encoder's slide embedding."""

    model_config = ConfigDict(extra="forbid")

    head_epochs: int = Field(60, ge=0, description="Most regression epochs (0: no pretraining).")
    head_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the regression.")
    head_weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay of the regression."
    )
    head_every: int = Field(5, ge=1, description="Validate the regression every this many epochs.")
    head_patience: int = Field(
        4, ge=1, description="Stop after this many validations without improvement."
    )
    freeze_image: bool = Field(
        True, description="Freeze the encoder and head after the regression (flow on top)."
    )


class TileHeadConfig(BaseModel):
    """The tile head (:mod:`rnafm.model.tile_head`): an additive model of the bulk as a
    weighted mixture of per-tile expression, fitted on the cluster means after the flow; the
    maps read it out tile by tile."""

    model_config = ConfigDict(extra="forbid")

    fit_tile_head: bool = Field(True, description="Fit a tile head (the maps' default read-out).")
    tile_hidden: int = Field(256, ge=1, le=65_536, description="Width of its hidden layer.")
    tile_dropout: float = Field(0.5, ge=0, lt=1, description="Dropout after the hidden layer.")
    tile_epochs: int = Field(
        40, ge=1, description="Epochs (fixed: the maps sharpen after the slide PCC peaks)."
    )
    tile_lr: float = Field(2e-3, gt=0, description="AdamW learning rate.")
    tile_weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    tile_batch_size: int = Field(8, ge=1, description="Slides per step.")
    tile_genes: int | None = Field(
        2048,
        ge=1,
        description="With more genes, each step fits a random subset of this many (None: all).",
    )
    tile_max_minutes: float | None = Field(
        3.0, gt=0, description="Stop after the epoch that crosses this time (None: no limit)."
    )


class PriorConfig(BaseModel):
    """Optional ridge prior on mean-pooled cluster features."""

    model_config = ConfigDict(extra="forbid")

    kind: PriorKind = Field(PriorKind.RIDGE, description="none or ridge (flow models residual).")
    alphas: tuple[float, ...] = Field(
        tuple(float(10.0**e) for e in np.arange(-3.0, 5.01, 0.5)),
        description="Ridge penalties tried, relative to the feature variance (chosen per gene by "
        "leave-one-out CV on training slides).",
    )
    folds: int = Field(5, ge=2, description="Folds of the cross-fitted (out-of-fold) residuals.")
    ranks: tuple[int, ...] = Field(
        (2, 4, 8, 16, 32, 64),
        description="Reduced-rank projections of the ridge fit tried (besides full rank); the "
        "rank with the best out-of-fold mean per-gene PCC is used. Empty: plain ridge.",
    )
    refit_with_validation: bool = Field(
        True,
        description="After model choice and calibration, refit the ridge prior on training + "
        "validation slides (all training patients; kernel, rank and residual scale kept).",
    )
    rbf_widths: tuple[float, ...] = Field(
        (0.25, 0.5, 1.0),
        description="RBF kernel ridge candidates (gamma = factor x the median heuristic) that "
        "compete with the linear ridge on out-of-fold PCC. Empty: linear only.",
    )
    composition_codes: tuple[int, ...] = Field(
        (6, 10, 16),
        description="Tissue-composition candidates: for each number of codes, a linear ridge on "
        "the share of the slide's tiles in each code of a size-weighted k-means codebook of the "
        "training cluster means competes on out-of-fold PCC. Empty: none.",
    )


class CalibrationConfig(BaseModel):
    """Calibration of the predictive interval on the validation split."""

    model_config = ConfigDict(extra="forbid")

    level: float = Field(0.9, gt=0, lt=1, description="Central interval level.")
    method: CalibrationMethod = Field(
        CalibrationMethod.GLOBAL, description="none or global conformal multiplier."
    )
    draws: int = Field(16, ge=2, description="Draws per validation slide for calibration.")


class TrainConfig(BaseModel):
    """Everything that decides a trained model; saved beside it as ``config.json``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="Seed of the split, initialisation, batches and noise.")
    device: Device = Field(Device.AUTO, description="auto, cpu or cuda.")
    expression_scale: ExpressionScale = Field(
        ExpressionScale.AUTO, description="Scale of the reference values: raw, log2 or auto."
    )
    gene_sets: str = Field("hallmark", description="Bundled collection name or .gmt path.")
    resume: bool = Field(True, description="Continue from the run's last checkpoint if present.")
    antithetic: bool = Field(
        True,
        description="Draw sampling noise in antithetic pairs (z, -z) so the mean of few draws "
        "is less noisy (validation and prediction).",
    )
    time_sampling: TimeSampling = Field(
        TimeSampling.UNIFORM,
        description="How the flow-matching loss draws its time step: uniform, or noise_end "
        "(t = u^2: more steps near the noise end, where the velocity is the slide's mean).",
    )
    clusters: ClusterConfig = Field(
        default_factory=lambda: ClusterConfig(max_iter=20, fit_tiles=4096),
        description="k-means per slide, fitted on <= 4096 tiles for <= 20 Lloyd iterations "
        "(later ones move little; a few hundred large slides must be clustered within the time "
        "budget). Means and sizes are over all tiles, so the size-weighted mean is exact.",
    )
    tokens: TokenConfig = Field(default_factory=TokenConfig)
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(depth=2, encoder_dropout=0.3),
        description="Network size; depth 2 at hidden 128 trains within minutes on 2 CPU cores; "
        "dropout 0.3 in the image encoder regularises the image-path regression.",
    )
    sampler: SamplerConfig = Field(
        default_factory=lambda: SamplerConfig(steps=10, guidance=1.0),
        description="Sampler of validation, calibration and prediction (Euler, 10 steps, no "
        "guidance: w = 1 keeps the learned distribution, which the intervals rely on).",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    image: ImagePathConfig = Field(default_factory=ImagePathConfig)
    tile_head: TileHeadConfig = Field(default_factory=TileHeadConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)


_SECTIONS = (
    "clusters",
    "tokens",
    "model",
    "sampler",
    "optim",
    "validation",
    "image",
    "tile_head",
    "prior",
    "calibration",
)


def apply_overrides(
    config: TrainConfig, overrides: dict[str, Any], *, keep_none: bool = False
) -> TrainConfig:
    """Return ``config`` with ``overrides`` applied and validated.

    A key is a top-level field (``seed``), ``section.field`` or ``section__field``
    (``optim.lr``), or a bare field name found in exactly one section (``lr``, ``hidden``).
    ``None`` values are ignored so CLI options left unset change nothing, unless ``keep_none``:
    then ``None`` sets the field to None (``{"optim.max_minutes": None}``: no time budget).
    """
    from rnafm.errors import InputError

    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        if value is None and not keep_none:
            continue
        if isinstance(value, Enum):
            value = value.value
        parts = key.replace("__", ".").split(".")
        if len(parts) == 1 and parts[0] not in TrainConfig.model_fields:
            owners = [s for s in _SECTIONS if parts[0] in data[s]]
            if len(owners) != 1:
                where = "several sections: " + ", ".join(owners) if owners else "no section"
                raise InputError(
                    f"unknown or ambiguous config option {key!r} (found in {where}); "
                    "use section.field, e.g. optim.lr."
                )
            parts = [owners[0], parts[0]]
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(f"unknown config option {key!r}.")
            node = node[p]
        if parts[-1] not in node:
            raise InputError(f"unknown config option {key!r}.")
        if isinstance(node[parts[-1]], dict) and isinstance(value, dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    try:
        return TrainConfig.model_validate(data)
    except ValueError as e:
        raise InputError(f"invalid training option: {e}") from e
