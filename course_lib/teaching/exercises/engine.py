"""The checking engine behind ``check_dpo_loss``, ``check_ipo_loss`` and ``check_rrhf_loss``.

It knows nothing about any one loss: an :class:`Exercise` brings the library's function (the answer),
its prepared :class:`Case` inputs and its catalogue of known :class:`Mistake` formulas
(:mod:`.pairwise`, :mod:`.ranking`); :func:`run_checker` runs the steps described in
:mod:`course_lib.teaching.exercises` and prints one verdict.
"""

import inspect
import re
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """A prepared input. ``build()`` returns fresh inputs: the tensors by name, then the hyperparameters."""

    name: str
    build: Callable[[], dict]
    extreme: bool = False  # margins so large that -log(sigmoid(z)) overflows; inf/NaN there means "overflow"
    check_grad: bool = False  # also compare gradients with the library's on this case


@dataclass(frozen=True)
class Mistake:
    """A known mistake: ``formula(view)`` reproduces it on a case's inputs; ``message`` says what to change."""

    name: str
    formula: Callable
    message: str


@dataclass(frozen=True)
class Exercise:
    """Everything one checker needs."""

    reference: Callable  # the library's function: the answer
    tensor_names: tuple  # its positional arguments, in order; the other inputs are keywords
    cases: tuple
    mistakes: tuple
    view: type  # wraps a case's inputs (in float64) for the mistake formulas
    grad_names: tuple  # inputs whose gradients must match the library's
    unit: str  # what one loss is for: "pair" or "prompt"
    summary: str  # what the cases cover, for the tick
    hint: str  # the checklist printed when no known mistake matches
    explain: Callable  # view -> a short line shown next to the numbers
    seed: str = ""  # said when the formula is right but, as in the seed, it averages the batch and overflows

    @property
    def reference_name(self) -> str:
        return f"{self.reference.__module__}.{self.reference.__name__}"


_OVERFLOW_NOTE = (
    "Your function returns inf or NaN on the extreme-margin cases, where the exact loss is finite: "
    "-torch.log(torch.sigmoid(z)) (the seed's dpo_loss and ipo_loss) and torch.log(1 + torch.exp(-z)) "
    "overflow once sigmoid(z) underflows to 0 (z below about -100 in float32, sooner in bfloat16). "
    "Use -F.logsigmoid(z), or F.softplus(-z), which stay finite."
)


# --------------------------------------------------------------------------------------------------
# The checking itself
# --------------------------------------------------------------------------------------------------


class _NotImplemented(Exception):
    """Raised inside the checker when the learner's function raises NotImplementedError on the first case."""


def run_checker(fn, ex: Exercise) -> bool:
    """Print the verdict on ``fn`` for exercise ``ex``; True when it matches the library."""
    name = _name_of(fn)
    if not callable(fn):
        _say(
            f"❌ Pass the function itself, not what it returns: {_checker_call(ex)} (no parentheses after the "
            f"function's name). Got a {type(fn).__name__}."
        )
        return False
    try:
        problem = _values_problem(fn, ex) or _gradient_problem(fn, ex)
    except _NotImplemented:
        _say(f"⏳ {name} is not implemented yet — replace `raise NotImplementedError()` with your code.")
        return False
    if problem:
        _say(f"❌ {name} does not match {ex.reference_name} yet.", problem)
        return False
    _say(f"✅ {name} matches {ex.reference_name} on all {len(ex.cases)} cases ({ex.summary}), gradients included.")
    return True


def _values_problem(fn, ex: Exercise) -> str | None:
    """Run ``fn`` on every case; return a diagnosis, or None when every value matches the library's."""
    outputs = []
    for i, case in enumerate(ex.cases):
        inputs = case.build()
        out, problem = _call(fn, ex, inputs, case, first=(i == 0))
        if problem:
            return problem
        outputs.append(out.detach())
    expected = [_call_reference(ex, case.build()) for case in ex.cases]
    tolerances = [_tolerance(case.build()) for case in ex.cases]
    if all(_close(out, want, tol) for out, want, tol in zip(outputs, expected, tolerances)):
        return None
    views = [ex.view(case.build()) for case in ex.cases]
    return (
        _known_mistake(outputs, views, tolerances, ex)
        or _shape_problem(outputs, expected, ex)
        or _non_finite_problem(outputs, expected, ex)
        or _show_numbers(outputs, expected, tolerances, views, ex)
    )


