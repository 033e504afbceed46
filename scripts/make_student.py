"""Generate the student notebook of Exercise 18.3 from its single source, the solution notebook.

    python scripts/make_student.py            # write notebooks/18_3_exercise.ipynb  (make student)
    python scripts/make_student.py --check    # exit 1 if the stored student notebook is stale

What changes between the two (nbgrader's convention):

- In a code cell, every block from a ``### BEGIN SOLUTION`` line to its ``### END SOLUTION`` line becomes
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, indented like the ``### BEGIN SOLUTION`` line.
- In a markdown cell, the same block (a model answer) becomes ``_Your answer here._``.
- A cell tagged ``solution-only`` (cell metadata ``tags``) is left out: the checks on the solution's own
  numbers and the notes for instructors.
- Every output and execution count is cleared; cell metadata keeps only ``tags``; the notebook's
  metadata keeps only ``kernelspec`` and the language's name. The file is written with ``nbformat``,
  so the same source always gives the same bytes.

Anything else (prose, checkers, function signatures and docstrings, plotting code) stays as it is.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "solutions" / "18_3_exercise.ipynb"
TARGET = ROOT / "notebooks" / "18_3_exercise.ipynb"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_ONLY_TAG = "solution-only"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = "_Your answer here._"


class MarkerError(ValueError):
    """The solution markers of a cell are unbalanced, nested, or not on lines of their own."""


def replace_solutions(source: str, *, cell_type: str, where: str = "a cell") -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by the stub for ``cell_type``.

    Code: the stub lines take the indentation of the ``### BEGIN SOLUTION`` line. Markdown: the block
    becomes one ``_Your answer here._`` line. Raises MarkerError for an END without a BEGIN, a BEGIN
    inside a block, a block that is never closed, or a marker that shares its line with other text.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), 1):
        text = line.strip()
        if (BEGIN in line or END in line) and text not in (BEGIN, END):
            raise MarkerError(f"{where}, line {number}: a solution marker must be alone on its line: {line!r}")
        if text == BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {number}: {BEGIN} inside a solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if cell_type == "code":
                out.extend(indent + stub for stub in CODE_STUB)
            else:
                out.append(ANSWER_STUB)
        elif text == END:
            if not inside:
                raise MarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


def make_student(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student notebook for a solution notebook (which is not modified)."""
    student = copy.deepcopy(solution)
    cells = []
    for index, cell in enumerate(student.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if SOLUTION_ONLY_TAG in tags:
            continue
        cell.metadata = nbformat.NotebookNode({"tags": tags}) if tags else nbformat.NotebookNode()
        if cell.cell_type in ("code", "markdown"):
            cell.source = replace_solutions(cell.source, cell_type=cell.cell_type, where=f"cell {index}")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    student.cells = cells
    metadata = nbformat.NotebookNode()
    if "kernelspec" in solution.metadata:
        metadata.kernelspec = copy.deepcopy(solution.metadata.kernelspec)
    metadata.language_info = nbformat.NotebookNode(
        {"name": solution.metadata.get("language_info", {}).get("name", "python")}
    )
    student.metadata = metadata
    nbformat.validate(student)
    return student


def render(notebook: nbformat.NotebookNode) -> str:
    """The notebook as the text nbformat writes (stable JSON, a newline at the end)."""
    return nbformat.writes(notebook) + "\n"


def generate(source: Path = SOURCE) -> str:
    """The student notebook's text, generated from the solution at ``source``."""
    return render(make_student(nbformat.read(source, as_version=nbformat.NO_CONVERT)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the stored student notebook differs from a fresh one"
    )
    parser.add_argument("--source", type=Path, default=SOURCE, help="the solution notebook (default: %(default)s)")
    parser.add_argument("--target", type=Path, default=TARGET, help="the student notebook (default: %(default)s)")
    args = parser.parse_args(argv)
    text = generate(args.source)
    if args.check:
        stored = args.target.read_text(encoding="utf-8") if args.target.is_file() else ""
        if stored == text:
            print(f"{args.target.relative_to(ROOT) if args.target.is_relative_to(ROOT) else args.target} is up to date")
            return 0
        diff = difflib.unified_diff(stored.splitlines(), text.splitlines(), "stored", "generated", lineterm="", n=1)
        print("\n".join(list(diff)[:40]))
        print(f"\n{args.target} is stale: run `make student` (python scripts/make_student.py) and commit it.")
        return 1
    args.target.write_text(text, encoding="utf-8")
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
