"""No notebook cell rebinds a public name of course_lib (learner code uses a ``my_`` prefix).

The scanner reads each code cell with ``ast`` and collects the names the cell binds at module level:
def/class, assignments (also augmented, annotated, walrus, unpacking), for/with/except targets,
match captures, and imports (``import a as b`` binds b). ``from course_lib... import name`` is the
intended use and is not a rebinding; aliasing a library name onto another (``import x as dpo_loss``,
``from course_lib.maths.losses import ipo_loss as dpo_loss``) is.

The library's public names are ``course_lib.__all__`` plus the public names each module of every layer
defines at top level (read from its source, so that nothing heavy is imported). The CLIs ``build_data``,
``compare`` and ``grade`` (with the grader's engine, ``teaching.grading``), private modules and the shared
input checks (``maths.checks``) are skipped.
"""

import ast
import functools
import pkgutil
import sys
from pathlib import Path

import nbformat
import pytest

import course_lib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
SKIPPED_MODULES = {"course_lib.build_data", "course_lib.compare", "course_lib.grade", "course_lib.maths.checks"}
SKIPPED_PACKAGES = ("course_lib.teaching.grading",)  # the grader's engine: used by its CLI, never by a notebook
SCOPED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class _TopLevelBindings(ast.NodeVisitor):
    """Names bound in the module scope of one parsed source."""

    def __init__(self, include_imports: bool):
        self.include_imports = include_imports
        self.names: list[tuple[str, int]] = []

    def _add(self, name, node):
        if name:
            self.names.append((name, getattr(node, "lineno", 0)))

    def visit_FunctionDef(self, node):  # binds its name; its body is another scope
        self._add(node.name, node)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node):
        pass

    def _visit_comprehension(self, node):  # only a walrus inside binds in the module scope
        for inner in ast.walk(node):
            if isinstance(inner, ast.NamedExpr) and isinstance(inner.target, ast.Name):
                self._add(inner.target.id, inner)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Store):
            self._add(node.id, node)

    def visit_ExceptHandler(self, node):
        self._add(node.name, node)
        self.generic_visit(node)

    def visit_MatchAs(self, node):
        self._add(node.name, node)
        self.generic_visit(node)

    def visit_MatchStar(self, node):
        self._add(node.name, node)

    def visit_MatchMapping(self, node):
        self._add(node.rest, node)
        self.generic_visit(node)

    def visit_Import(self, node):
        if self.include_imports:
            for alias in node.names:
                self._add(alias.asname or alias.name.split(".")[0], node)

    def visit_ImportFrom(self, node):
        if not self.include_imports:
            return
        from_library = node.level == 0 and (node.module or "").split(".")[0] == "course_lib"
        for alias in node.names:
            if alias.name == "*":
                continue
            if from_library and alias.asname in (None, alias.name):
                continue  # the library's own object under its own name: the intended use
            self._add(alias.asname or alias.name, node)


def top_level_names(source: str, *, include_imports: bool = True) -> list[tuple[str, int]]:
    """(name, line) for every name that `source` binds in its module scope."""
    visitor = _TopLevelBindings(include_imports)
    visitor.visit(ast.parse(source))
    return visitor.names


def _python_source(cell_source: str) -> str:
    """A code cell as plain Python: IPython magics and shell escapes turned into calls (or dropped)."""
    lines = cell_source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        if lines[0].split()[0] not in ("%%time", "%%timeit", "%%capture"):
            return ""  # a cell in another language (%%bash, %%html, ...)
        lines = [""] + lines[1:]  # a Python body: keep the line numbers
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)
    return TransformerManager().transform_cell("\n".join(lines))


def notebook_bindings(notebook) -> list[tuple[int, str, int]]:
    """(cell index, name, line in cell) for every module-level binding in the notebook's code cells."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        try:
            names = top_level_names(_python_source(cell.source))
        except SyntaxError as err:
            if "NBVAL_RAISES_EXCEPTION" in cell.source or "raises-exception" in cell.get("metadata", {}).get(
                "tags", []
            ):
                continue  # a cell that demonstrates a syntax error on purpose
            raise AssertionError(f"cell {index} does not parse: {err}") from err
        found.extend((index, name, line) for name, line in names)
    return found


@functools.lru_cache(maxsize=1)
def library_public_names() -> dict[str, str]:
    """Public name -> module that defines it, for course_lib.__all__ and every public submodule."""
    public = {name: "course_lib" for name in course_lib.__all__}
    package_dir = Path(course_lib.__path__[0])
    for module in pkgutil.walk_packages(course_lib.__path__, prefix="course_lib."):
        parts = module.name.split(".")[1:]
        if (
            any(part.startswith("_") for part in parts)
            or module.name in SKIPPED_MODULES
            or module.name.startswith(SKIPPED_PACKAGES)
        ):
            continue
        path = (
            package_dir.joinpath(*parts, "__init__.py")
            if module.ispkg
            else package_dir.joinpath(*parts[:-1], f"{parts[-1]}.py")
        )
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        names = {name for name, _ in top_level_names(path.read_text(), include_imports=False)}
        for node in tree.body:  # an explicit __all__ adds re-exported names
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                try:
                    names.update(ast.literal_eval(node.value))
                except ValueError:
                    pass
        for name in names:
            if not name.startswith("_"):
                public.setdefault(name, module.name)
    return public


def shadowed(notebook, public=None) -> list[str]:
    public = dict(library_public_names()) if public is None else public
    return [
        f"cell {index}, line {line}: {name!r} rebinds {public[name]}.{name} (use my_{name})"
        for index, name, line in notebook_bindings(notebook)
        if name in public
    ]


# --- the scanner itself --------------------------------------------------------------------------


def make_notebook(*cell_sources: str):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cell_sources]
    notebook.cells.insert(1, nbformat.v4.new_markdown_cell("def dpo_loss(): the prose may say anything"))
    return notebook


@pytest.fixture(params=["ipython", "by_hand"])
def magics(request, monkeypatch):
    """Run a scanner test with IPython's transformer, then with the by-hand fallback (no IPython)."""
    if request.param == "by_hand":
        monkeypatch.setitem(sys.modules, "IPython.core.inputtransformer2", None)  # import raises ImportError
    return request.param


