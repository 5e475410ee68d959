"""Load a run directory and predict expression with uncertainty for new slides."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import read_json
from rnafm.errors import IncompatibleRunError, InputError

__all__ = ["PredictionArrays", "Predictor", "load_model"]

logger = logging.getLogger(__name__)


@dataclass
class PredictionArrays:
    """Predictions for n slides on the log2(x+1) scale, genes in the model's order."""

    mean: np.ndarray  # float32 (n, G) predictive mean
    std: np.ndarray | None = None  # float32 (n, G) predictive std
    lower: np.ndarray | None = None  # float32 (n, G) central interval at `level`
    upper: np.ndarray | None = None  # float32 (n, G)
    draws: np.ndarray | None = None  # float32 (n, S, G), only on request
    level: float | None = None


class Predictor:
    """A trained model ready to predict; build it with :func:`load_model`.

    Attributes
    ----------
    genes
        Output genes in order.
    tokens
        The pathway tokens of the model.
    config
        The :class:`rnafm.training.TrainConfig` of the run.
    calibration
        Contents of ``calibration.json`` (level and interval multiplier).
    tile_head
        The run's :class:`rnafm.model.tile_head.TileHead` (per-tile expression for the maps),
        or None when the run has none; read on first use (prediction does not need it).
    """

    def __init__(self, run_dir: Path, *, device: str = "auto") -> None:
        from rnafm.training.run import (
            CALIBRATION,
            GENES,
            TOKENS,
            WEIGHTS,
            check_run,
            run_cluster_config,
        )

        self.run_dir = Path(run_dir)
        meta = check_run(self.run_dir)  # before importing torch: bad runs fail fast

        from safetensors.torch import load_file

        from rnafm.model import build_model
        from rnafm.pathways import PathwayTokens
        from rnafm.runtime import resolve_device
        from rnafm.training.config import TrainConfig
        from rnafm.training.targets import load_targets

        try:
            self.config = TrainConfig.model_validate(meta["config"])
            self.tokens = PathwayTokens.from_dict(read_json(self.run_dir / TOKENS))
            self.genes: list[str] = list(read_json(self.run_dir / GENES))
            self.targets = load_targets(self.run_dir)
            self.calibration: dict[str, Any] = read_json(self.run_dir / CALIBRATION)
        except (KeyError, ValueError, OSError) as e:
            raise IncompatibleRunError(
                f"{self.run_dir}: cannot read the run ({e}); retrain it with this rnafm version."
            ) from e
        self.meta = meta
        self.cluster_config = run_cluster_config(meta, self.config)  # as in training
        self.feature_dim = int(meta["feature_dim"])
        self.n_clusters = int(meta["n_clusters"])
        self.device = resolve_device(device if device != "auto" else self.config.device.value)
        model = build_model(
            self.tokens,
            feature_dim=self.feature_dim,
            n_clusters=self.n_clusters,
            config=self.config.model,
        )
        try:
            model.load_state_dict(load_file(str(self.run_dir / WEIGHTS)))
        except RuntimeError as e:
            raise IncompatibleRunError(
                f"{self.run_dir / WEIGHTS}: weights do not fit the model of config.json ({e})."
            ) from e
        self.model = model.to(self.device).eval().requires_grad_(False)

    @functools.cached_property
    def tile_head(self):
        """The maps' per-tile expression model (CPU), read on first use; None for runs
        without one."""
        from rnafm.training.tile_head import load_tile_head

        try:
            return load_tile_head(
                self.run_dir, self.feature_dim, len(self.genes), self.config.tile_head
            )
        except RuntimeError as e:
            raise IncompatibleRunError(
                f"{self.run_dir}: tile_head.safetensors does not fit config.json ({e})."
            ) from e

    @property
    def shared_expression(self):
        """The run's :class:`rnafm.cohort.samples.SharedExpression` (its training slides of
        one sample carried one expression profile), or None."""
        from rnafm.cohort.samples import SharedExpression

        return SharedExpression.from_dict(self.calibration.get("shared_expression"))

    def __repr__(self) -> str:
        return f"Predictor({self.run_dir}, genes={len(self.genes)}, tokens={len(self.tokens)})"

    def predict_data(
        self,
        data,
        *,
        draws: int = 16,
        seed: int = 0,
        sampler=None,
        level: float | None = None,
        keep_draws: bool = False,
    ) -> PredictionArrays:
        """Predict every slide of ``data`` (a :class:`rnafm.cohort.dataset.CohortData`).

        Parameters
        ----------
        draws
            Draws per slide (antithetic pairs); the mean of the draws is the prediction.
        seed
            Seed of the noise.
        sampler
            :class:`rnafm.flow.SamplerConfig` overriding the run's sampler.
        level
            Interval level; default the calibrated level of the run. Other levels rescale the
            calibrated multiplier by the ratio of Gaussian quantiles.
        keep_draws
            Also return the draws (n, S, G).
        """
        from rnafm.flow.draws import draw_samples, summarise
        from rnafm.metrics import gaussian_multiplier
        from rnafm.training.run import check_calibrated_for, check_features

        if draws < 2:
            raise InputError(f"draws must be at least 2 to estimate an interval, got {draws}.")
        if data.clusters.shape[2] != self.feature_dim:
            raise InputError(
                f"features have dimension {data.clusters.shape[2]} but the model was trained on "
                f"{self.feature_dim}: use features from the same encoder as the training run."
            )
        check_features(self.meta, getattr(data, "feature_attrs", None), self.run_dir)
        check_calibrated_for(self.calibration, draws=draws, sampler=sampler or self.config.sampler)
        x = draw_samples(
            self.model,
            data.clusters,
            data.sizes,
            draws=draws,
            sampler=sampler or self.config.sampler,
            seed=seed,
            device=self.device,
            antithetic=self.config.antithetic,
        )  # (n, S, G)
        log2 = self._to_log2(x, data)  # (n, S, G)
        cal_level = float(self.calibration["level"])
        q = float(self.calibration["multiplier"])
        if level is not None and abs(level - cal_level) > 1e-9:
            q *= gaussian_multiplier(level) / gaussian_multiplier(cal_level)
        s = summarise(log2, level=level or cal_level, multiplier=q)
        return PredictionArrays(
            mean=s["mean"].astype(np.float32),
            std=s["std"].astype(np.float32),
            lower=s["lower"].astype(np.float32),
            upper=s["upper"].astype(np.float32),
            draws=log2.astype(np.float32) if keep_draws else None,
            level=level or cal_level,
        )

    def _to_log2(self, x: np.ndarray, data) -> np.ndarray:
        """Model-space draws (n, S, G) -> log2(x+1) draws with the run's calibrated mean
        components (prior, flow blend, slide head) and spread."""
        from rnafm.flow.draws import slide_embeddings, slide_estimates
        from rnafm.training.run import SPREAD
        from rnafm.training.targets import Spread, gene_head_weights

        cal = self.calibration
        weights = gene_head_weights(
            float(cal.get("head_weight", 0.0)),
            float(cal.get("head_weight_slope", 0.0)),
            self.targets.signal,
        )  # () or (G,)
        head_z = None
        if np.any(np.asarray(weights) > 0):
            head_z = slide_estimates(self.model, data.clusters, data.sizes, device=self.device)
        spread = Spread.load(self.run_dir / SPREAD)
        factor = None
        if spread is not None and (spread.novelty is not None or spread.difficulty is not None):
            emb = slide_embeddings(self.model, data.clusters, data.sizes, device=self.device)
            factor = spread.slide_factor(emb)  # (n,)
        return self.targets.transform.to_log2(
            x,
            self.targets.prior_z(data.clusters, data.sizes),
            blend=float(cal.get("blend", 1.0)),
            head_z=head_z,
            head_weight=weights if head_z is not None else 0.0,
            spread=spread,
            slide_factor=factor,
        )  # (n, S, G)

    def load_data(self, features, *, reference=None, slides=None):
        """Cohort data for ``features`` restricted to ``reference`` / ``slides`` (None: all)."""
        from rnafm.cohort.dataset import load_cohort_data
        from rnafm.cohort.reference import Reference, load_reference

        ref = reference
        if reference is not None and not isinstance(reference, Reference):
            try:
                ref = load_reference(reference, scale=self.config.expression_scale)
            except InputError as e:  # values are not needed to predict: use the slide list
                ref = _slides_of(reference, e)
        if isinstance(slides, str):
            slides = None if slides == "all" else [s for s in slides.split(",") if s]
        return load_cohort_data(
            features, reference=ref, slides=slides, cluster_config=self.cluster_config
        )

    def predict(
        self,
        features: str | os.PathLike[str],
        *,
        reference=None,
        slides=None,
        draws: int = 16,
        seed: int = 0,
        sampler=None,
        level: float | None = None,
        out: str | os.PathLike[str] | None = None,
        draws_out: str | os.PathLike[str] | None = None,
        per_slide: bool = False,
    ):
        """Predict slides of a feature folder and return the predictions as AnnData.

        Parameters
        ----------
        features
            Folder of per-slide feature files.
        reference
            Reference table (path or :class:`Reference`) listing the slides to predict; its
            expression values are not used.
        slides
            Slide ids (list, comma-separated string, or ``"all"``) when there is no reference.
        draws, seed, sampler, level
            See :meth:`predict_data`.
        out
            Also write the AnnData to this ``.h5ad`` path (atomically).
        draws_out
            Also write the draws (n, S, G) to this h5 file.
        per_slide
            Predict every slide alone. By default, when the run's training slides of one
            sample carried one expression profile (``calibration.json``'s
            ``shared_expression``, as in TCGA), the slides of a sample (its TCGA sample
            barcode, else the patient) share their pooled prediction
            (:mod:`rnafm.predict.pooling`); ``obs['pooled_slides']`` counts them.

        Returns
        -------
        anndata.AnnData
            ``X`` mean, layers ``std``/``lower``/``upper``, ``obsm['pathway_scores']``; slides
            that could not be loaded are listed in ``uns['skipped']``.
        """
        from collections import Counter

        from rnafm.cohort.samples import sample_keys_of
        from rnafm.predict.pooling import pool_predictions
        from rnafm.predict.writer import to_anndata, write_draws, write_predictions

        data = self.load_data(features, reference=reference, slides=slides)
        arrays = self.predict_data(
            data,
            draws=draws,
            seed=seed,
            sampler=sampler,
            level=level,
            keep_draws=draws_out is not None,
        )
        keys = sample_keys_of(data)
        shared = None if per_slide else self.shared_expression
        if shared is not None:
            arrays = pool_predictions(arrays, keys, shared)
        adata = to_anndata(self, data, arrays, draws=draws, seed=seed, sampler=sampler)
        adata.obs["sample"] = keys
        counts = Counter(keys)
        adata.obs["pooled_slides"] = [counts[k] if shared is not None else 1 for k in keys]
        adata.uns["rnafm"]["pooled"] = "none" if shared is None else shared.to_dict()
        if out is not None:
            write_predictions(adata, out)
        if draws_out is not None:
            write_draws(draws_out, data.slide_ids, self.genes, arrays.draws)
        return adata


