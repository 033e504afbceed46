"""Every claim a notebook makes about a run is calibrated: it appears in notebooks/CLAIMS.md, held for every
seed there, and its cell keeps the run's figures out of nbval's strict comparison.

``notebooks/CLAIMS.md`` is written by ``make calibrate`` (``scripts/calibrate_claims.py``), which runs every
notebook under several seeds. A claim added or reworded without rerunning it fails here.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_MD = ROOT / "notebooks" / "CLAIMS.md"
NOTEBOOKS = (
    "notebooks/18_1_rrhf.ipynb",
    "notebooks/18_2_ipo.ipynb",
    "notebooks/solutions/18_3_exercise.ipynb",
    "notebooks/18_4_scaling_up.ipynb",
)


def claim_statements(source: str) -> list[str]:
    """The literal text of each ``claim(...)``'s statement in ``source``, up to its first f-string field."""
    statements = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "claim" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                statements.append(first.value)
            elif isinstance(first, ast.JoinedStr) and isinstance(first.values[0], ast.Constant):
                statements.append(first.values[0].value)
    return statements


def code_cells(notebook: str) -> list[str]:
    cells = json.loads((ROOT / notebook).read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def report_section(notebook: str) -> str:
    text = CLAIMS_MD.read_text()
    match = re.search(rf"## `{re.escape(notebook)}`\n(.*?)(?=\n## `|\Z)", text, flags=re.S)
    assert match, f"{CLAIMS_MD.name} has no section for {notebook}: run `make calibrate`"
    return match.group(1)


def test_the_statement_parser_sees_plain_and_f_string_claims():
    source = 'claim("plain", x, above=1)\nclaim(f"at tau = {tau}: gap", y, below=2)\nprint("claim(no)")'
    assert claim_statements(source) == ["plain", "at tau = "]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_claim_is_in_the_calibration_report_and_held_for_every_seed(notebook):
    section = report_section(notebook)
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| claim ")]
    statements = [s for cell in code_cells(notebook) for s in claim_statements(cell)]
    assert statements, f"{notebook} makes no claims"
    for statement in statements:
        escaped = statement.replace("|", "\\|")  # as the report writes it inside a table cell
        assert any(row.startswith(f"| {escaped}") for row in rows), (
            f"{notebook}: claim {statement!r} is not in {CLAIMS_MD.name}: run `make calibrate`"
        )
    for row in rows:
        held, total = re.search(r"\| (\d+)/(\d+) \|$", row).groups()
        assert held == total, f"{notebook}: a claim failed for some seed in {CLAIMS_MD.name}: {row}"
        assert int(total) >= 5, f"{notebook}: calibrated over fewer than 5 seeds: {row}"
    assert "did not run to the end" not in section


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_cell_that_makes_a_claim_keeps_its_output_out_of_the_strict_comparison(notebook):
    for source in code_cells(notebook):
        if claim_statements(source) and "NBVAL_IGNORE_OUTPUT" not in source:
            # its outputs are then compared digit for digit: it must print nothing that came out of a run
            assert "print(" not in source and "display(" not in source, (
                f"{notebook}: a cell asserts claims about a run but its printed output is compared strictly:\n"
                f"{source[:300]}"
            )
