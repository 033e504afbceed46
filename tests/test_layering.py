"""The layers of ``course_lib`` import one way: maths < toyworld < loop < teaching < the CLIs, with no cycle.

Read with ``ast`` from the sources (nothing is imported), counting every import, also those inside a
function: a lazy import is still a dependency. A module may import from its own layer and from the
layers below it; ``maths`` imports nothing but torch and the standard library.
"""

import ast
import sys
from pathlib import Path

import course_lib

PACKAGE_DIR = Path(course_lib.__path__[0])
#: Layer of each top-level part of the package; a higher layer may import a lower one, never the reverse.
LAYERS = {"maths": 0, "toyworld": 1, "loop": 2, "teaching": 3}
TOP = 4  # the CLIs (compare, build_data, grade) and the package's own __init__, which re-exports the API
MATHS_MAY_IMPORT = {"torch"}  # besides the standard library


def module_sources(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Dotted module name -> source, for every .py file of the package (``__init__`` names its package)."""
    sources = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``source``; names inside course_lib resolve to modules.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((candidate if candidate in known else target, node.lineno))
    return found


def dependency_graph(sources: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """Module -> the modules it imports (course_lib's own and third-party), with line numbers."""
    known = set(sources)
    packages = {name for name in sources if any(other.startswith(name + ".") for other in known)}
    return {name: imports_of(name, source, name in packages, known) for name, source in sources.items()}


def layering_violations(sources: dict[str, str]) -> list[str]:
    """Every import of a higher layer, and every import of a third-party package from ``maths``."""
    problems = []
    for module, imported in dependency_graph(sources).items():
        for target, line in imported:
            if target.split(".")[0] == "course_lib":
                if layer_of(target) > layer_of(module):
                    problems.append(f"{module}, line {line}: imports {target} (a higher layer)")
            elif layer_of(module) == 0:
                top = target.split(".")[0]
                if top not in sys.stdlib_module_names and top not in MATHS_MAY_IMPORT:
                    problems.append(f"{module}, line {line}: the maths layer imports {target}")
    return problems


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    graph = {m: sorted({t for t, _ in edges if t in sources}) for m, edges in dependency_graph(sources).items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


# ----------------------------------------------------------------------------- the library itself
def test_every_module_belongs_to_a_layer_or_is_a_cli():
    tops = {name.split(".")[1] for name in module_sources() if name.count(".")}
    assert tops <= set(LAYERS) | {"compare", "build_data", "grade"}, (
        f"a module outside the layers: {tops - set(LAYERS)}"
    )


def test_no_module_imports_from_a_higher_layer():
    problems = layering_violations(module_sources())
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    cycles = import_cycles(module_sources())
    assert not cycles, f"import cycles: {cycles}"


def test_the_trainer_never_imports_evaluation():
    imported = {target for target, _ in dependency_graph(module_sources())["course_lib.loop.training"]}
    assert "course_lib.loop.evaluation" not in imported
