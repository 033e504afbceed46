"""Checks of Exercise 18.3's training runs (§3-5, bonus 7b) against the expected figures.

A :class:`~course_lib.loop.training.History` records what produced it (``loss``, ``beta``,
``length_normalize``, ``steps``, ``seed``), so a run is checked for the usual slips before its figures are
compared with :mod:`.expected`:

- IPO on summed log-probs (``length_normalize`` not passed on: a callable loss defaults to False);
- the wrong beta, too few steps, another seed, the library's loss (``loss="dpo"``) instead of the learner's;
- a policy that did not start as a copy of the reference (h is not 0 at step 1: a policy reused across the sweep);
- the reference itself trained (the KL stays 0 while the margin moves);
- a policy that never moved (h stays 0 at every step: a loss with no slope at h = 0, where every pair starts).

:func:`diagnose_run` and :func:`diagnose_sweep` return the problems (a code and a message each);
:func:`check_run` and :func:`check_sweep` print them, or a tick, and return True when there are none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engine import _say
from .expected import LENGTH_NORMALIZE, MAIN_RUN, SETTINGS, SUMMED_IPO_RUN, SWEEP, describe, within

FRESH_MARGIN = 0.02  # |h| at step 1 above this: the policy was not a fresh copy of the reference
MOVED_MARGIN = 1e-6  # |h| at every step below this: the policy never moved
LIBRARY_LOSS_NAMES = ("dpo", "ipo", "hinge")
PARTS = ("main", "sweep", "summed")


@dataclass(frozen=True)
class RunProblem:
    """One slip found in a run: a short ``code`` (for the grader's summary) and the ``message`` to print."""

    code: str
    message: str


def _label(loss: str, part: str) -> str:
    name = loss.upper()
    return {"main": name, "sweep": f"{name} sweep", "summed": f"{name} on summed log-probs"}[part]


def diagnose_run(
    history,
    loss: str,
    *,
    part: str = "main",
    beta: float | None = None,
    steps: int | None = None,
    length_normalize: bool | None = None,
    seed: int | None = None,
    loss_fn=None,
    eval_every: int | None = None,
    figures: bool = True,
) -> list[RunProblem]:
    """The slips in one run of ``loss`` ("dpo" or "ipo"); an empty list when it is as expected.

    Args:
        history: what ``train_preference`` returned.
        part: "main" (§3-4: evaluations every ``eval_every`` steps), "sweep" (§5: one run of the sweep, no
            evaluations needed) or "summed" (bonus 7b: IPO on summed log-probs, evaluated at the start and end).
        beta, steps: what the run should have used (defaults: :mod:`.expected`'s for the part).
        length_normalize: default False for DPO and for part "summed", True for IPO.
        seed: the seed the run should have used (None: not checked).
        loss_fn: the learner's loss function; when given, the run must have trained with it.
        eval_every: the steps between evaluations (default ``SETTINGS.eval_every`` for the main runs).
        figures: compare the held-out figures with :mod:`.expected` (only when beta and steps are the
            expected ones: the bounds hold for those settings).
    """
    if loss not in LENGTH_NORMALIZE:
        raise ValueError(f"loss must be 'dpo' or 'ipo', got {loss!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    label = _label(loss, part)
    full_steps = SETTINGS.sweep_steps if part in ("sweep", "summed") else SETTINGS.steps
    beta = SETTINGS.beta if beta is None else beta
    steps = full_steps if steps is None else steps
    if length_normalize is None:
        length_normalize = False if part == "summed" else LENGTH_NORMALIZE[loss]
    eval_every = (SETTINGS.eval_every if part == "main" else steps) if eval_every is None else eval_every

    if not isinstance(history, list) or not hasattr(history, "evals"):
        return [
            RunProblem(
                "not a history",
                f"{label}: return the History that train_preference returns (got {type(history).__name__}).",
            )
        ]
    if not history:
        return [RunProblem("no steps", f"{label}: the History holds no training step.")]
    problems = []
    add = lambda code, message: problems.append(RunProblem(code, f"{label}: {message}"))  # noqa: E731

    recorded = getattr(history, "loss", None)
    if recorded in LIBRARY_LOSS_NAMES:
        add(
            "library loss",
            f"the run trained with the library's loss (loss={recorded!r}), not yours: pass your function, "
            "loss=loss_fn.",
        )
    elif loss_fn is not None and recorded is not None and recorded != getattr(loss_fn, "__name__", recorded):
        add("wrong loss", f"the run trained with {recorded}, not {loss_fn.__name__}: pass loss=loss_fn through.")
    run_beta = getattr(history, "beta", None)
    if run_beta is not None and not math.isclose(run_beta, beta):
        add(
            "wrong beta",
            f"the run trained at beta = {run_beta:g}, not {beta:g}: pass beta=beta through to train_preference "
            "(its default is 0.1).",
        )
    run_normalize = getattr(history, "length_normalize", None)
    if run_normalize is not None and run_normalize != length_normalize:
        if length_normalize:
            add(
                "summed log-probs for IPO",
                "the run fed summed log-probs to the loss (length_normalize=False): IPO uses averaged ones. "
                "Pass length_normalize=length_normalize to train_preference (a callable loss defaults to False).",
            )
        else:
            add(
                "averaged log-probs",
                "the run fed averaged log-probs to the loss (length_normalize=True); this run uses summed ones. "
                "Pass length_normalize=length_normalize through.",
            )
    run_steps = getattr(history, "steps", None)
    if run_steps is not None and run_steps != steps:
        few = run_steps < steps
        add(
            "too few steps" if few else "too many steps",
            f"the run trained for {run_steps} steps, not {steps}: pass steps=steps through to train_preference"
            + (" (its default is 200)." if run_steps == 200 else "."),
        )
    elif len(history) < steps and getattr(history, "interrupted", False):
        add("interrupted", f"the run was interrupted after {len(history)} of {steps} steps: run it to the end.")
    run_seed = getattr(history, "seed", None)
    if seed is not None and run_seed is not None and run_seed != seed:
        add("wrong seed", f"the run used seed={run_seed}, not {seed}: pass seed=SEED.")

    margins = [entry.get("margin", 0.0) for entry in history]
    first = margins[0]
    never_moved = all(abs(m) < MOVED_MARGIN for m in margins)
    if abs(first) > FRESH_MARGIN:
        reuse = "a policy reused from the previous beta? " if part == "sweep" else ""
        add(
            "reused policy",
            f"h is {first:.3g} at step 1, not 0: the policy did not start as a copy of the reference ({reuse}"
            "train a fresh copy.deepcopy(reference) in every run).",
        )
    elif never_moved and len(history) > 1:
        add(
            "no slope at h = 0",
            "the policy never moved: h stays 0 at every step, so the loss gives no gradient there. Your loss has "
            "no slope where every pair starts, h = 0; relu and abs have a kink there (torch takes their slope at "
            "0 as 0). Check the loss with its checker.",
        )

    evals = list(getattr(history, "evals", []) or [])
    wanted_evals = 3 if part == "main" else (2 if part == "summed" else 0)
    if len(evals) < wanted_evals:
        add(
            "no evaluations",
            "return the History of train_preference with held-out evaluations: "
            f"evaluate=make_evaluator(reference, tokenizer, every=eval_every, pairs=test_pairs, "
            f"prompts=test_prompts, ...) (found {len(evals)} evaluations).",
        )
        return problems
    if evals and not never_moved:
        later = [e for e in evals if e.get("step", 0) > 0]
        if later and all(abs(e.get("kl", 1.0)) < 1e-6 for e in later):
            add(
                "trained the reference",
                "the KL stays 0 although the margin moved: the policy *is* the reference. Train "
                "copy.deepcopy(reference) instead (and rerun the setup cell: the reference was trained).",
            )
    if evals and part != "sweep":
        have = sorted(e.get("step") for e in evals)
        want = sorted({0, *range(eval_every, steps + 1, eval_every), steps})
        if have != want and not any(p.code in ("too few steps", "too many steps") for p in problems):
            add(
                "evaluation steps",
                f"evaluations at steps {have}, expected {want}: pass every=eval_every to make_evaluator.",
            )
    settings_right = not any(
        p.code in ("wrong beta", "too few steps", "too many steps", "interrupted", "evaluation steps") for p in problems
    )
    if figures and part != "sweep" and settings_right and math.isclose(beta, SETTINGS.beta) and steps == full_steps:
        expected = MAIN_RUN[loss] if part == "main" else SUMMED_IPO_RUN
        for figure, bound in expected.items():
            value = run_figure(history, figure, beta=beta)
            if value is None:
                add("figure missing", f"no {_figure_words(figure)} in the run.")
            elif not within(value, bound):
                add(
                    "figure off",
                    f"the {_figure_words(figure)} is {value:.3g}; the solution's runs give {describe(bound)} "
                    "(any seed, any machine).",
                )
    return problems


def run_figure(history, figure: str, *, beta: float) -> float | None:
    """The value of one figure of :mod:`.expected` (e.g. ``"kl_at_end"``) in ``history``, or None if absent."""
    evals = {e["step"]: e for e in history.evals if "step" in e}
    end = max(evals) if evals else None
    kind, _, at = figure.rpartition("_at_")
    if figure == "best_accuracy":
        return max((e["preference_accuracy"] for e in evals.values()), default=None)
    if figure.endswith("_from_100"):
        later = [e for s, e in evals.items() if s >= 100]
        if not later or end is None:
            return None
        if figure == "lowest_accuracy_from_100":
            return min(e["preference_accuracy"] for e in later)
        if figure == "lowest_kl_from_100":
            return min(e["kl"] for e in later)
        if figure == "highest_kl_from_100":
            return max(e["kl"] for e in later)
        return max(abs(e["kl"] - evals[end]["kl"]) for e in later)
    if figure == "margin_over_target_at_end":
        value = run_figure(history, "margin_at_end", beta=beta)
        return None if value is None else value * 2 * beta
    step = len(history) if at == "end" else int(at)
    if kind in ("accuracy", "kl"):
        entry = evals.get(end if at == "end" else step)
        key = "preference_accuracy" if kind == "accuracy" else "kl"
        return None if entry is None or key not in entry else float(entry[key])
    if kind in ("margin", "summed_margin"):
        column = "margin" if kind == "margin" else "rewards/margins"
        window = [e[column] for e in history[max(0, step - 20) : step] if column in e]
        if not window:
            return None
        mean = sum(window) / len(window)
        return mean if kind == "margin" else mean / beta
    raise ValueError(f"unknown figure {figure!r}")


def _figure_words(figure: str) -> str:
    words = {
        "lowest_accuracy_from_100": "lowest held-out accuracy from step 100 on",
        "best_accuracy": "best held-out accuracy over the run",
        "lowest_kl_from_100": "lowest held-out KL from step 100 on",
        "highest_kl_from_100": "highest held-out KL from step 100 on",
        "kl_spread_from_100": "largest change of the KL from step 100 to the end",
        "margin_over_target_at_end": "mean margin at the end over IPO's target 1/(2 beta)",
    }
    if figure in words:
        return words[figure]
    kind, _, at = figure.rpartition("_at_")
    what = {
        "accuracy": "held-out accuracy",
        "kl": "held-out KL",
        "margin": "mean margin h (20 steps)",
        "summed_margin": "mean summed margin h (20 steps)",
    }[kind]
    return f"{what} at {'the end' if at == 'end' else 'step ' + at}"


def diagnose_sweep(
    points, loss: str, *, betas=SETTINGS.sweep_betas, figures: bool = True, histories=None, **run_kwargs
) -> list[RunProblem]:
    """The slips in a sweep (``my_sweep``'s list of dicts, one per beta); optionally in its runs' histories.

    ``histories`` (one per beta, in order) are checked with :func:`diagnose_run` (part "sweep", each at its
    beta). The figures are compared with :data:`.expected.SWEEP` when ``figures`` and ``betas`` are the
    expected ones.
    """
    label = f"{loss.upper()} sweep"
    keys = ("beta", "preference_accuracy", "kl", "kl_stderr")
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, dict) for p in points):
        return [RunProblem("sweep format", f"{label}: return a list of dicts {{{', '.join(keys)}}}, one per beta.")]
    problems = []
    if len(points) != len(betas) or any(not math.isclose(p.get("beta", math.nan), b) for p, b in zip(points, betas)):
        got = [p.get("beta") for p in points]
        problems.append(
            RunProblem("sweep betas", f"{label}: one point per beta of {list(betas)}, in order; got betas {got}.")
        )
        return problems
    missing = sorted({k for p in points for k in keys if k not in p})
    if missing:
        return [RunProblem("sweep format", f"{label}: each point needs {list(keys)}; missing {missing}.")]
    for i, history in enumerate(histories or []):
        beta = betas[i] if i < len(betas) else None
        problems.extend(diagnose_run(history, loss, part="sweep", beta=beta, figures=False, **run_kwargs))
    if histories is not None and len(histories) != len(betas):
        problems.append(
            RunProblem(
                "sweep runs", f"{label}: {len(histories)} training runs for {len(betas)} betas: train once per beta."
            )
        )
    if figures and tuple(betas) == tuple(SETTINGS.sweep_betas) and not any(p.code == "too few steps" for p in problems):
        high = []
        for point in points:
            for figure, bound in SWEEP.get((loss, float(point["beta"])), {}).items():
                value = float(point[figure])
                if not within(value, bound):
                    words = "held-out KL" if figure == "kl" else "held-out accuracy"
                    problems.append(
                        RunProblem(
                            "figure off",
                            f"{label}: at beta = {point['beta']:g} the {words} is {value:.3g}; the solution's "
                            f"sweep gives {describe(bound)} (any seed).",
                        )
                    )
                    if figure == "kl" and bound.get("below") is not None and value >= bound["below"]:
                        high.append(point["beta"])
        if high and high[0] != betas[0]:
            problems.append(
                RunProblem(
                    "reused policy",
                    f"{label}: the KL is too high from beta = {high[0]:g} on: does each beta start where the "
                    "previous one stopped? Train a fresh copy.deepcopy(reference) for every beta.",
                )
            )
    return problems