def _call(fn, ex: Exercise, inputs: dict, case: Case, *, first: bool):
    """Call ``fn`` on a case's inputs. Returns (output, None) or (None, a diagnosis)."""
    tensors = [inputs[name] for name in ex.tensor_names]
    hyper = {k: v for k, v in inputs.items() if k not in ex.tensor_names}
    saved = [(t.clone(), t._version) for t in tensors]
    problem = _signature_problem(fn, tensors, hyper, ex)
    if problem:
        return None, problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*tensors, **hyper)
    except NotImplementedError as exc:
        if first:
            raise _NotImplemented() from exc
        return None, _exception_problem(exc, case, ex)
    except Exception as exc:  # any mistake in the learner's code becomes a diagnosis
        return None, _exception_problem(exc, case, ex)
    for name, t, (before, version) in zip(ex.tensor_names, tensors, saved):
        if t._version != version or t.shape != before.shape or not torch.equal(t, before):
            return None, (
                f"Your function changed its input {name} in place (on the case: {case.name}). A loss must not modify "
                f"its arguments: the caller reuses them, and autograd may fail. Use out-of-place operations, "
                f"`a = a - b` instead of `a -= b`, `a.sub_(b)` or `a[...] = ...`."
            )
    return out, _type_problem(out, ex)


def _call_reference(ex: Exercise, inputs: dict) -> torch.Tensor:
    tensors = [inputs[name] for name in ex.tensor_names]
    return ex.reference(*tensors, **{k: v for k, v in inputs.items() if k not in ex.tensor_names})


def _type_problem(out, ex: Exercise) -> str | None:
    """A diagnosis when ``out`` is not a floating-point torch tensor."""
    per = f"one loss per {ex.unit}, a tensor of shape (B,)"
    if isinstance(out, torch.Tensor):
        if out.is_floating_point():
            return None
        return (
            f"Your function returns a tensor of dtype {out.dtype}; losses are floating point ({per}). "
            "Look for integer division, a comparison, or .long()."
        )
    if out is None:
        return f"Your function returns None: did you forget `return`? Return {per}."
    kind = type(out).__name__
    if type(out).__module__.startswith("numpy"):
        return (
            f"Your function returns a numpy {kind}: stay in torch (numpy cuts the autograd graph, so no "
            f"gradient would reach the policy). Return {per}."
        )
    if isinstance(out, float):
        return (
            f"Your function returns a Python float (.item() or float(...)?): that cuts the autograd graph "
            f"and loses the batch. Return {per}."
        )
    if isinstance(out, tuple):
        return f"Your function returns a tuple: return only the losses, {per}."
    if isinstance(out, list):
        return (
            f"Your function returns a Python list: return {per}, built with torch operations "
            "(torch.stack turns a list of tensors into one tensor)."
        )
    return f"Your function returns a value of type {kind}; return {per}."


_EXCEPTION_HINTS = (
    (
        "must be Tensor, not list",
        "torch functions take tensors, not Python lists: combine a list of tensors with "
        "torch.stack([...]) first (the seed's rrhf_loss has this bug).",
    ),
    ("BFloat16", "numpy has no bfloat16: stay in torch."),
)


def _exception_problem(exc: Exception, case: Case, ex: Exercise) -> str:
    """'Your function raised TypeError: ... on the case: ...' plus a hint for the common ones."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # no memory addresses: the output must be deterministic
    text = text if len(text) <= 200 else text[:197] + "..."
    message = (
        f"Your function raised {type(exc).__name__}" + (f": {text}" if text else "") + f" (on the case: {case.name})."
    )
    for needle, hint in _EXCEPTION_HINTS:
        if needle in str(exc):
            message += " " + hint
    return message


def _signature_problem(fn, tensors, hyper, ex: Exercise) -> str | None:
    """A diagnosis when ``fn`` cannot take the library's arguments (four tensors, then keywords)."""
    try:
        inspect.signature(fn).bind(*tensors, **hyper)
    except TypeError as exc:
        defaults = inspect.signature(ex.reference).parameters
        keywords = ", ".join(f"{k}={defaults[k].default}" for k in hyper)
        return (
            f"Your function cannot take the library's arguments ({exc}). Give it the library's signature: "
            f"def my_{ex.reference.__name__}({', '.join(ex.tensor_names)}, *, {keywords})."
        )
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    return None