def _slides_of(path, error: Exception):
    """A Reference with the slides and patients of a table whose values cannot be read."""
    import pandas as pd

    from rnafm.cohort.reference import Reference, slide_id_from_name
    from rnafm.cohort.tcga import patient_from_name

    try:
        sep = "\t" if str(path).lower().endswith((".tsv", ".txt")) else ","
        df = pd.read_csv(path, sep=sep, dtype=str, usecols=lambda c: not str(c).startswith("rna_"))
        slides = [slide_id_from_name(s) for s in df["wsi_file_name"]]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: cannot read the slide list ({e}); first error: {error}") from e
    if "patient_id" in df:
        patients = [str(p) for p in df["patient_id"]]
    else:
        patients = [patient_from_name(s) for s in slides]
    logger.warning("%s: expression values ignored (%s); using its slide list only", path, error)
    return Reference(
        slide_ids=slides,
        patient_ids=patients,
        projects=None,
        genes=[],
        values=np.zeros((len(slides), 0), dtype=np.float32),
        source=None,
        samples=df["sample_id"].fillna("").astype(str).tolist() if "sample_id" in df else None,
    )


def load_model(run_dir: str | os.PathLike[str], *, device: str = "auto") -> Predictor:
    """Rebuild a trained model from its run directory.

    Raises
    ------
    IncompatibleRunError
        Missing files, or a run written by another major rnafm version.
    """
    return Predictor(Path(run_dir), device=device)
