"""Run every chapter notebook over many draws and write each claim's distribution to notebooks/CLAIMS.md.

    make calibrate                     # = python scripts/calibrate_claims.py: 8 seeds x 2 roundings = 16 draws
    python scripts/calibrate_claims.py --notebooks notebooks/18_2_ipo.ipynb
        # reruns one notebook: its section of notebooks/CLAIMS.md is replaced, the others' are kept
        # (refused if the report was made over other draws: rerun every notebook then)

A draw is one seed (``COURSE_SEED``) under one rounding: ``native`` (this CPU's vectorised ATen kernels)
or ``portable`` (``ATEN_CPU_CAPABILITY=default``, ATen's kernels without SIMD: a stand-in for another
CPU). Every run has one thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``), so that ``--jobs`` runs
share the cores without fighting. Each notebook runs top to bottom in a fresh kernel (``nbconvert
--execute`` into a temporary folder: the stored notebooks are not touched), on the CPU. Every
``claim(...)`` it makes (``course_lib.teaching.claims``) is logged with its figure and bounds, and a
failing claim is recorded rather than raised, so that one pass sees them all.

For each claim the report gives the number of draws, the figure's mean, standard deviation and range, the
bound, and z = (distance from the mean to the bound) / standard deviation (``claims.claim_z``). The rule
(``tests/test_claims_calibrated.py``): z >= 4 and the bound outside the observed range. A claim that
misses it is made robust (more samples, a larger effect, a wider comparison), reworded, or dropped.
A statement made twice in one run cannot be told apart from the other: the run is reported as an error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.teaching.claims import MIN_DRAWS, Z_MIN, claim_z  # noqa: E402


def chapter_notebooks(root: Path = ROOT) -> tuple[str, ...]:
    """Every chapter notebook, as paths from ``root``, in chapter order: ``notebooks/18_*.ipynb``, where an
    exercise's solution (``notebooks/solutions/``) stands for the student version generated from it."""
    solutions = {p.name: p for p in (root / "notebooks" / "solutions").glob("18_*.ipynb")}
    chapter = {p.name: p for p in (root / "notebooks").glob("18_*.ipynb")} | solutions
    return tuple(str(chapter[name].relative_to(root)) for name in sorted(chapter))