_REDUCTIONS = {
    "none": (lambda t: t, ""),
    "mean": (
        lambda t: t.mean(),
        "Your function returns one number for the whole batch (its mean) instead of one "
        "loss per {unit}: return the (B,) tensor and let the caller take .mean().",
    ),
    "sum": (
        lambda t: t.sum(),
        "Your function returns one number for the whole batch (its sum) instead of one "
        "loss per {unit}: return the (B,) tensor and let the caller reduce it.",
    ),
}


def _known_mistake(outputs, views, tolerances, ex: Exercise) -> str | None:
    """The first known mistake (optionally with a batch reduction) that reproduces every output.

    A second pass leaves out the extreme cases where the learner's output is not finite, and then adds the
    overflow note; the library's formula itself is tried as a "mistake" with no message of its own, so that
    a right formula that only overflows or only reduces the batch is recognised too.
    """
    right = Mistake("the library's formula", lambda v: ex.reference(*v.args, **v.kwargs), "")
    overflowed = [i for i, case in enumerate(ex.cases) if case.extreme and not bool(torch.isfinite(outputs[i]).all())]
    values = {}  # (mistake, case) -> the formula's losses, each computed once

    def value(mistake, i):
        if (mistake.name, i) not in values:
            values[mistake.name, i] = mistake.formula(views[i])
        return values[mistake.name, i]

    for skipped in ([], overflowed) if overflowed else ([],):
        kept = [i for i in range(len(outputs)) if i not in skipped]
        for mistake in (right, *ex.mistakes):
            for reduction, (reduce, note) in _REDUCTIONS.items():
                if mistake is right and reduction == "none" and not skipped:
                    continue
                if all(_close(outputs[i], reduce(value(mistake, i)), tolerances[i]) for i in kept):
                    seed = ex.seed if mistake is right and reduction == "mean" and skipped else ""
                    notes = [seed, mistake.message, note.format(unit=ex.unit), _OVERFLOW_NOTE if skipped else ""]
                    return "\n".join(n for n in notes if n)
    return None


def _shape_problem(outputs, expected, ex: Exercise) -> str | None:
    """A diagnosis for the first case whose output has the wrong shape."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if out.shape == want.shape:
            continue
        b = want.shape[0]
        got = tuple(out.shape)
        if b == 1 and out.dim() == 0:
            return (
                f"For a batch of size 1 your function returns shape () instead of (1,): keep the batch dimension "
                f"(no .squeeze(), .item() or [0]); return one loss per {ex.unit}, shape (B,)."
            )
        if out.dim() == 0:
            return (
                f"Your function returns a single number (shape ()) for a batch of {b}: return one loss per "
                f"{ex.unit}, shape (B,), and let the caller take the mean."
            )
        if out.numel() == b:
            return (
                f"Your function returns shape {got} for a batch of {b}; expected ({b},), one loss per {ex.unit}. "
                "Drop the extra dimension (keepdim=True, unsqueeze or view?)."
            )
        return f"Your function returns shape {got} on the case: {case.name}; expected ({b},), one loss per {ex.unit}."
    return None


def _non_finite_problem(outputs, expected, ex: Exercise) -> str | None:
    """A diagnosis for the first case where the output has inf/NaN and the library's does not."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if bool(torch.isfinite(out).all()) or not bool(torch.isfinite(want).all()):
            continue
        if case.extreme:
            return _OVERFLOW_NOTE
        return (
            f"Your function returns inf or NaN on the case: {case.name}, where the library's losses are "
            f"finite (yours: {format_numbers(out)}). Look for the log of a number <= 0, "
            "a square root of a negative number, "
            "or a division by zero."
        )
    return None


