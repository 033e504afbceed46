"""Checks of Exercise 18.3's training runs (§3-5, bonus 7b): the usual slips that a History's record of its
settings shows (loss, beta, length_normalize, steps, seed), then its figures against :mod:`.expected`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ...maths.losses import PAIRWISE_LOSSES, loss_spec
from .engine import print_wrapped
from .expected import MAIN_RUN, SETTINGS, SUMMED_RUN, SWEEP_RUNS

FRESH_MARGIN = 0.02  # |h| at step 1 above this: the policy was not a fresh copy of the reference
MOVED_MARGIN = 1e-6  # |h| at every step below this: the policy never moved
PARTS = ("main", "sweep", "summed")
_SETTING_CODES = ("wrong beta", "too few steps", "too many steps", "interrupted", "evaluation steps")


class RunProblem(NamedTuple):
    """One slip found in a run: a short ``code`` (for the grader's summary) and the ``message`` to print."""

    code: str
    message: str


class Want(NamedTuple):
    """What a run should have used."""

    loss: str
    part: str
    beta: float
    steps: int
    eval_every: int
    length_normalize: bool
    seed: int | None
    loss_fn: object

    @property
    def label(self) -> str:
        name = self.loss.upper()
        return {"main": name, "sweep": f"{name} sweep", "summed": f"{name} on summed log-probs"}[self.part]

    @property
    def figures(self):
        """The expected figures of this run, when it uses the settings they hold for; else ()."""
        full_steps = SETTINGS.sweep_steps if self.part == "summed" else SETTINGS.steps
        if self.part == "sweep" or not math.isclose(self.beta, SETTINGS.beta) or self.steps != full_steps:
            return ()
        return (SUMMED_RUN if self.part == "summed" else MAIN_RUN).get(self.loss, ())


def _want(loss, *, part="main", beta=None, steps=None, eval_every=None, seed=None, loss_fn=None) -> Want:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    spec = loss_spec(loss)
    if not isinstance(loss, str):
        raise ValueError(f"loss must be the name of a pairwise loss, one of {sorted(PAIRWISE_LOSSES)}, got {loss!r}")
    steps = steps or (SETTINGS.sweep_steps if part in ("sweep", "summed") else SETTINGS.steps)
    eval_every = eval_every or (SETTINGS.eval_every if part == "main" else steps)
    normalize = spec.average_logps and part != "summed"
    beta = SETTINGS.beta if beta is None else beta
    return Want(spec.name, part, beta, steps, eval_every, normalize, seed, loss_fn)


def diagnose_run(history, loss: str, *, part="main", beta=None, steps=None, eval_every=None, seed=None, loss_fn=None):
    """The slips in one run of ``loss`` (a name of the registry), as :class:`RunProblem` s; [] when there are none.

    ``history`` is what ``train_preference`` returned; ``part`` "main" (§3-4: evaluations every ``eval_every``
    steps), "sweep" (§5: one run of the sweep) or "summed" (bonus 7b: IPO on summed log-probs, evaluated at the start
    and end). ``beta``, ``steps``, ``eval_every``: what the run should have used (default: :mod:`.expected`'s; the
    figures are compared only with those); ``seed`` (None: not checked) and ``loss_fn``, the learner's loss.
    """
    kwargs = dict(part=part, beta=beta, steps=steps, eval_every=eval_every, seed=seed, loss_fn=loss_fn)
    return _run_problems(history, _want(loss, **kwargs))


def _run_problems(history, want: Want) -> list[RunProblem]:
    if not isinstance(history, list) or not hasattr(history, "evals"):
        found = [("not a history", f"return the History that train_preference returns (got {type(history).__name__}).")]
    elif not history:
        found = [("no steps", "the History holds no training step.")]
    else:
        found = _setting_problems(history, want) + _margin_problems(history, want)
        found += _evaluation_problems(history, want, [code for code, _ in found])
        if not any(code in _SETTING_CODES for code, _ in found):
            found += _figure_problems(history, want)
    return [RunProblem(code, f"{want.label}: {message}") for code, message in found]


def _setting_problems(history, want: Want) -> list[tuple[str, str]]:
    """What the History recorded against what the run should have used."""
    found = []
    recorded = getattr(history, "loss", None)
    if recorded in PAIRWISE_LOSSES:
        message = f"the run trained with the library's loss (loss={recorded!r}), not yours: pass your function, "
        found.append(("library loss", message + "loss=loss_fn."))
    elif want.loss_fn is not None and recorded is not None and recorded != getattr(want.loss_fn, "__name__", recorded):
        found.append(
            ("wrong loss", f"the run trained with {recorded}, not {want.loss_fn.__name__}: pass loss=loss_fn through.")
        )
    run_beta = getattr(history, "beta", None)
    if run_beta is not None and not math.isclose(run_beta, want.beta):
        message = f"the run trained at beta = {run_beta:g}, not {want.beta:g}: pass beta=beta through to "
        found.append(("wrong beta", message + "train_preference (its default is 0.1)."))
    normalize = getattr(history, "length_normalize", None)
    if normalize is not None and normalize != want.length_normalize and want.length_normalize:
        message = "the run fed summed log-probs to the loss (length_normalize=False): {} uses averaged ones. Pass "
        message += "length_normalize=length_normalize to train_preference (a callable loss defaults to False)."
        found.append((f"summed log-probs for {want.loss.upper()}", message.format(want.loss.upper())))
    elif normalize is not None and normalize != want.length_normalize:
        message = "the run fed averaged log-probs to the loss (length_normalize=True); this run uses summed ones. "
        found.append(("averaged log-probs", message + "Pass length_normalize=length_normalize through."))
    run_steps = getattr(history, "steps", None)
    if run_steps is not None and run_steps != want.steps:
        default = " (its default is 200)." if run_steps == 200 else "."
        message = (
            f"the run trained for {run_steps} steps, not {want.steps}: pass steps=steps through to train_preference"
        )
        found.append(("too few steps" if run_steps < want.steps else "too many steps", message + default))
    elif len(history) < want.steps and getattr(history, "interrupted", False):
        found.append(
            ("interrupted", f"the run was interrupted after {len(history)} of {want.steps} steps: run it to the end.")
        )
    run_seed = getattr(history, "seed", None)
    if want.seed is not None and run_seed is not None and run_seed != want.seed:
        found.append(("wrong seed", f"the run used seed={run_seed}, not {want.seed}: pass seed=SEED."))
    return found


def _margin_problems(history, want: Want) -> list[tuple[str, str]]:
    """h at step 1 (a fresh copy starts at 0) and over the run (a policy that moves leaves 0)."""
    margins = [entry.get("margin", 0.0) for entry in history]
    if abs(margins[0]) > FRESH_MARGIN:
        reuse = "a policy reused from the previous beta? " if want.part == "sweep" else ""
        message = (
            f"h is {margins[0]:.3g} at step 1, not 0: the policy did not start as a copy of the reference ({reuse}"
        )
        return [("reused policy", message + "train a fresh copy.deepcopy(reference) in every run).")]
    if len(history) > 1 and all(abs(m) < MOVED_MARGIN for m in margins):
        message = (
            "the policy never moved: h stays 0 at every step, so the loss gives no gradient there. Your loss has "
            "no slope where every pair starts, h = 0; relu and abs have a kink there (torch takes their slope at "
            "0 as 0). Check the loss with its checker."
        )
        return [("no slope at h = 0", message)]
    return []


def _evaluation_problems(history, want: Want, codes: list[str]) -> list[tuple[str, str]]:
    """The held-out evaluations: present, at the right steps, and not all at KL 0 (a trained reference)."""
    evals = list(getattr(history, "evals", []) or [])
    wanted = {"main": 3, "summed": 2, "sweep": 0}[want.part]
    if len(evals) < wanted:
        message = (
            "return the History of train_preference with held-out evaluations: evaluate=make_evaluator(reference, "
            "tokenizer, every=eval_every, pairs=test_pairs, prompts=test_prompts, ...) "
            f"(found {len(evals)} evaluations)."
        )
        return [("no evaluations", message)]
    found = []
    later = [e for e in evals if e.get("step", 0) > 0]
    if later and "no slope at h = 0" not in codes and all(abs(e.get("kl", 1.0)) < 1e-6 for e in later):
        message = (
            "the KL stays 0 although the margin moved: the policy *is* the reference. Train "
            "copy.deepcopy(reference) instead (and rerun the setup cell: the reference was trained)."
        )
        found.append(("trained the reference", message))
    have = sorted(e.get("step") for e in evals)
    want_steps = sorted({0, *range(want.eval_every, want.steps + 1, want.eval_every), want.steps})
    if evals and want.part != "sweep" and have != want_steps and not {"too few steps", "too many steps"} & set(codes):
        message = f"evaluations at steps {have}, expected {want_steps}: pass every=eval_every to make_evaluator."
        found.append(("evaluation steps", message))
    return found


def _figure_problems(history, want: Want) -> list[tuple[str, str]]:
    found = []
    for figure in want.figures:
        try:
            value = figure.measure(history)
        except (KeyError, TypeError, ValueError):
            value = None
        if value is None:
            found.append(("figure missing", f"no {figure.words} in the run."))
        elif not figure.holds(value):
            message = f"the {figure.words} is {value:.3g}; the solution's runs give {figure.describe()} "
            message += "(any seed, any machine)."
            found.append(("figure off", message))
    return found


def diagnose_sweep(points, loss: str, *, betas=SETTINGS.sweep_betas, steps=None, seed=None, loss_fn=None):
    """The slips in a sweep: ``my_sweep``'s list of dicts, one per beta, each with ``beta``,
    ``preference_accuracy``, ``kl``, ``kl_stderr`` and ``history`` (its run, checked with :func:`diagnose_run`).
    The figures are compared with :data:`.expected.SWEEP_RUNS` when ``betas`` and ``steps`` are the expected ones."""
    label, keys = f"{loss.upper()} sweep", ("beta", "preference_accuracy", "kl", "kl_stderr", "history")
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, dict) for p in points):
        return [RunProblem("sweep format", f"{label}: return a list of dicts {{{', '.join(keys)}}}, one per beta.")]
    if len(points) != len(betas) or any(not math.isclose(p.get("beta", math.nan), b) for p, b in zip(points, betas)):
        got = [p.get("beta") for p in points]
        return [RunProblem("sweep betas", f"{label}: one point per beta of {list(betas)}, in order; got betas {got}.")]
    missing = sorted({k for p in points for k in keys if k not in p})
    if missing:
        return [RunProblem("sweep format", f"{label}: each point needs {list(keys)}; missing {missing}.")]
    problems = []
    for point in points:
        run = dict(part="sweep", beta=point["beta"], steps=steps, seed=seed, loss_fn=loss_fn)
        problems += diagnose_run(point["history"], loss, **run)
    if tuple(betas) == tuple(SETTINGS.sweep_betas) and (steps or SETTINGS.sweep_steps) == SETTINGS.sweep_steps:
        problems += _sweep_figure_problems(points, loss, label)
    return problems


