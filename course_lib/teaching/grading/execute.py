"""Run one submission in a fresh kernel, in a temporary working copy, and collect the probe's findings.

``grade_one(path, ...)`` returns a JSON-able dict: ``status`` (ok / timeout / error / invalid), the cells
that raised, the findings of :mod:`.probe`, and ``flags`` (files written outside its folder, its own copy
deleted or overwritten). The batch runs it in a separate process per submission
(``python -m course_lib.teaching.grading.worker NOTEBOOK --result FILE ...``), so that nothing a
submission does reaches the others.

The working copy: a new temporary folder per submission, ``ROOT/work/`` (the kernel's working directory,
holding only the copy of the notebook) and ``ROOT/home/`` (``$HOME``, ``$TMPDIR`` and the caches). The
kernel runs with no network (the Hugging Face libraries offline, proxies pointing nowhere), on the CPU
unless a device is asked for, with one torch thread per kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .probe import MARKER

QUICK_SETTINGS = {"STEPS": 4, "EVAL_EVERY": 2, "EVAL_SAMPLES": 8, "SWEEP_STEPS": 2}
PROBE_TIMEOUT = 120  # seconds for each of the grader's own cells (the checkers, the runs it makes)
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
}


def kernel_env(root: Path, *, device: str, seed: int) -> dict:
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_CLAIMS", "JPY_", "PYTEST")) and k != "HOME"}
    env.update(OFFLINE)
    env.update(
        {
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "MPLCONFIGDIR": str(home / "matplotlib"),
            "HF_HOME": str(home / "hf"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "MPLBACKEND": "Agg",
            "COURSE_DEVICE": device,
            "COURSE_SEED": str(seed),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for path in folder.rglob("*"):
        if path.is_file() or path.is_symlink():
            try:
                stat = path.lstat()
            except OSError:
                continue
            files[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return files


def _findings(outputs) -> dict:
    """The probe's JSON line(s) in a cell's outputs, merged."""
    found = {}
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            for line in output.get("text", "").splitlines():
                if line.startswith(MARKER):
                    found.update(json.loads(line[len(MARKER) :]))
    return found


def _error_of(cell) -> dict | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return {"ename": output.get("ename", ""), "evalue": str(output.get("evalue", ""))[:300]}
    return None


def grade_one(path: str | Path, *, timeout: float = 300, device: str = "cpu", seed: int = 0, quick: bool = False):
    """Execute one submission and collect what the probe found (see the module's docstring)."""
    import nbformat

    path = Path(path)
    result = {"submission": path.name, "status": "ok", "errors": [], "flags": [], "findings": {}, "seconds": 0.0}
    start = time.monotonic()
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        if not any(cell.cell_type == "code" for cell in nb.cells):
            raise ValueError("no code cell")
    except Exception as exc:
        result.update(status="invalid", reason=f"not a valid notebook: {type(exc).__name__}: {str(exc)[:200]}")
        return result

    root = Path(tempfile.mkdtemp(prefix="course-grade-"))
    work, home = root / "work", root / "home"
    work.mkdir()
    for sub in ("tmp", "matplotlib", "hf", "cache"):
        (home / sub).mkdir(parents=True)
    copy = work / path.name
    shutil.copyfile(path, copy)
    original = copy.read_bytes()
    try:
        env = kernel_env(root, device=device, seed=seed)
        _run(nb, result, work=work, env=env, timeout=timeout, quick=quick, seed=seed)
        outside = sorted(
            name for name in os.listdir(root) if name not in ("work", "home")
        )  # anything written next to its folder
        if outside:
            result["flags"].append(f"wrote outside its folder: {', '.join(outside)}")
        if not copy.exists():
            result["flags"].append("deleted its own notebook file")
        elif copy.read_bytes() != original:
            result["flags"].append("overwrote its own notebook file")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        result["seconds"] = round(time.monotonic() - start, 1)
    return result


def _run(nb, result: dict, *, work: Path, env: dict, timeout: float, quick: bool, seed: int) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        record_timing=False,
        resources={"metadata": {"path": str(work)}},
    )
    deadline = time.monotonic() + timeout
    settings = {**_settings(quick), "seed": seed}

    def run_cell(source: str, limit: float):
        cell = nbformat.v4.new_code_cell(source)
        client.timeout = max(1, int(limit))
        client.execute_cell(cell, 0, store_history=False)
        return cell

    try:
        with client.setup_kernel(env=env, cwd=str(work)):
            run_cell("import course_lib.teaching.grading.probe as _grader\n_grader.install()", PROBE_TIMEOUT)
            try:
                _run_cells(client, nb, result, deadline=deadline, quick=quick, run_cell=run_cell)
            except CellTimeoutError:
                result["status"] = "timeout"
                # grade what can be graded: interrupt the learner's cell, then run the checkers (not the runs)
                run_sync(client.km.interrupt_kernel)()  # an AsyncKernelManager: its methods are coroutines
                time.sleep(2)
                _probe(run_cell, result, settings, runs=False)
            else:
                _probe(run_cell, result, settings)
    except DeadKernelError as exc:
        result.update(status="error")
        result["errors"].append({"cell": None, "ename": "DeadKernelError", "evalue": str(exc)[:300]})
    except Exception as exc:  # the kernel did not start, or the connection broke
        result.update(status="error" if result["status"] == "ok" else result["status"])
        result["errors"].append({"cell": None, "ename": type(exc).__name__, "evalue": str(exc)[:300]})
    if result["status"] == "ok" and result["errors"]:
        result["status"] = "error"