NOTEBOOKS = chapter_notebooks()
DEFAULT_OUT = ROOT / "notebooks" / "CLAIMS.md"
DEFAULT_SEEDS = tuple(range(8))
ROUNDINGS = {
    "native": {},
    "portable": {"ATEN_CPU_CAPABILITY": "default"},
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
METADATA = re.compile(r"<!-- calibration: (\{.*?\}) -->")


@dataclass(frozen=True)
class Draw:
    """One seed under one rounding."""

    seed: int
    rounding: str

    def __str__(self) -> str:
        return f"seed {self.seed}, {self.rounding}"


@dataclass
class Run:
    """What one notebook made in one draw: its claims' records, and its error (None if it ran to the end)."""

    records: list[dict]
    error: str | None
    seconds: float


def run_notebook(notebook: str, draw: Draw, timeout: int) -> Run:
    """Executes ``notebook`` in a fresh kernel under ``draw`` and reads back the claims it logged."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="calibrate_") as tmp:
        log = Path(tmp) / "claims.jsonl"
        env = {
            **os.environ,
            **ONE_THREAD,
            **ROUNDINGS[draw.rounding],
            "COURSE_DEVICE": "cpu",
            "COURSE_SEED": str(draw.seed),
            "COURSE_CLAIMS_LOG": str(log),
            "COURSE_CLAIMS_CALIBRATE": "1",
        }
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--output-dir",
            tmp,
            f"--ExecutePreprocessor.timeout={timeout}",
            str(ROOT / notebook),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    error = None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["(no stderr)"]
        error = re.sub(r"\x1b\[[0-9;]*m", "", lines[-1])[:300]
    made = [r["statement"] for r in records]
    twice = sorted({s for s in made if made.count(s) > 1})
    if twice and error is None:
        error = f"a statement was made more than once in one run (tell them apart): {twice[0]!r}"
    return Run(records, error, time.monotonic() - started)


def format_bound(records: list[dict]) -> str:
    """The claim's bounds as the report prints them: ``> a``, ``< b``, or both; a range where they vary."""
    parts = []
    for key, sign in (("above", ">"), ("below", "<")):
        bounds = [r[key] for r in records if r[key] is not None]
        if bounds:
            low, high = min(bounds), max(bounds)
            parts.append(f"{sign} {low:.6g}" if low == high else f"{sign} {low:.6g} .. {high:.6g} (varies)")
    return " and ".join(parts)


def claim_row(statement: str, records: list[dict]) -> tuple[str, bool]:
    """One table row for a claim over its draws, and whether it meets the rule."""
    values = [r["value"] for r in records]
    bounds = {key: [r[key] for r in records] for key in ("above", "below")}
    consistent = all(len({b is None for b in given}) == 1 for given in bounds.values())
    bounds = {key: None if given[0] is None else given for key, given in bounds.items()}
    z = claim_z(values, **bounds) if consistent and len(values) > 1 else -math.inf
    held_every_draw = all(r["held"] for r in records)
    finite = all(math.isfinite(v) for v in values)
    mean = statistics.fmean(values) if finite else math.nan
    spread = statistics.stdev(values) if finite and len(values) > 1 else math.nan
    verdicts = [] if consistent else ["a bound given in some draws only"]
    if len(records) < MIN_DRAWS:
        verdicts.append(f"fewer than {MIN_DRAWS} draws")
    if not held_every_draw:
        verdicts.append("bound inside the range")
    if not z >= Z_MIN:
        verdicts.append(f"z < {Z_MIN:g}")
    name = statement.replace("|", "\\|")
    cells = [
        name,
        str(len(records)),
        f"{mean:.6g}",
        f"{spread:.3g}",
        f"{min(values):.6g} .. {max(values):.6g}",
        format_bound(records),
        f"{z:.3g}" if math.isfinite(z) else ("inf" if z > 0 else "-inf"),
        "; ".join(verdicts) or "ok",
    ]
    return "| " + " | ".join(cells) + " |", not verdicts


def section(notebook: str, runs: dict[Draw, Run], machine: str) -> tuple[list[str], int]:
    """The report's section for one notebook, and how many of its claims miss the rule (or runs failed)."""
    lines = [f"## `{notebook}`", "", f"{len(runs)} draws, on {machine}.", ""]
    errors = [(draw, run.error) for draw, run in runs.items() if run.error]
    for draw, error in errors:
        lines.append(f"- **{draw} did not run to the end:** `{error}`")
    if errors:
        lines.append("")
    by_statement: dict[str, list[dict]] = {}
    for run in runs.values():
        for record in run.records:
            by_statement.setdefault(record["statement"], []).append(record)
    lines += [
        "| claim | draws | mean | std | range | bound | z | rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    missed = len(errors)
    for statement, records in by_statement.items():
        row, meets = claim_row(statement, records)
        lines.append(row)
        missed += not meets
    return lines + [""], missed


def machine_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and torch's version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.M)
        cpu = names[0].strip() if names else cpu
    import torch  # imported here: the report's other functions need no torch

    return f"{cpu}, torch {torch.__version__.split('+')[0]}"


def header(seeds: list[int], roundings: list[str]) -> list[str]:
    """The report's title and first paragraphs, with the draws in a comment that a later merge reads back."""
    draws = len(seeds) * len(roundings)
    settings = {name: " ".join(f"`{k}={v}`" for k, v in ROUNDINGS[name].items()) for name in roundings}
    described = ", ".join(f"{name} ({settings[name] or 'the kernels torch picks for this CPU'})" for name in roundings)
    metadata = json.dumps({"seeds": seeds, "roundings": roundings})
    return [
        f"# Claims calibrated over {draws} draws",
        "",
        f"Generated by `make calibrate` (`python scripts/calibrate_claims.py`) over {draws} draws: seeds "
        f"{', '.join(map(str, seeds))} (`COURSE_SEED`), each under {len(roundings)} roundings: {described}; "
        "one thread, on the CPU. Each row is one `claim(...)` of a notebook: its figure's mean, standard "
        "deviation and range over the draws, its bound, and z = (distance from the mean to the bound) / "
        "standard deviation (with two bounds, the smaller). The rule, checked by "
        f"`tests/test_claims_calibrated.py`: z >= {Z_MIN:g} and the bound outside the range. A claim that "
        "misses it is made robust, reworded or dropped, never loosened to fit. Rerun after changing a claim.",
        "",
        f"<!-- calibration: {metadata} -->",
        "",
    ]


def split_report(text: str) -> tuple[dict | None, dict[str, str]]:
    """A report's draws (None if it names none) and its sections, keyed by notebook path."""
    match = METADATA.search(text)
    draws = json.loads(match.group(1)) if match else None
    sections = {}
    for part in text.split("\n## `")[1:]:
        notebook = part.split("`", 1)[0]
        sections[notebook] = "## `" + part.rstrip("\n") + "\n"
    return draws, sections


def merge(new_sections: dict[str, str], previous: str, seeds: list[int], roundings: list[str]) -> dict[str, str]:
    """``new_sections`` over ``previous``'s, in NOTEBOOKS order. Raises ValueError if the draws differ."""
    draws, old_sections = split_report(previous)
    if draws is None or sorted(draws["seeds"]) != sorted(seeds) or sorted(draws["roundings"]) != sorted(roundings):
        raise ValueError(
            f"the report was made over other draws ({draws or 'none named'}), not seeds {seeds} x roundings "
            f"{roundings}: rerun every notebook (no --notebooks), or pass the same --seeds and --roundings"
        )
    merged = {**old_sections, **new_sections}
    order = {nb: i for i, nb in enumerate(NOTEBOOKS)}
    return {nb: merged[nb] for nb in sorted(merged, key=lambda nb: order.get(nb, len(order)))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--roundings", nargs="+", default=list(ROUNDINGS), choices=list(ROUNDINGS))
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), help="paths from the repository root")
    parser.add_argument("--jobs", type=int, default=2, help="notebook runs at the same time (default 2)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take (default 1800)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.roundings)) != len(args.roundings):
        parser.error("--seeds and --roundings must not repeat")
    for notebook in args.notebooks:
        if not (ROOT / notebook).is_file():
            parser.error(f"--notebooks: no notebook {notebook} under {ROOT}")
    args.seeds = sorted(args.seeds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = args.out.read_text(encoding="utf-8") if args.out.exists() else None
    subset = set(args.notebooks) != set(NOTEBOOKS)
    if subset and previous is not None:
        try:  # refuse before hours of runs, not after
            merge({}, previous, args.seeds, args.roundings)
        except ValueError as error:
            print(f"{args.out}: {error}", file=sys.stderr)
            return 2
    draws = [Draw(seed, rounding) for seed in args.seeds for rounding in args.roundings]
    jobs = [(notebook, draw) for draw in draws for notebook in args.notebooks]
    runs: dict[tuple[str, Draw], Run] = {}
    with (
        concurrent.futures.ThreadPoolExecutor(args.jobs) as pool,
        tqdm(total=len(jobs), unit="run", desc=f"{len(args.notebooks)} notebooks x {len(draws)} draws") as bar,
    ):
        futures = {pool.submit(run_notebook, nb, draw, args.timeout): (nb, draw) for nb, draw in jobs}
        for future in concurrent.futures.as_completed(futures):
            notebook, draw = futures[future]
            run = runs[notebook, draw] = future.result()
            failed = sum(not r["held"] for r in run.records)
            status = f"error: {run.error}" if run.error else "ran"
            bar.write(f"{notebook} ({draw}): {run.seconds:.0f} s, {len(run.records)} claims, {failed} failed, {status}")
            bar.update()
    machine = machine_name()
    sections, missed = {}, 0
    for notebook in args.notebooks:
        lines, notebook_missed = section(notebook, {draw: runs[notebook, draw] for draw in draws}, machine)
        sections[notebook] = "\n".join(lines)
        missed += notebook_missed
    if subset and previous is not None:
        sections = merge(sections, previous, args.seeds, args.roundings)
    report = (
        "\n".join(header(args.seeds, args.roundings))
        + "\n"
        + "\n".join(s.rstrip("\n") + "\n" for s in sections.values())
    )
    args.out.write_text(report, encoding="utf-8")
    times = [run.seconds for run in runs.values()]
    print(f"wrote {args.out}: {len(draws)} draws; one notebook run took {min(times):.0f}-{max(times):.0f} s")
    if missed:
        print(f"{missed} claims (or runs) miss the rule: see the rule column of {args.out}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
