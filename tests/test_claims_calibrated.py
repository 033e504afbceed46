"""Every claim a notebook makes about a run is calibrated, and meets the rule, in notebooks/CLAIMS.md.

``notebooks/CLAIMS.md`` is written by ``make calibrate`` (``scripts/calibrate_claims.py``), which runs every
notebook over at least 16 draws (8 seeds, each under two roundings). The rule
(``course_lib.teaching.claims``): every claim sits at z >= 4 standard deviations from its bound, and its
bound lies outside the range its figure took. A claim added or reworded without rerunning the calibration
fails here, and so does a chapter of more than 60 claims.
"""

import ast
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

from course_lib.teaching.claims import MAX_CLAIMS, MIN_DRAWS, Z_MIN, claim_z

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_MD = ROOT / "notebooks" / "CLAIMS.md"
COLUMNS = ["claim", "draws", "mean", "std", "range", "bound", "z", "rule"]

_spec = importlib.util.spec_from_file_location("calibrate_claims", ROOT / "scripts" / "calibrate_claims.py")
calibrate_claims = importlib.util.module_from_spec(_spec)
sys.modules["calibrate_claims"] = calibrate_claims  # its dataclasses look their module up there
_spec.loader.exec_module(calibrate_claims)
NOTEBOOKS = calibrate_claims.chapter_notebooks()  # the solution of 18.3 stands for the student notebook


# --- reading notebooks and the report ---------------------------------------------------------------------
def claim_calls(source: str) -> list[ast.Call]:
    """Every ``claim(...)`` call in ``source`` whose statement is a string or an f-string."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        is_claim = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "claim" and node.args
        if is_claim and isinstance(node.args[0], ast.Constant | ast.JoinedStr):
            calls.append(node)
    return calls


def claim_statements(source: str) -> list[str]:
    """The literal text of each ``claim(...)``'s statement in ``source``, up to its first f-string field."""
    statements = []
    for call in claim_calls(source):
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            statements.append(first.value)
        elif isinstance(first, ast.JoinedStr):
            head = first.values[0] if first.values else None
            statements.append(head.value if isinstance(head, ast.Constant) else "")
    return statements


def code_cells(notebook: str) -> list[str]:
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def report() -> str:
    assert CLAIMS_MD.exists(), f"{CLAIMS_MD} is missing: run `make calibrate`"
    return CLAIMS_MD.read_text(encoding="utf-8")


def report_section(notebook: str) -> str:
    match = re.search(rf"## `{re.escape(notebook)}`\n(.*?)(?=\n## `|\Z)", report(), flags=re.S)
    assert match, f"{CLAIMS_MD.name} has no section for {notebook}: run `make calibrate`"
    return match.group(1)


def table_rows(section: str) -> list[dict[str, str]]:
    """The claim table's rows as {column: cell}; a ``|`` inside a statement is written ``\\|``."""
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines, "the section has no claim table"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS, f"the claim table's columns are {header}, expected {COLUMNS}"
    rows = []
    for line in lines[1:]:
        cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == len(COLUMNS), f"a row of {len(cells)} cells: {line}"
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def bounds_of(cell: str) -> tuple[float | None, float | None]:
    """``> a``, ``< b``, ``> a and < b`` (a bound that varies is written ``> a .. b (varies)``) -> the
    bounds nearest the figures: the highest lower bound and the lowest upper bound."""
    above = below = None
    for part in cell.split(" and "):
        sign, numbers = part[0], [float(x) for x in re.findall(r"-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", part[1:])]
        assert sign in "<>" and numbers, f"cannot read the bound {cell!r}"
        if sign == ">":
            above = max(numbers)
        else:
            below = min(numbers)
    return above, below


def calibrated_draws() -> int:
    metadata = calibrate_claims.METADATA.search(report())
    assert metadata, f"{CLAIMS_MD.name} does not say which draws it covers: run `make calibrate`"
    draws = json.loads(metadata.group(1))
    return len(draws["seeds"]) * len(draws["roundings"])


