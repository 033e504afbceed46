"""Run one submission in a fresh kernel, offline, in a temporary working copy (``ROOT/work/`` holds only the
notebook, ``ROOT/home/`` is ``$HOME``, ``$TMPDIR`` and the caches), and collect the probe's findings. The batch runs
``python -m course_lib.teaching.grading.execute NOTEBOOK RESULT.json TIMEOUT DEVICE SEED QUICK`` per submission.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..exercises.expected import SETTINGS
from .probe import MARKER

QUICK_SETTINGS = {"STEPS": 4, "EVAL_EVERY": 2, "EVAL_SAMPLES": 8, "SWEEP_STEPS": 2}
PROBE_TIMEOUT = 120  # seconds for each of the grader's own cells (the checkers; three times that for the runs)
_PROXY = "http://127.0.0.1:9"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
OFFLINE |= {name: _PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
OFFLINE |= {"no_proxy": "", "NO_PROXY": "", "HF_HUB_DISABLE_TELEMETRY": "1"}


def kernel_env(root: Path, *, device: str, seed: int) -> dict:
    """The kernel's environment: offline, ``$HOME`` and the caches under ``root/home``, one thread."""
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_CLAIMS", "JPY_", "PYTEST")) and k != "HOME"}
    env |= OFFLINE | {"HOME": str(home), "TMPDIR": str(home / "tmp"), "MPLCONFIGDIR": str(home / "matplotlib")}
    env |= {"HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache"), "MPLBACKEND": "Agg"}
    env |= {"COURSE_DEVICE": device, "COURSE_SEED": str(seed), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env |= {"PYTHONDONTWRITEBYTECODE": "1"} | ({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})
    return env


def run_settings(quick: bool, seed: int) -> dict:
    """What the runs must use (from :mod:`..exercises.expected`; a few steps with ``quick``)."""
    steps = (QUICK_SETTINGS["STEPS"], QUICK_SETTINGS["EVAL_EVERY"], QUICK_SETTINGS["SWEEP_STEPS"]) if quick else None
    steps = steps or (SETTINGS.steps, SETTINGS.eval_every, SETTINGS.sweep_steps)
    names = ("steps", "eval_every", "sweep_steps")
    return {"beta": SETTINGS.beta, "sweep_betas": list(SETTINGS.sweep_betas), "seed": seed, **dict(zip(names, steps))}


def grade_one(path, *, timeout: float = 300, device: str = "cpu", seed: int = 0, quick: bool = False) -> dict:
    """Execute one submission and collect what the probe found (see the module's docstring)."""
    import nbformat

    path = Path(path)
    result = {"submission": path.name, "status": "ok", "errors": [], "flags": [], "findings": {}}
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        if not any(cell.cell_type == "code" for cell in nb.cells):
            raise ValueError("no code cell")
    except Exception as exc:
        return result | {"status": "invalid", "reason": f"not a valid notebook: {type(exc).__name__}: {str(exc)[:200]}"}
    root = Path(tempfile.mkdtemp(prefix="course-grade-"))
    work, copy = root / "work", root / "work" / path.name
    for folder in (work, *(root / "home" / sub for sub in ("tmp", "matplotlib", "hf", "cache"))):
        folder.mkdir(parents=True)
    shutil.copyfile(path, copy)
    try:
        _run(nb, result, work=work, env=kernel_env(root, device=device, seed=seed), timeout=timeout, quick=quick)
        outside = sorted(set(os.listdir(root)) - {"work", "home"})  # anything written next to its folder
        result["flags"] += [f"wrote outside its folder: {', '.join(outside)}"] if outside else []
        if not copy.exists():
            result["flags"].append("deleted its own notebook file")
        elif copy.read_bytes() != path.read_bytes():
            result["flags"].append("overwrote its own notebook file")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _run(nb, result: dict, *, work: Path, env: dict, timeout: float, quick: bool) -> None:
    """The notebook's cells within ``timeout``, then the probe's cells (the checkers only, after a timeout)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from nbclient.util import run_sync

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=False)
    deadline = time.monotonic() + timeout
    try:
        with client.setup_kernel(env=env, cwd=str(work)):
            try:
                _run_cells(client, nb, result, deadline=deadline, quick=quick)
                _probe(client, result, run_settings(quick, int(env["COURSE_SEED"])))
            except CellTimeoutError:
                result["status"] = "timeout"  # grade what can be graded: interrupt, then run the checkers only
                run_sync(client.km.interrupt_kernel)()
                for _ in range(3):  # absorb an interrupt that arrives late, so that it does not hit the checkers
                    time.sleep(2)
                    if not _error_of(_grader_cell(client, "pass", PROBE_TIMEOUT)):
                        break
                _probe(client, result, None)
    except Exception as exc:  # the kernel died (DeadKernelError), did not start, or the connection broke
        result["errors"].append({"cell": None, "ename": type(exc).__name__, "evalue": str(exc)[:300]})
    if result["status"] == "ok" and result["errors"]:
        result["status"] = "error"


def _error_of(cell) -> dict | None:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return {"ename": errors[0].get("ename", ""), "evalue": str(errors[0].get("evalue", ""))[:300]} if errors else None


def _run_cells(client, nb, result: dict, *, deadline: float, quick: bool) -> None:
    """The notebook's code cells in order, within the deadline (CellTimeoutError past it). With ``quick``,
    the runs are shortened right after the setup cell (the one that sets ``SWEEP_STEPS``)."""
    from nbclient.exceptions import CellTimeoutError

    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        client.timeout = max(1, int(deadline - time.monotonic()))
        if deadline <= time.monotonic():
            raise CellTimeoutError("the notebook ran out of time")
        client.execute_cell(cell, index)
        if _error_of(cell):
            result["errors"].append({"cell": index, **_error_of(cell)})
        if quick and "SWEEP_STEPS" in cell.source:
            _grader_cell(client, "\n".join(f"{k} = {v}" for k, v in QUICK_SETTINGS.items()), PROBE_TIMEOUT)
            quick = False


def _grader_cell(client, source: str, limit: float):
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    client.timeout = int(limit)
    client.execute_cell(cell, 0, store_history=False)
    return cell


def _probe(client, result: dict, settings: dict | None) -> None:
    """The grader's own cells: the checkers, then (``settings`` given) the runs of the losses that passed."""
    source = "from course_lib.teaching.grading import probe as _grader\n_grader.check_losses(globals())"
    if not _probe_cell(client, result, source, PROBE_TIMEOUT) or settings is None:
        return
    losses = result["findings"].get("losses", {})
    ok = {key: verdict.get("status") == "ok" for key, verdict in losses.items()}
    _probe_cell(client, result, f"_grader.check_runs(globals(), {settings!r}, {ok!r})", 3 * PROBE_TIMEOUT)


def _probe_cell(client, result: dict, source: str, limit: float) -> bool:
    """Run one grader cell and merge the findings it printed; False when it ran out of time."""
    from nbclient.exceptions import CellTimeoutError

    try:
        cell = _grader_cell(client, source, limit)
    except CellTimeoutError:
        result["errors"].append({"cell": None, "ename": "timeout", "evalue": "the grader's checks took too long"})
        return False
    for output in cell.outputs:
        for line in output.get("text", "").splitlines() if output.get("name") == "stdout" else []:
            result["findings"] |= json.loads(line[len(MARKER) :]) if line.startswith(MARKER) else {}
    if _error_of(cell):
        result["errors"].append({"cell": "grader", **_error_of(cell)})
    return True


if __name__ == "__main__":  # the batch's worker: one submission, its result written as JSON
    notebook, result_file, timeout, device, seed, quick = sys.argv[1:7]
    found = grade_one(notebook, timeout=float(timeout), device=device, seed=int(seed), quick=quick == "quick")
    Path(result_file).write_text(json.dumps(found, indent=1, default=str))
