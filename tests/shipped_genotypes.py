"""The genotypes this repository ships: the rows of the tables in genotypes/README.md.

Not whatever genotypes/ holds: searches write their own files there, and those must change no
test result.
"""
from paths import GENOTYPES_DIR


def _table(header: str) -> list[str]:
    """First-column names of the README table whose header's first cell is `header`."""
    names, inside = [], False
    for line in (GENOTYPES_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        first = line.strip("|").split("|")[0].strip() if line.startswith("|") else None
        if first == header:
            inside = True
        elif inside and first is None:
            break
        elif inside and not first.startswith("---"):
            names.append(first)
    return names


SHIPPED = _table("name")                                # cell genotypes, genotypes/NAME.txt
SHIPPED_RECURRENT = _table("recurrent genotype")        # genotypes/recurrent/NAME.txt
