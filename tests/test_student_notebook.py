"""Exercise 18.3: the student notebook is generated from the solution, holds no solution, and runs.

- The stored ``notebooks/18_3_exercise.ipynb`` is exactly what ``scripts/make_student.py`` generates now
  from ``notebooks/solutions/18_3_exercise.ipynb`` (so an edit to the solution without ``make student``
  fails here).
- It has no solution markers, none of the solution lines, no model answers, no outputs.
- Run top to bottom as it is (its code cells exec'd in one namespace, in a subprocess), it raises
  nothing; each checker says "not implemented yet", and so does each later exercise; every learner
  function is a stub that raises NotImplementedError.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_student)

SOURCE, TARGET = make_student.SOURCE, make_student.TARGET
NOT_YET = "is not implemented yet"
# What the learner writes, in the order the notebook asks for it.
LEARNER_FUNCTIONS = ("my_dpo_loss", "my_ipo_loss", "my_train_and_measure", "my_sweep", "my_rrhf_loss", "my_ipo_summed")


@pytest.fixture(scope="module")
def solution():
    return nbformat.read(SOURCE, as_version=4)


@pytest.fixture(scope="module")
def student():
    return nbformat.read(TARGET, as_version=4)


def solution_blocks(notebook):
    """(cell_type, lines) of every BEGIN/END SOLUTION block in the notebook."""
    blocks = []
    for cell in notebook.cells:
        inside, lines = False, []
        for line in cell.source.split("\n"):
            if line.strip() == make_student.BEGIN:
                inside, lines = True, []
            elif line.strip() == make_student.END:
                inside = False
                blocks.append((cell.cell_type, lines))
            elif inside:
                lines.append(line)
    return blocks


# --- the generated file ----------------------------------------------------------------------------


def test_stored_student_notebook_is_what_the_script_generates_now():
    stored = TARGET.read_text(encoding="utf-8")
    assert stored == make_student.generate(SOURCE), (
        "notebooks/18_3_exercise.ipynb is stale: run `make student` (python scripts/make_student.py) and commit it"
    )


def test_check_flag_passes_on_the_stored_file_and_fails_on_a_stale_one(tmp_path, capsys):
    assert make_student.main(["--check"]) == 0
    stale = tmp_path / "stale.ipynb"
    stale.write_text(
        TARGET.read_text(encoding="utf-8").replace("YOUR CODE HERE", "YOUR CODE THERE", 1), encoding="utf-8"
    )
    assert make_student.main(["--check", "--target", str(stale)]) == 1
    assert "stale" in capsys.readouterr().out
    assert make_student.main(["--check", "--target", str(tmp_path / "missing.ipynb")]) == 1


def test_generation_is_deterministic_and_leaves_the_solution_alone(solution):
    before = nbformat.writes(solution)
    first = make_student.render(make_student.make_student(solution))
    assert make_student.render(make_student.make_student(solution)) == first
    assert nbformat.writes(solution) == before


def test_the_solution_has_a_block_for_every_exercise_and_model_answers(solution):
    blocks = solution_blocks(solution)
    code_sources = "\n".join(c.source for c in solution.cells if c.cell_type == "code")
    for name in LEARNER_FUNCTIONS:
        assert f"def {name}(" in code_sources
    assert sum(kind == "code" for kind, _ in blocks) >= len(LEARNER_FUNCTIONS)
    assert sum(kind == "markdown" for kind, _ in blocks) >= 3, "model answers to the questions"


# --- no solution in the student notebook ------------------------------------------------------------


def test_student_notebook_has_no_markers_no_solution_lines_no_answers(solution, student):
    student_text = "\n".join(c.source for c in student.cells)
    assert make_student.BEGIN not in student_text and make_student.END not in student_text
    assert "BEGIN SOLUTION" not in student_text and "END SOLUTION" not in student_text
    # every line of a solution block that does not also occur outside the blocks (a blank line, "return results")
    outside = make_student.make_student(solution)
    outside_lines = {line.strip() for cell in outside.cells for line in cell.source.split("\n")}
    leaked = []
    for _kind, lines in solution_blocks(solution):
        for line in lines:
            text = line.strip()
            if len(text) > 3 and text not in outside_lines and text in student_text:
                leaked.append(text)
    assert not leaked, f"solution lines in the student notebook: {leaked[:5]}"
    n_blocks = len(solution_blocks(solution))
    stubs = sum(
        line.strip() == (make_student.CODE_STUB[0] if cell.cell_type == "code" else make_student.ANSWER_STUB)
        for cell in student.cells
        for line in cell.source.split("\n")
    )
    assert stubs == n_blocks


def test_solution_only_cells_are_left_out(solution, student):
    tagged = [c for c in solution.cells if make_student.SOLUTION_ONLY_TAG in c.metadata.get("tags", [])]
    assert tagged, "the solution's own checks are tagged solution-only"
    assert len(student.cells) == len(solution.cells) - len(tagged)
    assert not any(make_student.SOLUTION_ONLY_TAG in c.metadata.get("tags", []) for c in student.cells)


def test_student_notebook_has_no_outputs_and_no_execution_counts(student):
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert set(cell.metadata) <= {"tags"}
    assert set(student.metadata) <= {"kernelspec", "language_info"}


# --- the replacement itself --------------------------------------------------------------------------


def test_code_block_becomes_a_stub_with_the_markers_indentation():
    source = textwrap.dedent(
        """\
        def my_f(x):
            \"\"\"Docstring stays.\"\"\"
            ### BEGIN SOLUTION
            y = x + 1
            return y
            ### END SOLUTION
        print("after")"""
    )
    assert make_student.replace_solutions(source, cell_type="code") == textwrap.dedent(
        """\
        def my_f(x):
            \"\"\"Docstring stays.\"\"\"
            # YOUR CODE HERE
            raise NotImplementedError()
        print("after")"""
    )


def test_markdown_block_becomes_your_answer_here():
    source = "**Q1.** Why?\n\n### BEGIN SOLUTION\nBecause.\n\nAnd more.\n### END SOLUTION\n"
    assert make_student.replace_solutions(source, cell_type="markdown") == "**Q1.** Why?\n\n_Your answer here._\n"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### END SOLUTION", "without"),
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside a solution block"),
        ("x = 1  ### BEGIN SOLUTION", "alone on its line"),
    ],
)
def test_unbalanced_or_misplaced_markers_raise(source, message):
    with pytest.raises(make_student.MarkerError, match=message):
        make_student.replace_solutions(source, cell_type="code")


# --- the student notebook runs -------------------------------------------------------------------------

_RUNNER = r"""
import ast, contextlib, inspect, io, json, sys
import matplotlib
matplotlib.use("Agg")
import nbformat


