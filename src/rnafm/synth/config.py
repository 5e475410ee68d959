"""Configuration of the synthetic cohort and the names of its hidden variables."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CellType", "Label", "Programme", "SynthConfig", "parse_slide_size"]


class CellType(str, Enum):
    """Cell populations whose mixture makes the bulk RNA sample (order = latent column order)."""

    TUMOUR = "tumour"
    LYMPHOCYTE = "lymphocyte"
    STROMA = "stroma"
    NECROSIS = "necrosis"
    NORMAL_EPITHELIUM = "normal_epithelium"


class Label(int, Enum):
    """Tissue label of one cell of a slide's coarse label grid (what is drawn there)."""

    BACKGROUND = 0
    TUMOUR = 1  # solid tumour nests
    TUMOUR_INFILTRATED = 2  # tumour nests with intermixed lymphocytes (TILs)
    LYMPHOCYTE = 3  # lymphoid aggregates
    STROMA = 4
    NECROSIS = 5
    NORMAL_EPITHELIUM = 6  # glands inside the sampled region
    ADJACENT_GLANDS = 7  # normal glands outside the RNA sample
    ADJACENT_MUSCLE = 8  # smooth muscle outside the RNA sample


SAMPLED_LABELS = (
    Label.TUMOUR,
    Label.TUMOUR_INFILTRATED,
    Label.LYMPHOCYTE,
    Label.STROMA,
    Label.NECROSIS,
    Label.NORMAL_EPITHELIUM,
)
ADJACENT_LABELS = (Label.ADJACENT_GLANDS, Label.ADJACENT_MUSCLE)


class Programme(str, Enum):
    """Hidden per-patient programmes (order = latent column order).

    ``visible`` ones leave a trace in morphology; the others act on expression only.
    """

    PROLIFERATION = "proliferation"  # visible: larger, denser tumour nuclei and mitoses
    INFILTRATION = "infiltration"  # visible: share of lymphocytes inside tumour nests (co-location)
    STROMAL_ACTIVATION = "stromal_activation"  # visible: cellular stroma with plump nuclei
    HORMONE = "hormone"  # invisible
    METABOLIC = "metabolic"  # invisible

    @property
    def visible(self) -> bool:
        """Whether the programme changes how the tissue looks."""
        return self in (
            Programme.PROLIFERATION,
            Programme.INFILTRATION,
            Programme.STROMAL_ACTIVATION,
        )


def parse_slide_size(text: str) -> tuple[int, int]:
    """Parse ``"WIDTHxHEIGHT"`` (pixels) into a tuple; raises ValueError when malformed."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"slide size {text!r} is not WIDTHxHEIGHT, e.g. 4000x3000")
    return int(parts[0]), int(parts[1])


class SynthConfig(BaseModel):
    """How the synthetic cohort is generated (``rnafm synth``)."""

    model_config = ConfigDict(extra="forbid")

    n_patients: int = Field(60, ge=2, le=100_000, description="Number of patients.")
    seed: int = Field(
        0, ge=0, description="Seed; the same seed gives byte-identical expression and slides."
    )
    slide_width: int = Field(4000, ge=512, le=200_000, description="Level-0 slide width in pixels.")
    slide_height: int = Field(
        3000, ge=512, le=200_000, description="Level-0 slide height in pixels."
    )
    mpp: float = Field(0.5, gt=0.05, le=10.0, description="Microns per level-0 pixel (0.5 is 20x).")
    second_slide_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of patients with a second diagnostic slide."
    )
    gene_sets: str = Field(
        "hallmark",
        description="Gene-set collection (bundled name or .gmt path) the genes come from.",
    )
    n_genes: int | None = Field(
        None,
        ge=20,
        description="Number of genes (a seeded subset); None keeps every gene of the sets.",
    )
    n_unassigned_genes: int = Field(
        60,
        ge=0,
        le=1000,
        description="Extra real gene symbols in no set (capped by the built-in list).",
    )
    n_subtypes: int = Field(3, ge=1, le=3, description="Number of tumour subtypes.")
    max_adjacent_fraction: float = Field(
        0.6,
        ge=0.0,
        lt=1.0,
        description="Largest share of tissue that is adjacent normal (not sampled).",
    )
    dispersion: float = Field(
        0.05,
        ge=0.0,
        le=2.0,
        description="Negative-binomial dispersion of the counts (biological noise).",
    )
    depth: float = Field(
        20.0, gt=0.0, description="Sequencing depth: expected reads per kilobase per unit of TPM."
    )
    gdc: bool = Field(
        False, description="Also write GDC-style STAR-counts TSVs and a sample sheet."
    )
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the slide tiles.")
    tile_size: int = Field(
        256, ge=16, le=2048, description="TIFF tile side in pixels (multiple of 16)."
    )
    progress: bool = Field(True, description="Show a progress bar while slides are drawn.")

    @field_validator("tile_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"tile_size must be a multiple of 16, got {v}")
        return v
