"""The planted slips of ``make mutants`` still name code that exists: a refactor that moves a snippet makes its
slip stale (it would then test nothing), and this says which one before anyone runs the 40-minute job."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "mutants"))
from slips import SLIPS  # noqa: E402

SRC = Path(__file__).parents[1] / "src" / "lindit"


@pytest.mark.parametrize("slip", SLIPS, ids=lambda s: s.name)
def test_every_slip_names_one_snippet_of_the_source(slip):
    assert (SRC / slip.file).read_text().count(slip.old) == 1, f"{slip.name}: update its snippet in tests/mutants/slips.py"
