"""Slides to feature files in one go (``rnafm preprocess``): tile every slide, then encode."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rnafm._io import write_json
from rnafm.features.extract import ExtractConfig, extract_features, features_dir
from rnafm.slides.config import TilingConfig
from rnafm.slides.jobs import CohortReport, JobStatus

__all__ = ["PreprocessConfig", "PreprocessReport", "preprocess"]

log = logging.getLogger(__name__)


class PreprocessConfig(BaseModel):
    """Tiling and extraction settings of ``rnafm preprocess``."""

    model_config = ConfigDict(extra="forbid")

    tiling: TilingConfig = Field(default_factory=TilingConfig, description="How slides are tiled.")
    extraction: ExtractConfig = Field(
        default_factory=ExtractConfig, description="How tiles are encoded."
    )


@dataclass
class PreprocessReport:
    """Outcomes of both stages; ``features`` is the folder to pass to ``rnafm train``."""

    tiling: CohortReport
    extraction: CohortReport | None
    features: Path

    @property
    def ok(self) -> bool:
        return self.tiling.ok and (self.extraction is None or self.extraction.ok)

    def summary(self) -> str:
        ext = self.extraction.summary() if self.extraction else "extract: nothing to do"
        return f"{self.tiling.summary()}; {ext}; features in {self.features}"


def preprocess(
    slides: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: PreprocessConfig | None = None,
) -> PreprocessReport:
    """Tile ``slides`` into ``<out>/tiles`` and encode them into ``<out>/features/<encoder>``.

    Slides whose tiling failed are reported and not encoded; both stages resume, so running
    the same command again only does what is missing. The configuration is saved as
    ``<out>/preprocess_config.json``.
    """
    from rnafm.slides.batch import tile_slides

    config = config or PreprocessConfig()
    out = Path(out)
    write_json(out / "preprocess_config.json", config.model_dump(mode="json"))
    tiling = tile_slides(slides, out, config.tiling)
    ready = [j.slide_id for j in tiling.jobs if j.status in (JobStatus.DONE, JobStatus.SKIPPED)]
    extraction = None
    if ready:
        extraction = extract_features(out / "tiles", out, config.extraction, slides=ready)
    report = PreprocessReport(tiling, extraction, features_dir(out, config.extraction.encoder))
    log.info(report.summary())
    return report
