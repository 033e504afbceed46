"""The pins live in pyproject.toml only: each is exact, and environment.yml installs the project from it."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

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


def test_hand_parser_agrees_with_yaml_when_available():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "environment.yml").read_text()
    pip_entries = next(e["pip"] for e in yaml.safe_load(text)["dependencies"] if isinstance(e, dict) and "pip" in e)
    assert pip_block_by_hand(text) == [str(item) for item in pip_entries]


def test_environment_yml_installs_the_project_and_pins_nothing_itself():
    """conda's route is pip's: the editable install with the dev extra, and no second list of pins."""
    assert [r.replace(" ", "") for r in environment_pip_requirements()] == ["-e.[dev]"]


def test_every_requirement_is_pinned_exactly():
    requirements = pyproject_requirements()
    assert requirements
    assert len({normalise(r) for r in requirements}) == len(requirements), "a package is listed twice"
    unpinned = [r for r in requirements if not PIN.match(r.strip())]
    assert not unpinned, f"pyproject.toml: not pinned with ==: {unpinned}"


def test_torch_is_pinned_to_2_13_0():
    assert "torch==2.13.0" in [normalise(r) for r in pyproject_requirements()]


def test_the_pin_parser_itself():
    assert normalise("Torch == 2.13.0") == "torch==2.13.0"
    assert normalise("typing_extensions==4.12.2") == "typing-extensions==4.12.2"
    assert not PIN.match("torch>=2.0")
    assert not PIN.match("torch")
    text = "name: x\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - a==1\n      - b==2  # comment\n      - -e .\nother: 1\n"  # noqa: E501
    assert pip_block_by_hand(text) == ["a==1", "b==2", "-e ."]
