"""Grade a class: every submission in its own process and kernel, then ``grades.csv``, feedback and a summary.

:func:`grade_batch` runs :func:`.execute.grade_one` for each submission in a separate process (``jobs`` at a
time, each with a hard time limit above the notebook's), scores the findings with :mod:`.rubric`, and writes

- ``OUT/grades.csv``: ``submission``, one column per automatic part (points), ``total``, ``status``
  (ok / timeout / error / invalid) and ``flags`` (for the instructor: a call to the library's own loss,
  files written outside its folder, runs the grader had to make itself);
- ``OUT/feedback/<submission>.md``: each part's points and, in the checkers' words, what passed and what to fix;
- ``OUT/results.json``: everything the grader found, per submission.

It returns the rows and the summary (the points distribution and the most common mistakes) that the CLI prints.
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

from .execute import PROBE_TIMEOUT, _snapshot
from .rubric import AUTO_PARTS, BY_KEY, max_points, score

STATUSES = ("ok", "timeout", "error", "invalid")


def submission_names(paths: list[Path]) -> list[str]:
    """A name per submission: the file's stem, with its folder's name in front where two stems are the same."""
    stems = Counter(p.stem for p in paths)
    names = [f"{p.parent.name}-{p.stem}" if stems[p.stem] > 1 else p.stem for p in paths]
    seen = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def _grade_in_process(path: Path, *, timeout: float, device: str, seed: int, quick: bool) -> dict:
    """:func:`.execute.grade_one` in a child process, killed (with its process group) past a hard limit."""
    limit = timeout + 5 * PROBE_TIMEOUT + 60
    with tempfile.TemporaryDirectory(prefix="course-grade-result-") as folder:
        result_file = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "course_lib.teaching.grading.worker",
            str(path),
            "--result",
            str(result_file),
            "--timeout",
            str(timeout),
            "--device",
            device,
            "--seed",
            str(seed),
        ] + (["--quick"] if quick else [])
        start = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True
        )
        try:
            _, stderr = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.communicate()
            return {"status": "timeout", "reason": f"the grader's worker ran past {limit:.0f} s and was stopped"}
        if result_file.exists():
            result = json.loads(result_file.read_text())
        else:
            tail = (stderr or "").strip().splitlines()[-1:] or ["no output"]
            result = {"status": "error", "reason": f"the grader's worker failed: {tail[0][:300]}"}
        result.setdefault("seconds", round(time.monotonic() - start, 1))
        return result


def _watched_snapshot(paths: list[Path]) -> dict[str, tuple[int, int]]:
    """Size and modification time of what a submission must not touch: every submitted file, and the
    course's data folder."""
    from ...toyworld.data import data_dir

    files = {}
    for path in paths:
        try:
            stat = path.stat()
            files[str(path.resolve())] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            files[str(path.resolve())] = None
    folder = data_dir().resolve()
    if folder.is_dir():
        files.update({str(folder / name): value for name, value in _snapshot(folder).items()})
    return files


def _changes(before: dict, after: dict) -> list[str]:
    changed = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            gone = after.get(name) is None
            what = "deleted" if gone else ("created" if before.get(name) is None else "changed")
            changed.append(f"{what} {name}")
    return changed


def grade_batch(
    paths,
    out,
    *,
    jobs: int = 1,
    timeout: float = 300,
    device: str = "cpu",
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
) -> tuple[list[dict], str]:
    """Grade every notebook of ``paths`` into the folder ``out``; returns (rows, summary text)."""
    paths = [Path(p) for p in paths]
    out = Path(out)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    names = submission_names(paths)
    baseline = _watched_snapshot(paths)
    results: dict[int, dict] = {}
    start = time.monotonic()
    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            pool.submit(_grade_in_process, path, timeout=timeout, device=device, seed=seed, quick=quick): i
            for i, path in enumerate(paths)
        }
        for future in as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the grader's own failure on this one: its row says so
                result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            now = _watched_snapshot(paths)
            changed = _changes(baseline, now)
            if changed:
                shown = "; ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                note = " (other submissions ran at the same time)" if jobs > 1 else ""
                result.setdefault("flags", []).append(f"files changed outside its folder{note}: {shown}")
                baseline = now
            results[i] = result
            bar.update(1)
            bar.set_postfix_str(f"{names[i]}: {result.get('status')}", refresh=False)
    bar.close()
    rows = [_row(names[i], paths[i], results[i]) for i in range(len(paths))]
    _write(out, rows, results, names, quick=quick)
    summary = summarize(rows, seconds=time.monotonic() - start, quick=quick)
    (out / "summary.txt").write_text(summary + "\n")
    return rows, summary


def _row(name: str, path: Path, result: dict) -> dict:
    findings = result.get("findings", {})
    points = score(findings) if result.get("status") != "invalid" else {p.key: 0 for p in AUTO_PARTS}
    flags = list(result.get("flags", []))
    for key, verdict in findings.get("losses", {}).items():
        if verdict.get("calls_library"):
            flags.append(f"my_{key}_loss calls {verdict['calls_library']}")
    for key, run in findings.get("runs", {}).items():
        if run.get("made_by_grader") and run.get("found"):
            flags.append(f"{BY_KEY[key].section}: the notebook did not make this run, the grader called the function")
    return {
        "submission": name,
        "path": str(path),
        **points,
        "total": sum(points.values()),
        "status": result.get("status", "error"),
        "flags": flags,
        "reason": result.get("reason", "") or _first_error(result),
        "seconds": result.get("seconds", 0.0),
        "_mistakes": _mistakes(result),
    }


