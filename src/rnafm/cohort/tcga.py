"""TCGA barcodes: parse slide and sample names into patient, sample type and sample ids.

A TCGA barcode looks like ``TCGA-05-4244-01A-01R-1107-07``: project ``TCGA``, tissue source site
``05``, participant ``4244`` (patient = the first 12 characters), then the sample type in
characters 14-15 (``01`` primary solid tumour, ``11`` solid tissue normal...) and the vial letter.
Slide files add a portion, e.g. ``TCGA-05-4244-01Z-00-DX1.<uuid>.svs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Barcode", "parse_barcode", "patient_from_name", "site_from_name", "SAMPLE_TYPES"]

_BARCODE = re.compile(
    r"(?P<patient>(?P<project>TCGA|TARGET)-[A-Z0-9]{2}-[A-Z0-9]{4,6})"
    r"(?:-(?P<type>\d{2})(?P<vial>[A-Z])?)?(?![A-Z0-9])",
    re.IGNORECASE,
)

SAMPLE_TYPES: dict[str, str] = {
    "01": "Primary Solid Tumor",
    "02": "Recurrent Solid Tumor",
    "03": "Primary Blood Derived Cancer - Peripheral Blood",
    "05": "Additional - New Primary",
    "06": "Metastatic",
    "07": "Additional Metastatic",
    "10": "Blood Derived Normal",
    "11": "Solid Tissue Normal",
}


@dataclass(frozen=True)
class Barcode:
    """The parts of a TCGA-style barcode that matter for matching."""

    patient: str  # e.g. TCGA-05-4244
    sample_type: str | None  # e.g. "01"; None when the name stops after the patient
    vial: str | None  # e.g. "A"

    @property
    def site(self) -> str:
        """The tissue source site: the barcode's second field, e.g. ``05`` of ``TCGA-05-4244``."""
        return self.patient.split("-")[1]

    @property
    def sample(self) -> str | None:
        """Patient plus sample type, e.g. ``TCGA-05-4244-01`` (vial ignored)."""
        return None if self.sample_type is None else f"{self.patient}-{self.sample_type}"


def parse_barcode(name: str) -> Barcode | None:
    """Parse a TCGA/TARGET barcode at the start of ``name`` (a slide or sample name); None if none."""
    m = _BARCODE.match(str(name).strip())
    if m is None:
        return None
    return Barcode(
        patient=m.group("patient").upper(),
        sample_type=m.group("type"),
        vial=m.group("vial").upper() if m.group("vial") else None,
    )


def patient_from_name(name: str) -> str:
    """Patient id: the TCGA patient barcode (first 12 characters) when ``name`` has one, else ``name``."""
    bc = parse_barcode(name)
    return bc.patient if bc is not None else str(name)


def site_from_name(name: str) -> str | None:
    """The TCGA tissue source site of ``name`` (e.g. ``05`` of ``TCGA-05-4244-01Z``); None when
    ``name`` has no TCGA barcode."""
    bc = parse_barcode(name)
    return None if bc is None else bc.site