def _print_verdict(problems: list[RunProblem], ok_line: str) -> bool:
    if problems:
        _say(*(f"❌ {p.message}" for p in problems))
        return False
    _say(f"✅ {ok_line}")
    return True


def check_run(history, loss: str, **kwargs) -> bool:
    """Print ✅, or ❌ with each slip of :func:`diagnose_run`; True when the run is as expected.

    Example: ``check_run(dpo_history, "dpo", beta=BETA, steps=STEPS, loss_fn=my_dpo_loss)`` (the notebook's names).
    """
    part = kwargs.get("part", "main")
    problems = diagnose_run(history, loss, **kwargs)
    if problems:
        return _print_verdict(problems, "")
    logps = "averaged" if history.length_normalize else "summed"
    evals = f", {len(history.evals)} evaluations" if history.evals else ""
    full_steps = SETTINGS.sweep_steps if part == "summed" else SETTINGS.steps
    compared = (
        kwargs.get("figures", True)
        and part != "sweep"
        and history.steps == full_steps
        and history.beta == SETTINGS.beta
    )
    figures = "held-out figures within the expected ranges" if compared else "figures not compared"
    return _print_verdict(
        [],
        f"{_label(loss, part)}: {len(history)} steps at beta = {history.beta:g} on {logps} log-probs from a fresh "
        f"copy of the reference{evals}; {figures}.",
    )


def check_sweep(points, loss: str, **kwargs) -> bool:
    """Print ✅, or ❌ with each slip of :func:`diagnose_sweep`; True when the sweep is as expected."""
    problems = diagnose_sweep(points, loss, **kwargs)
    return _print_verdict(problems, f"{loss.upper()} sweep: {len(points)} betas, figures within the expected ranges.")