def stub_names(source):
    # functions whose body raises NotImplementedError() directly: the learner's stubs
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.unparse(stmt) for stmt in node.body
        ):
            yield node.name


notebook = nbformat.read(sys.argv[1], as_version=4)
losses_done = sys.argv[2] == "losses-done"  # put the library's losses in place of the learner's three loss stubs
if losses_done:
    from course_lib.maths.losses import dpo_loss, ipo_loss, rrhf_loss
    done = {"my_dpo_loss": dpo_loss, "my_ipo_loss": ipo_loss, "my_rrhf_loss": rrhf_loss}
namespace = {"__name__": "__main__"}
printed = io.StringIO()
names = []
for index, cell in enumerate(notebook.cells):
    if cell.cell_type != "code":
        continue
    names.extend(stub_names(cell.source))
    with contextlib.redirect_stdout(printed):
        exec(compile(cell.source, f"<cell {index}>", "exec"), namespace)
    if losses_done:
        namespace.update({name: fn for name, fn in done.items() if name in namespace})
stubs = {}
for name in names:
    fn = namespace[name]
    if losses_done and name in done:
        continue
    required = {p.name: None for p in inspect.signature(fn).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        fn(**required)
        stubs[name] = "returned"
    except NotImplementedError:
        stubs[name] = "NotImplementedError"
    except Exception as exc:
        stubs[name] = type(exc).__name__
print(json.dumps({"stdout": printed.getvalue(), "stubs": stubs}))
"""


def run_student_notebook(mode):
    """Exec the student notebook's code cells in a subprocess; its printed text and how each stub behaves."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(TARGET), mode],
        cwd=ROOT / "notebooks",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"the student notebook raised ({mode}):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def student_run():
    return run_student_notebook("as-given")


@pytest.fixture(scope="module")
def student_run_losses_done():
    return run_student_notebook("losses-done")


def test_student_notebook_runs_without_an_exception_and_says_not_implemented_yet(student_run):
    stdout = student_run["stdout"]
    assert "Traceback" not in stdout
    for name in ("my_dpo_loss", "my_ipo_loss", "my_rrhf_loss"):  # said by the library's checkers
        assert f"⏳ {name} {NOT_YET} — replace `raise NotImplementedError()` with your code." in stdout
    # the exercises that need the losses say so instead of failing, each run waiting only for its own loss
    for run in ("run", "sweep"):
        assert f"⏳ the DPO {run} waits for my_dpo_loss (exercise 1)." in stdout
        assert f"⏳ the IPO {run} waits for my_ipo_loss (exercise 2)." in stdout
    assert "⏳ 7b waits for my_ipo_loss (exercise 2)." in stdout


def test_with_the_losses_done_each_later_exercise_says_not_implemented_yet(student_run_losses_done):
    stdout = student_run_losses_done["stdout"]
    assert "Traceback" not in stdout
    for name in LEARNER_FUNCTIONS:
        if name not in ("my_dpo_loss", "my_ipo_loss", "my_rrhf_loss"):
            assert f"⏳ {name} {NOT_YET} — replace `raise NotImplementedError()` with your code." in stdout, stdout
    assert "waits for my_" not in stdout


def test_every_learner_function_is_a_stub_that_raises_not_implemented(student_run):
    assert set(student_run["stubs"]) == set(LEARNER_FUNCTIONS)
    assert set(student_run["stubs"].values()) == {"NotImplementedError"}