def _show_numbers(outputs, expected, tolerances, views, ex: Exercise) -> str:
    """No known mistake: show the numbers of the first case that differs, and the checklist."""
    for case, out, want, tol, view in zip(ex.cases, outputs, expected, tolerances, views):
        if not _close(out, want, tol):
            library = f"{ex.reference_name} gives"
            return (
                f"On the case: {case.name} ({ex.explain(view)})\n"
                f"  {library} {format_numbers(want)}\n"
                f"  {'your function gives'.rjust(len(library))} {format_numbers(out)}\n"
                f"{ex.hint}"
            )
    return ex.hint  # not reached: some case differs


def _gradient_problem(fn, ex: Exercise) -> str | None:
    """Check that gradients reach the policy's log-probs and match the library's (values are already right)."""
    for case in (c for c in ex.cases if c.check_grad):
        mine, ref = case.build(), case.build()
        for name in ex.grad_names:
            mine[name].requires_grad_(True)
            ref[name].requires_grad_(True)
        _call_reference(ex, ref).sum().backward()
        tensors = [mine[name] for name in ex.tensor_names]
        hyper = {k: v for k, v in mine.items() if k not in ex.tensor_names}
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(*tensors, **hyper)
                if not (isinstance(out, torch.Tensor) and out.requires_grad):
                    return (
                        "Your losses have the right values but are cut off from the autograd graph, so training "
                        "would not change the policy. Don't use .detach(), .item(), .numpy(), .data, "
                        "torch.no_grad() or torch.tensor(...) on values computed from the inputs."
                    )
                out.sum().backward()
        except Exception as exc:
            return _exception_problem(exc, case, ex).replace(
                " (on the case:", " when the inputs require grad (on the case:"
            )
        for name in ex.grad_names:
            got, want = mine[name].grad, ref[name].grad
            if got is None:
                return (
                    f"The gradient does not reach {name}: part of your computation is detached "
                    "(.detach(), .item(), .data or torch.tensor(...))."
                )
            if not bool(torch.isfinite(got).all()):
                return (
                    f"Your losses are right, but the gradient with respect to {name} is inf/NaN on the case: "
                    f"{case.name}. torch.where (or a clamp) around -torch.log(torch.sigmoid(z)) still "
                    "differentiates the branch that overflows; use -F.logsigmoid(z) instead."
                )
            if not _close(got, want, (1e-4, 1e-6)):
                return (
                    f"Your losses are right, but the gradients with respect to {name} differ from the library's "
                    f"on the case: {case.name} (yours {format_numbers(got)}, library {format_numbers(want)}). "
                    "Is part of the "
                    "computation detached (.detach(), .item(), .data)?"
                )
    return None


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _tolerance(inputs: dict) -> tuple[float, float]:
    """(rtol, atol): loose for bfloat16/float16 inputs (about 3 significant digits), tight for float32."""
    low = any(isinstance(v, torch.Tensor) and v.dtype in (torch.bfloat16, torch.float16) for v in inputs.values())
    return (3e-2, 3e-2) if low else (1e-4, 1e-5)


def _close(got: torch.Tensor, want: torch.Tensor, tolerance) -> bool:
    """Same shape and allclose in float64 (inf equals inf, NaN equals NaN)."""
    if got.shape != want.shape:
        return False
    rtol, atol = tolerance
    return torch.allclose(got.detach().double(), want.detach().double(), rtol=rtol, atol=atol, equal_nan=True)


def format_numbers(t: torch.Tensor) -> str:
    """Rounded numbers, 4 significant digits: '[0.576, 0.7194]' or '0.5'."""
    values = t.detach().double().flatten().tolist()
    text = [f"{v + 0.0:.4g}" for v in values]  # + 0.0 turns -0.0 into 0.0
    return text[0] if t.dim() == 0 else "[" + ", ".join(text) + "]"


def _name_of(fn) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else "your function"


def _checker_call(ex: Exercise) -> str:
    return f"check_{ex.reference.__name__}(my_{ex.reference.__name__})"


def _say(*paragraphs: str) -> None:
    """Print paragraphs wrapped at 100 columns; lines that start with spaces (numbers) are kept as they are."""
    for paragraph in paragraphs:
        for line in paragraph.split("\n"):
            if line.startswith(" "):
                print(line)
            else:
                print(textwrap.fill(line, width=100, break_long_words=False, break_on_hyphens=False))
