"""``rnafm.load_model``: a :class:`~rnafm.predict.predictor.Predictor` that can also map slides.

Maps sit above prediction (they load models), so the prediction stage cannot import them; the
public ``rnafm.load_model`` returns this subclass instead, whose :meth:`MapPredictor.maps`
delegates to :func:`rnafm.maps.api.make_maps`. Everything else is the plain Predictor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rnafm.predict.predictor import Predictor

__all__ = ["MapPredictor", "load_model"]


class MapPredictor(Predictor):
    """A trained model ready to predict bulk expression and to map it over slides."""

    def maps(self, features: str | os.PathLike[str], **options: Any):
        """Spatial maps of pathways and genes over the tiles of slides.

        ``model.maps(features, slides=[...], pathways=[...], genes=[...], out="maps/")`` is
        :func:`rnafm.maps.api.make_maps` with this model (see there for every option). Returns a
        ``MapsResult`` whose ``maps`` holds a ``SlideMap`` per slide.
        """
        from rnafm.maps.api import make_maps

        return make_maps(self, features, **options)


def load_model(run_dir: str | os.PathLike[str], *, device: str = "auto") -> MapPredictor:
    """Rebuild a trained model from its run directory (see :func:`rnafm.predict.load_model`).

    Raises
    ------
    IncompatibleRunError
        Missing files, or a run written by another major rnafm version.
    """
    return MapPredictor(Path(run_dir), device=device)