# --- the report ---------------------------------------------------------------------------------------------
def test_the_report_covers_at_least_16_draws_and_says_so():
    draws = calibrated_draws()
    assert draws >= MIN_DRAWS, f"{CLAIMS_MD.name} covers {draws} draws, fewer than {MIN_DRAWS}: run `make calibrate`"
    assert f"over {draws} draws" in report().split("\n## ")[0], "the header does not state how many draws"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_claim_of_the_notebook_is_in_the_report(notebook):
    rows = table_rows(report_section(notebook))
    statements = [s for cell in code_cells(notebook) for s in claim_statements(cell)]
    assert statements, f"{notebook} makes no claims"
    for statement in statements:  # an f-string statement matches the rows that start with its literal head
        assert any(row["claim"].startswith(statement) for row in rows), (
            f"{notebook}: claim {statement!r} is not in {CLAIMS_MD.name}: run `make calibrate`"
        )
    for row in rows:
        assert any(row["claim"].startswith(s) for s in statements), (
            f"{notebook}: {CLAIMS_MD.name} lists {row['claim']!r}, which the notebook no longer claims: "
            "run `make calibrate`"
        )


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_claim_of_the_notebook_meets_the_rule(notebook):
    section = report_section(notebook)
    assert "did not run to the end" not in section, f"{notebook} failed in some draw: see {CLAIMS_MD.name}"
    draws = calibrated_draws()
    misses = []
    for row in table_rows(section):
        above, below = bounds_of(row["bound"])
        low, high = (float(x) for x in row["range"].split(" .. "))
        z = float(row["z"])
        if int(row["draws"]) < max(draws, MIN_DRAWS):
            misses.append(f"{row['claim']}: made in {row['draws']} of {draws} draws")
        if (above is not None and not low > above) or (below is not None and not high < below):
            misses.append(f"{row['claim']}: the bound {row['bound']} lies inside the range {row['range']}")
        if not z >= Z_MIN:
            misses.append(f"{row['claim']}: z = {row['z']} < {Z_MIN:g}")
    assert not misses, f"{notebook}: claims that miss the rule (make them robust, reword or drop them):\n" + "\n".join(
        misses
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_no_statement_is_made_twice_in_a_notebook(notebook):
    literal = [
        call.args[0].value
        for cell in code_cells(notebook)
        for call in claim_calls(cell)
        if isinstance(call.args[0], ast.Constant)
    ]
    twice = sorted({s for s in literal if literal.count(s) > 1})
    assert not twice, f"{notebook}: the same claim statement twice cannot be told apart in {CLAIMS_MD.name}: {twice}"


def test_the_chapter_makes_at_most_60_claims():
    calls = {nb: sum(len(claim_calls(cell)) for cell in code_cells(nb)) for nb in NOTEBOOKS}
    assert sum(calls.values()) <= MAX_CLAIMS, f"the chapter makes {sum(calls.values())} claim() calls: {calls}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_cell_that_makes_a_claim_keeps_its_output_out_of_the_strict_comparison(notebook):
    for source in code_cells(notebook):
        if claim_statements(source) and "NBVAL_IGNORE_OUTPUT" not in source:
            # its outputs are then compared digit for digit: it must print nothing that came out of a run
            assert "print(" not in source and "display(" not in source, (
                f"{notebook}: a cell asserts claims about a run but its printed output is compared strictly:\n"
                f"{source[:300]}"
            )


# --- the parser and the rule on small inputs ------------------------------------------------------------------
def test_the_statement_parser_sees_plain_and_f_string_claims():
    source = 'claim("plain", x, above=1)\nclaim(f"at tau = {tau}: gap", y, below=2)\nprint("claim(no)")'
    assert claim_statements(source) == ["plain", "at tau = "]
    assert len(claim_calls(source)) == 2


def test_the_table_parser_reads_escaped_pipes_and_both_bounds():
    section = (
        "| claim | draws | mean | std | range | bound | z | rule |\n|---|---|---|---|---|---|---|---|\n"
        "| \\|h - t\\| | 16 | 0.5 | 0.1 | 0.3 .. 0.7 | > 0 and < 1.5 | 5 | ok |\n"
    )
    (row,) = table_rows(section)
    assert row["claim"] == "|h - t|" and row["z"] == "5"
    assert bounds_of(row["bound"]) == (0.0, 1.5)
    assert bounds_of("> 1e-05 .. 0.2 (varies)") == (0.2, None)


def test_claim_z_is_the_distance_to_the_nearer_bound_in_standard_deviations():
    values = [1.0, 2.0, 3.0]  # mean 2, sample std 1
    assert claim_z(values, above=0.0) == pytest.approx(2.0)
    assert claim_z(values, below=10.0) == pytest.approx(8.0)
    assert claim_z(values, above=0.0, below=10.0) == pytest.approx(2.0)
    assert claim_z(values, above=3.0) == pytest.approx(-1.0)  # the mean beyond the bound: negative
    assert claim_z(values, above=[0.0, 1.0, 2.0]) == math.inf  # a bound per draw: distances 1, 1, 1
    assert claim_z([0.5, 0.5], below=1.0) == math.inf and claim_z([0.5, 0.5], above=1.0) == -math.inf
    assert claim_z([1.0, math.nan], above=0.0) == -math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [1.0], "above": 0.0}, "at least 2"),
        ({"values": [1.0, 2.0]}, "give a bound"),
        ({"values": [1.0, 2.0], "above": [0.0]}, "one bound per value"),
    ],
)
def test_claim_z_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        claim_z(**kwargs)