def test_scanner_reports_every_way_of_rebinding_a_library_name(magics):
    notebook = make_notebook(
        "%matplotlib inline\nimport torch\nfrom course_lib import dpo_loss, ipo_loss\n"
        "from course_lib.maths.losses import rrhf_loss",
        "def sequence_logps(logits, labels):\n    token_logps = 1  # local: fine\n    return token_logps",
        "dpo_loss = lambda *args: 0.0",
        "for ipo_loss in range(2):\n    pass",
        "from torch.nn.functional import logsigmoid as hinge_loss\nimport numpy as kl_estimators",
        "from course_lib.maths.losses import ipo_loss as rrhf_scores",
        "class PAIRWISE_LOSSES:\n    pass",
        "!ls\nx, (implicit_rewards, *rest) = 1, (2, 3)\nif True:\n    with open('f') as sequence_kl:\n        pass",
        "if (rrhf_loss_terms := 3):\n    pass\ntry:\n    pass\nexcept Exception as log_ratio_margin:\n    pass",
        "%%time\ntoken_logps = 0",
        "%%bash\necho default_device=1",
        "my_dpo_loss = 1\nmy_ipo_loss = [ipo_loss for ipo_loss in range(3)]\nresult = dpo_loss(1)\n"
        "obj.dpo_loss = 2\nd['ipo_loss'] = 3",
    )
    found = {name for _, name, _ in notebook_bindings(notebook) if name in course_lib.__all__}
    assert found == {
        "sequence_logps",
        "dpo_loss",
        "ipo_loss",
        "hinge_loss",
        "kl_estimators",
        "rrhf_scores",
        "PAIRWISE_LOSSES",
        "implicit_rewards",
        "sequence_kl",
        "rrhf_loss_terms",
        "log_ratio_margin",
        "token_logps",
    }
    messages = shadowed(notebook)
    assert any("'dpo_loss' rebinds" in m and "my_dpo_loss" in m for m in messages)
    # the cell index counts the markdown cell too, so it matches what the reader sees
    assert any(m.startswith("cell 3, line 1: 'dpo_loss'") for m in messages)


def test_scanner_passes_a_clean_notebook(magics):
    notebook = make_notebook(
        "import torch\nfrom course_lib import dpo_loss, sequence_logps\nfrom course_lib.maths.losses import ipo_loss",
        "def my_dpo_loss(h, beta):\n    dpo_loss = 1\n    return h\nmy_value = my_dpo_loss(1, 0.1)",
        "%matplotlib inline\n!echo ok\nresult = [sequence_logps for sequence_logps in range(2)]",
    )
    assert shadowed(notebook) == []


def test_library_public_names_cover_all_and_submodules():
    public = library_public_names()
    assert set(course_lib.__all__) <= set(public)
    assert "IGNORE_INDEX" in public and "check_logps" not in public  # maths.checks is skipped
    assert public["train_rrhf"] == "course_lib.loop.training"  # the layers' modules are read too
    assert public["check_dpo_loss"] == "course_lib.teaching.exercises"
    assert not any(name.startswith("_") for name in public)
    assert "torch" not in public and "F" not in public, "imports are not the library's names"


def test_a_syntax_error_is_reported_unless_the_cell_expects_one():
    with pytest.raises(AssertionError, match="cell 0 does not parse"):
        notebook_bindings(make_notebook("def broken(:\n    pass"))
    assert notebook_bindings(make_notebook("# NBVAL_RAISES_EXCEPTION\ndef broken(:\n    pass")) == []


# --- the notebooks -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebook_does_not_rebind_library_names(path):
    notebook = nbformat.read(path, as_version=4)
    problems = shadowed(notebook)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