def _run_cells(client, nb, result: dict, *, deadline: float, quick: bool, run_cell) -> None:
    """The notebook's code cells in order, within the deadline (CellTimeoutError past it)."""
    from nbclient.exceptions import CellTimeoutError

    quick_done = not quick
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise CellTimeoutError("the notebook ran out of time")
        client.timeout = max(1, int(left))
        client.execute_cell(cell, index)
        error = _error_of(cell)
        if error:
            result["errors"].append({"cell": index, **error})
        if not quick_done and "SWEEP_STEPS" in cell.source:  # the setup cell: shorten the runs
            run_cell("\n".join(f"{k} = {v}" for k, v in QUICK_SETTINGS.items()), PROBE_TIMEOUT)
            quick_done = True


def _settings(quick: bool) -> dict:
    from ..exercises import expected

    if quick:
        return {
            "beta": expected.SETTINGS.beta,
            "steps": QUICK_SETTINGS["STEPS"],
            "eval_every": QUICK_SETTINGS["EVAL_EVERY"],
            "sweep_betas": list(expected.SETTINGS.sweep_betas),
            "sweep_steps": QUICK_SETTINGS["SWEEP_STEPS"],
            "figures": False,
        }
    return {
        "beta": expected.SETTINGS.beta,
        "steps": expected.SETTINGS.steps,
        "eval_every": expected.SETTINGS.eval_every,
        "sweep_betas": list(expected.SETTINGS.sweep_betas),
        "sweep_steps": expected.SETTINGS.sweep_steps,
        "figures": True,
    }


def _probe(run_cell, result: dict, settings: dict, *, runs: bool = True) -> None:
    """The grader's own cells: the checkers, then the runs (each with its own time limit)."""
    from nbclient.exceptions import CellTimeoutError

    try:
        cell = run_cell("_grader_losses = _grader.check_losses(globals())", PROBE_TIMEOUT)
    except CellTimeoutError:
        result["errors"].append({"cell": None, "ename": "timeout", "evalue": "the checkers took too long"})
        return
    result["findings"].update(_findings(cell.outputs))
    if not runs:
        return
    losses = result["findings"].get("losses", {})
    ok = {key: losses.get(key, {}).get("status") == "ok" for key in ("dpo", "ipo")}
    source = f"_grader_runs = _grader.check_runs(globals(), {settings!r}, {ok!r})"
    try:
        cell = run_cell(source, PROBE_TIMEOUT * 3)
    except CellTimeoutError:
        result["errors"].append({"cell": None, "ename": "timeout", "evalue": "the grader's runs took too long"})
        return
    result["findings"].update(_findings(cell.outputs))
    error = _error_of(cell)
    if error:
        result["errors"].append({"cell": "grader", **error})