def _first_error(result: dict) -> str:
    errors = [e for e in result.get("errors", []) if e.get("cell") != "grader"]
    if result.get("status") == "timeout":
        return f"ran past its time limit{' (then ' + errors[0]['ename'] + ')' if errors else ''}"
    if not errors:
        return ""
    e = errors[0]
    more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"cell {e.get('cell')} raised {e.get('ename')}: {e.get('evalue')}"[:200] + more


def _write(out: Path, rows: list[dict], results: dict, names: list[str], *, quick: bool) -> None:
    columns = ["submission", *(p.key for p in AUTO_PARTS), "total", "status", "flags"]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] if c != "flags" else "; ".join(row["flags"]) for c in columns])
    for i, row in enumerate(rows):
        (out / "feedback" / f"{row['submission']}.md").write_text(feedback(row, results[i], quick=quick))
    (out / "results.json").write_text(
        json.dumps({names[i]: results[i] for i in range(len(rows))}, indent=1, default=str)
    )


def feedback(row: dict, result: dict, *, quick: bool = False) -> str:
    """The feedback file of one submission, in markdown."""
    auto, bonus = max_points(auto=True), max_points(bonus=True, auto=True)
    got_bonus = sum(row[p.key] for p in AUTO_PARTS if p.bonus)
    lines = [
        f"# Exercise 18.3: feedback for {row['submission']}",
        "",
        f"Status: **{row['status']}**. Automatic points: **{row['total'] - got_bonus} of {auto}**, bonus "
        f"**{got_bonus} of {bonus}**; the other {max_points(auto=False)} points "
        f"(and {max_points(bonus=True, auto=False)} bonus) are graded by hand.",
    ]
    if quick:
        lines.append("Graded with --quick: short runs, their figures not compared.")
    if row.get("reason"):
        lines += ["", row["reason"]]
    findings = result.get("findings", {})
    losses, runs = findings.get("losses", {}), findings.get("runs", {})
    for part in AUTO_PARTS:
        lines += ["", f"## {part.section}: {row[part.key]} / {part.points}", ""]
        if part.key.endswith("_loss"):
            verdict = losses.get(part.key.removesuffix("_loss"))
            lines.append(verdict["text"] if verdict else "Not checked (the notebook did not get that far).")
        else:
            run = runs.get(part.key)
            if not run:
                lines.append("Not checked (the notebook did not get that far).")
            elif not run.get("found"):
                problems = [message for _, message in run.get("problems", [])]
                lines.append(
                    "No run found: it waits for the loss to pass its checker, or the function does not train "
                    "with train_preference." + ("".join(f"\n- {m}" for m in problems))
                )
            elif not run.get("problems"):
                figures = "figures not compared (--quick)" if quick else "figures within the expected ranges"
                lines.append(f"✅ Set up as expected; {figures}.")
            else:
                lines += [f"- ❌ {message}" for _, message in run["problems"]]
    if row["flags"]:
        lines += ["", "## For the instructor", ""] + [f"- {flag}" for flag in row["flags"]]
    errors = result.get("errors", [])
    if errors:
        lines += ["", "## Cells that raised", ""]
        lines += [
            f"- cell {e.get('cell')}: {e.get('ename')}: {e.get('evalue')}" for e in errors if e.get("cell") != "grader"
        ]
    return "\n".join(lines) + "\n"


def _mistakes(result: dict) -> list[str]:
    findings = result.get("findings", {})
    found = []
    for key, verdict in findings.get("losses", {}).items():
        if verdict.get("status") not in ("ok", None):
            found.append(f"my_{key}_loss: {verdict.get('mistake') or verdict.get('status')}")
    for key, run in findings.get("runs", {}).items():
        for code in dict.fromkeys(code for code, _ in run.get("problems", [])):
            found.append(f"{BY_KEY[key].section}: {code}")
    return found


def summarize(rows: list[dict], *, seconds: float, quick: bool = False) -> str:
    """What the instructor reads first: statuses, the points distribution, per-part means, common mistakes."""
    n = len(rows)
    statuses = Counter(row["status"] for row in rows)
    totals = [row["total"] for row in rows]
    auto, bonus = max_points(auto=True), max_points(bonus=True, auto=True)
    lines = [
        f"Graded {n} submission{'s' if n != 1 else ''} in {seconds:.0f} s"
        + (" (--quick: short runs, figures not compared)" if quick else "")
        + ": "
        + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses[s]),
        f"Automatic points (of {auto}, +{bonus} bonus): min {min(totals)}, median {statistics.median(totals):g}, "
        f"max {max(totals)}",
    ]
    top = auto + bonus
    for low in range(0, top + 1, 10):
        count = sum(low <= t < low + 10 for t in totals)
        if count:
            lines.append(f"  {low:>3}-{min(low + 9, top):<3} {'#' * count} {count}")
    lines.append(
        "Per part (mean of max): "
        + ", ".join(f"{p.key} {statistics.mean(row[p.key] for row in rows):.1f}/{p.points}" for p in AUTO_PARTS)
    )
    counter = Counter()
    for row in rows:
        counter.update(row.get("_mistakes", []))
    if counter:
        lines.append("Most common mistakes:")
        lines += [f"  {count} x {mistake}" for mistake, count in counter.most_common(10)]
    others = [row for row in rows if row["status"] != "ok"]
    if others:
        lines.append("Not ok:")
        lines += [f"  {row['submission']}: {row['status']}: {row['reason'] or '-'}" for row in others]
    flagged = [row for row in rows if row["flags"]]
    if flagged:
        lines.append("Flags for the instructor:")
        lines += [f"  {row['submission']}: {'; '.join(row['flags'])}" for row in flagged]
    return "\n".join(line for line in lines if line)
