"""Grade a class: each submission in its own process (``jobs`` at a time, each with a hard time limit), scored
with :mod:`.rubric`, into ``OUT/grades.csv``, ``OUT/feedback/<submission>.md``, ``OUT/results.json`` and
``OUT/summary.txt``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from .execute import PROBE_TIMEOUT
from .rubric import AUTO_PARTS, BY_KEY, max_points, score

STATUSES = ("ok", "timeout", "error", "invalid")


def submission_names(paths: list[Path]) -> list[str]:
    """A name per submission: the file's stem, with its folder's name in front where two stems are the same."""
    stems = Counter(p.stem for p in paths)
    names = [f"{p.parent.name}-{p.stem}" if stems[p.stem] > 1 else p.stem for p in paths]
    return [
        name if names[:i].count(name) == 0 else f"{name}-{names[:i].count(name) + 1}" for i, name in enumerate(names)
    ]


def _grade_in_process(path: Path, options: dict) -> dict:
    """:func:`.execute.grade_one` in a child process, killed (with its process group) past a hard limit."""
    limit = options["timeout"] + 5 * PROBE_TIMEOUT + 60
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="course-grade-result-") as folder:
        result_file = Path(folder) / "result.json"
        args = [options[k] for k in ("timeout", "device", "seed")] + ["quick" if options["quick"] else "full"]
        command = [sys.executable, "-m", "course_lib.teaching.grading.execute", str(path), str(result_file)]
        process = subprocess.Popen(
            command + [str(a) for a in args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        try:
            _, stderr = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return {"status": "timeout", "reason": f"the grader's worker ran past {limit:.0f} s and was stopped"}
        if not result_file.exists():
            tail = (stderr or "").strip().splitlines()[-1:] or ["no output"]
            return {"status": "error", "reason": f"the grader's worker failed: {tail[0][:300]}"}
        return json.loads(result_file.read_text()) | {"seconds": round(time.monotonic() - start, 1)}


def _snapshot(paths: list[Path]) -> dict:
    """Size and modification time of what a submission must not touch: the submitted files, the course's data."""
    from ...toyworld.data import data_dir

    files = [*paths, *(p for p in data_dir().rglob("*") if p.is_file())]
    return {str(p.resolve()): (p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files}


def _change(before, after) -> str:
    if before == after:
        return "same"
    return "deleted" if after is None else ("created" if before is None else "changed")


def grade_batch(paths, out, *, jobs=1, timeout=300.0, device="cpu", seed=0, quick=False, progress=True):
    """Grade every notebook of ``paths`` into the folder ``out``; returns (rows, summary text)."""
    paths, out, start = [Path(p) for p in paths], Path(out), time.monotonic()
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    names, before, results = submission_names(paths), _snapshot(paths), {}
    options = {"timeout": timeout, "device": device, "seed": seed, "quick": quick}
    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_grade_in_process, path, options): i for i, path in enumerate(paths)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # the grader's own failure on this one: its row says so
                results[i] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            after = _snapshot(paths)
            changed = [f"{_change(before.get(k), after.get(k))} {k}" for k in sorted({*before, *after})]
            changed = [line for line in changed if not line.startswith("same ")]
            if changed:
                note = " (other submissions ran at the same time)" if jobs > 1 else ""
                flag = f"files changed outside its folder{note}: {'; '.join(changed[:5])}"
                results[i].setdefault("flags", []).append(flag)
                before = after
            bar.update(1)
    bar.close()
    rows = [_row(names[i], results[i]) for i in range(len(paths))]
    _write(out, rows, [results[i] for i in range(len(paths))], quick=quick)
    summary = summarize(rows, seconds=time.monotonic() - start, quick=quick)
    (out / "summary.txt").write_text(summary + "\n")
    return rows, summary


def _row(name: str, result: dict) -> dict:
    """One row of grades.csv (plus the reason and the mistakes, for the summary)."""
    points = score(result.get("findings", {})) if result.get("status") != "invalid" else {p.key: 0 for p in AUTO_PARTS}
    flags = list(result.get("flags", []))
    for key, run in result.get("findings", {}).get("runs", {}).items():
        if run.get("made_by_grader") and run.get("found"):
            flags.append(f"{BY_KEY[key].section}: the notebook did not make this run, the grader called the function")
    errors = [e for e in result.get("errors", []) if e.get("cell") != "grader"]
    reason = result.get("reason", "")
    if not reason and result.get("status") == "timeout":
        reason = "ran past its time limit" + (f" (then {errors[0]['ename']})" if errors else "")
    elif not reason and errors:
        more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
        reason = f"cell {errors[0].get('cell')} raised {errors[0].get('ename')}: {errors[0].get('evalue')}"[:200] + more
    return {"submission": name, **points, "total": sum(points.values()), "status": result.get("status", "error")} | {
        "flags": flags,
        "reason": reason,
        "mistakes": _mistakes(result.get("findings", {})),
    }


