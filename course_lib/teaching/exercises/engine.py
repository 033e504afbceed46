"""The checking engine behind ``check_dpo_loss``, ``check_ipo_loss`` and ``check_rrhf_loss``.

It knows nothing about any one loss: an :class:`Exercise` brings the library's function (the answer),
its prepared :class:`Case` inputs and its catalogue of known :class:`Mistake` formulas
(:mod:`.pairwise`, :mod:`.ranking`); :func:`run_checker` runs the steps described in
:mod:`course_lib.teaching.exercises` and prints one verdict.
"""

import inspect
import re
import sys
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


class _Finding(str):
    """A diagnosis (the text) that also names the known mistake it reports (``mistake``), for the grader."""

    mistake: str | None = None

    @classmethod
    def of(cls, text: str, mistake: str | None) -> "_Finding":
        finding = cls(text)
        finding.mistake = mistake
        return finding


def _labelled(mistake: str):
    """Decorate a diagnosis function: a plain-text diagnosis it returns is labelled ``mistake`` (for the grader)."""

    def decorate(fn):
        def labelled(*args, **kwargs):
            found = fn(*args, **kwargs)
            if isinstance(found, str) and not isinstance(found, _Finding):
                return _Finding.of(found, mistake)
            return found

        labelled.__name__, labelled.__doc__ = fn.__name__, fn.__doc__
        return labelled

    return decorate


@dataclass(frozen=True)
class Verdict:
    """What a checker decided: ``status`` "ok", "stub" or "wrong"; the ``paragraphs`` it prints.

    ``mistake`` names the known mistake reported (a :class:`Mistake`'s name, "the library's formula" when
    only the reduction or the overflow is off, with " + mean", " + sum" or " + overflow"), or None;
    ``calls_library`` is the library function the learner's function calls (e.g.
    ``"course_lib.maths.losses.dpo_loss"``), or None.
    """

    status: str
    paragraphs: tuple
    mistake: str | None = None
    calls_library: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


def diagnose(fn, ex: Exercise) -> Verdict:
    """The verdict on ``fn`` for exercise ``ex``, without printing it."""
    name = _name_of(fn)
    if not callable(fn):
        return Verdict(
            "wrong",
            (
                f"❌ Pass the function itself, not what it returns: {_checker_call(ex)} (no parentheses after the "
                f"function's name). Got a {type(fn).__name__}.",
            ),
            mistake="not a function",
        )
    try:
        problem = _values_problem(fn, ex) or _gradient_problem(fn, ex)
    except _NotImplemented:
        return Verdict(
            "stub", (f"⏳ {name} is not implemented yet — replace `raise NotImplementedError()` with your code.",)
        )
    called = _library_call(fn, ex)
    if called:
        note = (
            f"{name} calls {called}, the library's own loss: the exercise is to write the formula yourself "
            "(the grader reports it to your instructor)."
        )
        if problem:
            return Verdict(
                "wrong",
                (f"❌ {name} does not match {ex.reference_name} yet.", problem, note),
                getattr(problem, "mistake", None),
                called,
            )
        return Verdict("wrong", (f"❌ {note}",), "calls the library", called)
    if problem:
        return Verdict(
            "wrong", (f"❌ {name} does not match {ex.reference_name} yet.", problem), getattr(problem, "mistake", None)
        )
    return Verdict(
        "ok",
        (f"✅ {name} matches {ex.reference_name} on all {len(ex.cases)} cases ({ex.summary}), gradients included.",),
    )


def run_checker(fn, ex: Exercise) -> bool:
    """Print the verdict on ``fn`` for exercise ``ex``; True when it matches the library."""
    verdict = diagnose(fn, ex)
    _say(*verdict.paragraphs)
    return verdict.passed


def _library_codes() -> dict:
    """The code objects of the library's losses -> their dotted names (what a learner must not call)."""
    from ...maths import losses

    codes = {}
    for name in ("dpo_loss", "ipo_loss", "hinge_loss", "rrhf_loss", "rrhf_loss_terms"):
        fn = getattr(losses, name, None)
        while fn is not None:
            if hasattr(fn, "__code__"):
                codes[fn.__code__] = f"{losses.__name__}.{name}"
            fn = getattr(fn, "__wrapped__", None)
    return codes


def _library_call(fn, ex: Exercise) -> str | None:
    """The library loss that ``fn`` calls (traced on the first case), or None."""
    codes = _library_codes()
    if getattr(inspect.unwrap(fn), "__code__", None) in codes:  # the library's own function: the answer itself
        return None
    found = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes and not found:
            found.append(codes[frame.f_code])

    inputs = ex.cases[0].build()
    tensors = [inputs[name] for name in ex.tensor_names]
    hyper = {k: v for k, v in inputs.items() if k not in ex.tensor_names}
    previous = sys.getprofile()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.setprofile(profile)
            try:
                fn(*tensors, **hyper)
            finally:
                sys.setprofile(previous)
    except Exception:
        pass
    return found[0] if found else None


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
        or _offset_problem(outputs, expected, ex)
        or _low_precision_problem(outputs, expected, ex)
        or _non_finite_problem(outputs, expected, ex)
        or _show_numbers(outputs, expected, tolerances, views, ex)
    )