def _sweep_figure_problems(points, loss: str, label: str) -> list[RunProblem]:
    problems, high = [], []
    for point in points:
        for figure in SWEEP_RUNS.get((loss, float(point["beta"])), ()):
            value = float(figure.measure(point))
            if not figure.holds(value):
                message = f"{label}: at beta = {point['beta']:g} the {figure.words} is {value:.3g}; the solution's "
                problems.append(RunProblem("figure off", message + f"sweep gives {figure.describe()} (any seed)."))
                if figure.words == "held-out KL" and figure.below is not None and value >= figure.below:
                    high.append(point["beta"])
    if high and high[0] != points[0]["beta"]:
        message = f"{label}: the KL is too high from beta = {high[0]:g} on: does each beta start where the previous "
        message += "one stopped? Train a fresh copy.deepcopy(reference) for every beta."
        problems.append(RunProblem("reused policy", message))
    return problems


def _print_verdict(problems: list[RunProblem], ok_line: str) -> bool:
    for line in [f"❌ {p.message}" for p in problems] or [f"✅ {ok_line}"]:
        print_wrapped(line)
    return not problems


def check_run(history, loss: str, **kwargs) -> bool:
    """Print ✅, or ❌ with each slip of :func:`diagnose_run` (same arguments); True when the run is as expected.

    Example: ``check_run(dpo_history, "dpo", beta=BETA, steps=STEPS, loss_fn=my_dpo_loss)`` (the notebook's names).
    """
    want = _want(loss, **kwargs)
    problems = _run_problems(history, want)
    if problems:
        return _print_verdict(problems, "")
    logps = "averaged" if history.length_normalize else "summed"
    evals = f", {len(history.evals)} evaluations" if history.evals else ""
    figures = "held-out figures within the expected ranges" if want.figures else "figures not compared"
    return _print_verdict(
        [],
        f"{want.label}: {len(history)} steps at beta = {history.beta:g} on {logps} log-probs from a fresh copy of "
        f"the reference{evals}; {figures}.",
    )


def check_sweep(points, loss: str, **kwargs) -> bool:
    """Print ✅, or ❌ with each slip of :func:`diagnose_sweep`; True when the sweep is as expected."""
    problems = diagnose_sweep(points, loss, **kwargs)
    return _print_verdict(problems, f"{loss.upper()} sweep: {len(points)} betas, figures within the expected ranges.")
