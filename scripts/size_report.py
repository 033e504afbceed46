"""Prints course_lib's size against the design card's targets (issue 20): lines by layer, long or wide functions.

    python scripts/size_report.py

Targets: at most 6,000 lines in all (``wc -l`` over ``course_lib/**/*.py``), at most 2,500 in the teaching
layer, no function over 60 lines or with more than 8 parameters. ruff's C901 (complexity <= 12) is checked by
``make lint``.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "course_lib"
TARGETS = {"course_lib": 6000, "teaching": 2500}


def main() -> None:
    files = sorted(ROOT.rglob("*.py"))
    lines = {f: len(f.read_text().splitlines()) for f in files}
    layers: dict[str, int] = {}
    for f, n in lines.items():
        parts = f.relative_to(ROOT).parts
        layer = parts[0] if len(parts) > 1 else "(CLIs and __init__)"
        layers[layer] = layers.get(layer, 0) + n
    total = sum(lines.values())
    for layer, n in sorted(layers.items()):
        target = TARGETS.get(layer)
        print(f"{layer:22} {n:6,} lines" + (f"   (target <= {target:,})" if target else ""))
    print(f"{'course_lib':22} {total:6,} lines in {len(files)} files   (target <= {TARGETS['course_lib']:,})")
    wide = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n_lines = node.end_lineno - node.lineno + 1
                a = node.args
                n_params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                if n_lines > 60 or n_params > 8:
                    wide.append(
                        f"  {f.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {n_lines} lines, {n_params} params"
                    )
    print(f"functions over 60 lines or 8 parameters: {len(wide)} (target 0)")
    print("\n".join(wide))


if __name__ == "__main__":
    main()