def _offset_problem(outputs, expected, ex: Exercise) -> str | None:
    """The learner's losses are the library's plus one constant (the same on every pair of every case)."""
    tolerances = [_tolerance(case.build()) for case in ex.cases]
    for out, want in zip(outputs, expected):
        if out.shape != want.shape or not bool(torch.isfinite(out).all()) or not bool(torch.isfinite(want).all()):
            return None
    offset = float((outputs[0].double() - expected[0].double()).flatten().median())
    if abs(offset) < 1e-3:
        return None
    shifted = [want.double() + offset for want in expected]
    if not all(_close(out, want, tol) for out, want, tol in zip(outputs, shifted, tolerances)):
        return None
    return _Finding.of(
        f"Your losses are the library's plus a constant, {offset:.4g} on every {ex.unit} (a + log(2), a stray "
        "term or a shifted target?). A constant changes no gradient, but the loss values are not the "
        f"{ex.reference.__name__}'s, and a log or a table of losses would be off by it: drop it.",
        "constant offset",
    )


def _low_precision_problem(outputs, expected, ex: Exercise) -> str | None:
    """Right to about 3 digits on the float32 cases, and every number a float16 one: a float16 intermediate."""
    close, exact = [], []
    for case, out, want in zip(ex.cases, outputs, expected):
        if case.extreme or _tolerance(case.build())[0] > 1e-3 or out.shape != want.shape:
            continue
        close.append(_close(out, want, (4e-3, 4e-3)))
        exact.append(_close(out, want, (1e-4, 1e-5)))
        half = out.detach().float().half().float()
        if not bool(torch.equal(out.detach().float(), half)):
            return None
    if not close or not all(close) or all(exact):
        return None
    return _Finding.of(
        "Your numbers are right to about 3 significant digits only, and every one of them is a float16 number: "
        "part of your computation runs in float16 (.half(), dtype=torch.float16, or autocast). float16 keeps "
        "11 bits and overflows above 65504: compute in the inputs' dtype.",
        "float16 intermediate",
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
            return None, _Finding.of(
                f"Your function changed its input {name} in place (on the case: {case.name}). A loss must not modify "
                f"its arguments: the caller reuses them, and autograd may fail. Use out-of-place operations, "
                f"`a = a - b` instead of `a -= b`, `a.sub_(b)` or `a[...] = ...`.",
                "changed an input in place",
            )
    return out, _type_problem(out, ex)


def _call_reference(ex: Exercise, inputs: dict) -> torch.Tensor:
    tensors = [inputs[name] for name in ex.tensor_names]
    return ex.reference(*tensors, **{k: v for k, v in inputs.items() if k not in ex.tensor_names})


@_labelled("not a float tensor")
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
    return _Finding.of(message, f"raised {type(exc).__name__}")


@_labelled("wrong signature")
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
                    label = mistake.name + (f" + {reduction}" if reduction != "none" else "")
                    label += " + overflow" if skipped else ""
                    return _Finding.of("\n".join(n for n in notes if n), label)
    return None


@_labelled("wrong shape")
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


@_labelled("inf or NaN")
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


@_labelled("unrecognised numbers")
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


@_labelled("wrong gradients")
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
                kink = _kink_problem(got, want, ex.view(case.build()), name, case)
                if kink:
                    return kink
                return (
                    f"Your losses are right, but the gradients with respect to {name} differ from the library's "
                    f"on the case: {case.name} (yours {format_numbers(got)}, library {format_numbers(want)}). "
                    "Is part of the "
                    "computation detached (.detach(), .item(), .data)?"
                )
    return None


def _kink_problem(got, want, view, name, case) -> str | None:
    """The gradients differ only where h = 0, and are 0 there: a loss with a kink (relu, abs) at h = 0."""
    h = getattr(view, "h", None)
    if h is None or h.shape != got.shape:
        return None
    at_zero = h == 0
    differ = ~torch.isclose(got.double(), want.double(), rtol=1e-4, atol=1e-6)
    if not bool(at_zero.any()) or bool((differ & ~at_zero).any()) or not bool((got[at_zero] == 0).all()):
        return None
    return _Finding.of(
        f"Your losses are right, but their gradient with respect to {name} is 0 at h = 0 (on the case: {case.name}), "
        f"where the library's is {format_numbers(want[at_zero])}. Your loss has no slope where every pair starts, "
        "h = 0; relu and abs have a kink there (torch takes their slope at 0 as 0), so training from the "
        "reference would never move the policy. Write it without the kink, e.g. F.softplus(-z) or -F.logsigmoid(z).",
        "no slope at h = 0",
    )


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