def _mistakes(findings: dict) -> list[str]:
    losses = findings.get("losses", {}).items()
    found = [f"my_{key}_loss: {v.get('mistake') or v.get('status')}" for key, v in losses if v.get("status") != "ok"]
    for key, run in findings.get("runs", {}).items():
        codes = dict.fromkeys(code for code, _ in run.get("problems", []))
        found += [f"{BY_KEY[key].section}: {code}" for code in codes]
    return found


def _write(out: Path, rows: list[dict], results: list[dict], *, quick: bool) -> None:
    columns = ["submission", *(p.key for p in AUTO_PARTS), "total", "status", "flags"]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([row[c] if c != "flags" else "; ".join(row["flags"]) for c in columns] for row in rows)
    for row, result in zip(rows, results):
        (out / "feedback" / f"{row['submission']}.md").write_text(feedback(row, result, quick=quick))
    (out / "results.json").write_text(
        json.dumps({r["submission"]: x for r, x in zip(rows, results)}, indent=1, default=str)
    )


def feedback(row: dict, result: dict, *, quick: bool = False) -> str:
    """The feedback file of one submission, in markdown: to the learner."""
    auto, bonus = max_points(auto=True), max_points(bonus=True, auto=True)
    got_bonus = sum(row[p.key] for p in AUTO_PARTS if p.bonus)
    lines = [
        f"# Exercise 18.3: feedback for {row['submission']}\n",
        f"Status: **{row['status']}**. Automatic points: **{row['total'] - got_bonus} of {auto}**, bonus **{got_bonus} "
        f"of {bonus}**; the other {max_points(auto=False)} points (and {max_points(bonus=True, auto=False)} bonus) "
        "are graded by hand.",
    ]
    lines += ["Graded with --quick: short runs, their figures not compared."] if quick else []
    lines += ["", row["reason"]] if row["reason"] else []
    findings = result.get("findings", {})
    for part in AUTO_PARTS:
        lines += ["", f"## {part.section}: {row[part.key]} / {part.points}", ""]
        found = findings.get("losses" if part.key.endswith("_loss") else "runs", {}).get(part.key.removesuffix("_loss"))
        problems = [message for _, message in (found or {}).get("problems", [])]
        if not found:
            lines.append("Not checked (the notebook did not get that far).")
        elif part.key.endswith("_loss"):
            lines.append(found["text"])
        elif not found.get("found"):
            lines.append("No run found: it waits for the loss to pass its checker, or the function does not train "
                         "with train_preference." + "".join(f"\n- {m}" for m in problems))  # fmt: skip
        else:
            figures = "figures not compared (--quick)" if quick else "figures within the expected ranges"
            lines += [f"- ❌ {m}" for m in problems] or [f"✅ Set up as expected; {figures}."]
    if row["flags"]:
        lines += ["", "## For the instructor", "", *(f"- {flag}" for flag in row["flags"])]
    if errors := [e for e in result.get("errors", []) if e.get("cell") != "grader"]:
        lines += ["", "## Cells that raised", "", *(f"- cell {e['cell']}: {e['ename']}: {e['evalue']}" for e in errors)]
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], *, seconds: float, quick: bool = False) -> str:
    """What the instructor reads first: statuses, the points distribution, per-part means, common mistakes."""
    statuses, totals = Counter(row["status"] for row in rows), [row["total"] for row in rows]
    auto, top = max_points(auto=True), max_points(auto=True) + max_points(bonus=True, auto=True)
    plural = "s" if len(rows) != 1 else ""
    quick_note = " (--quick: short runs, figures not compared)" if quick else ""
    lines = [
        f"Graded {len(rows)} submission{plural} in {seconds:.0f} s{quick_note}: "
        + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses[s]),
        f"Automatic points (of {auto}, +{top - auto} bonus): min {min(totals)}, "
        f"median {statistics.median(totals):g}, max {max(totals)}",
    ]
    for low in range(0, top + 1, 10):
        count = sum(low <= t < low + 10 for t in totals)
        lines += [f"  {low:>3}-{min(low + 9, top):<3} {'#' * count} {count}"] if count else []
    means = (f"{p.key} {statistics.mean(row[p.key] for row in rows):.1f}/{p.points}" for p in AUTO_PARTS)
    lines.append("Per part (mean of max): " + ", ".join(means))
    common = Counter(m for row in rows for m in row["mistakes"]).most_common(10)
    lines += ["Most common mistakes:", *(f"  {count} x {mistake}" for mistake, count in common)] if common else []
    others = [
        f"  {row['submission']}: {row['status']}: {row['reason'] or '-'}" for row in rows if row["status"] != "ok"
    ]
    lines += ["Not ok:", *others] if others else []
    flagged = [f"  {row['submission']}: {'; '.join(row['flags'])}" for row in rows if row["flags"]]
    lines += ["Flags for the instructor:", *flagged] if flagged else []
    return "\n".join(lines)