def fake_runs(figures: list[float], bound: float = 0.0) -> dict:
    draws = [calibrate_claims.Draw(seed, "native") for seed in range(len(figures))]
    records = [
        [{"statement": "a | b", "value": v, "above": bound, "below": None, "held": v > bound, "margin": v - bound}]
        for v in figures
    ]
    return {draw: calibrate_claims.Run(r, None, 1.0) for draw, r in zip(draws, records)}


def test_the_calibration_report_gives_each_claim_its_distribution_and_verdict():
    figures = [5.0 + 0.1 * (i % 4) for i in range(16)]
    lines, missed = calibrate_claims.section("notebooks/x.ipynb", fake_runs(figures), "a CPU")
    (row,) = table_rows("\n".join(lines))
    assert missed == 0 and row["rule"] == "ok" and row["claim"] == "a | b" and row["draws"] == "16"
    assert float(row["z"]) == pytest.approx(claim_z(figures, above=0.0), rel=1e-3)
    assert bounds_of(row["bound"]) == (0.0, None) and row["range"] == "5 .. 5.3"
    _, missed = calibrate_claims.section("notebooks/x.ipynb", fake_runs([0.1, 5.0, 9.0] * 6), "a CPU")
    assert missed == 1  # mean 4.7, std 3.8: z = 1.2 < 4


def test_a_partial_calibration_replaces_only_its_sections_and_refuses_other_draws():
    previous = "\n".join(calibrate_claims.header([0, 1], ["native"])) + "\n## `notebooks/18_1_rrhf.ipynb`\nold 1\n"
    previous += "\n## `notebooks/18_2_ipo.ipynb`\nold 2\n"
    merged = calibrate_claims.merge(
        {"notebooks/18_2_ipo.ipynb": "## `notebooks/18_2_ipo.ipynb`\nnew 2\n"}, previous, [1, 0], ["native"]
    )
    assert list(merged) == ["notebooks/18_1_rrhf.ipynb", "notebooks/18_2_ipo.ipynb"]
    assert "old 1" in merged["notebooks/18_1_rrhf.ipynb"] and "new 2" in merged["notebooks/18_2_ipo.ipynb"]
    with pytest.raises(ValueError, match="other draws"):
        calibrate_claims.merge({}, previous, [0, 1, 2], ["native"])
    with pytest.raises(ValueError, match="other draws"):
        calibrate_claims.merge({}, previous, [0, 1], ["native", "portable"])
    with pytest.raises(ValueError, match="none named"):
        calibrate_claims.merge({}, "# an older report\n", [0, 1], ["native"])


def test_the_calibration_covers_every_chapter_notebook_once(tmp_path):
    for name in (
        "notebooks/18_1_a.ipynb",
        "notebooks/18_2_b.ipynb",
        "notebooks/18_2_b.txt",
        "notebooks/solutions/18_2_b.ipynb",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert calibrate_claims.chapter_notebooks(tmp_path) == (
        "notebooks/18_1_a.ipynb",
        "notebooks/solutions/18_2_b.ipynb",
    )
    assert "notebooks/solutions/18_3_exercise.ipynb" in NOTEBOOKS and "notebooks/18_3_exercise.ipynb" not in NOTEBOOKS
