"""pyproject.toml and environment.yml ask for exactly the same pinned packages."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!_-]+)$")


def normalise(requirement: str) -> str:
    """'Torch == 2.13.0' -> 'torch==2.13.0' (PEP 503 name normalisation; no extras, no spaces)."""
    match = PIN.match(requirement.strip())
    if not match:
        return requirement.strip()
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return f"{name}=={match.group(3)}"


def pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project.get("optional-dependencies", {}).get("dev", [])]


def pip_block_by_hand(text: str) -> list[str]:
    """The entries of the ``- pip:`` list under ``dependencies`` of a conda environment file."""
    entries, in_pip, pip_indent = [], False, None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if in_pip:
            if indent > pip_indent and stripped.startswith("- "):
                entries.append(stripped[2:].strip().strip("'\""))
                continue
            in_pip = False
        if stripped in ("- pip:", "-pip:"):
            in_pip, pip_indent = True, indent
    return entries


def environment_pip_requirements() -> list[str]:
    text = (ROOT / "environment.yml").read_text()
    try:
        import yaml
    except ImportError:
        return pip_block_by_hand(text)
    for entry in yaml.safe_load(text)["dependencies"]:
        if isinstance(entry, dict) and "pip" in entry:
            return [str(item) for item in entry["pip"]]
    return []


def without_editable(requirements: list[str]) -> list[str]:
    return [r for r in requirements if not r.replace(" ", "").startswith("-e")]


def test_hand_parser_agrees_with_yaml_when_available():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "environment.yml").read_text()
    pip_entries = next(e["pip"] for e in yaml.safe_load(text)["dependencies"] if isinstance(e, dict) and "pip" in e)
    assert pip_block_by_hand(text) == [str(item) for item in pip_entries]


def test_environment_yml_has_an_editable_install_of_the_package():
    assert any(r.replace(" ", "") == "-e." for r in environment_pip_requirements())


def test_same_package_set_in_both_files():
    from_pyproject = [normalise(r) for r in pyproject_requirements()]
    from_environment = [normalise(r) for r in without_editable(environment_pip_requirements())]
    assert len(from_pyproject) == len(set(from_pyproject)), "a package is listed twice in pyproject.toml"
    assert len(from_environment) == len(set(from_environment)), "a package is listed twice in environment.yml"
    only_pyproject = sorted(set(from_pyproject) - set(from_environment))
    only_environment = sorted(set(from_environment) - set(from_pyproject))
    assert not only_pyproject and not only_environment, f"{only_pyproject=} {only_environment=}"


@pytest.mark.parametrize("source", ["pyproject.toml", "environment.yml"])
def test_every_requirement_is_pinned_exactly(source):
    requirements = pyproject_requirements() if source == "pyproject.toml" else without_editable(environment_pip_requirements())
    assert requirements
    unpinned = [r for r in requirements if not PIN.match(r.strip())]
    assert not unpinned, f"{source}: not pinned with ==: {unpinned}"


def test_torch_is_pinned_to_2_13_0():
    assert "torch==2.13.0" in [normalise(r) for r in pyproject_requirements()]
    assert "torch==2.13.0" in [normalise(r) for r in without_editable(environment_pip_requirements())]


def test_the_pin_parser_itself():
    assert normalise("Torch == 2.13.0") == "torch==2.13.0"
    assert normalise("typing_extensions==4.12.2") == "typing-extensions==4.12.2"
    assert not PIN.match("torch>=2.0")
    assert not PIN.match("torch")
    text = "name: x\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - a==1\n      - b==2  # comment\n      - -e .\nother: 1\n"
    assert pip_block_by_hand(text) == ["a==1", "b==2", "-e ."]
