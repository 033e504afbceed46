"""The checking engine: it judges a learner's function by its outputs alone, against an :class:`Exercise`
(the library's function, prepared :class:`Case` inputs and a catalogue of known :class:`Mistake` formulas).
"""

import inspect
import re
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch


class Case(NamedTuple):
    """A prepared input. ``build()`` returns fresh inputs: the tensors by name, then the hyperparameters."""

    name: str
    build: Callable[[], dict]
    extreme: bool = False  # margins so large that -log(sigmoid(z)) overflows; inf/NaN there means "overflow"
    check_grad: bool = False  # also compare gradients with the library's on this case


class Mistake(NamedTuple):
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
    grad_names: tuple  # inputs whose gradients must match the library's (the policy's)
    unit: str  # what one loss is for: "pair" or "prompt"
    summary: str  # what the cases cover, for the tick
    hint: str  # the checklist printed when no known mistake matches
    explain: Callable  # view -> a short line shown next to the numbers
    seed: str = ""  # said when the formula is right but, as in the seed, it averages the batch and overflows
    none_inputs: tuple = ()  # tensors passed as None (a reference-free loss's reference log-probs)

    @property
    def reference_name(self) -> str:
        return f"{self.reference.__module__}.{self.reference.__name__}"

    @property
    def short_name(self) -> str:
        return self.reference.__name__

    def inputs(self, case: Case) -> tuple[list, dict]:
        """A case's fresh inputs: (positional tensors, keyword hyperparameters)."""
        built = {**case.build(), **dict.fromkeys(self.none_inputs)}
        return [built[n] for n in self.tensor_names], {k: v for k, v in built.items() if k not in self.tensor_names}

    def view_of(self, case: Case):
        args, kw = self.inputs(case)
        return self.view(dict(zip(self.tensor_names, args)) | kw)


class Finding(NamedTuple):
    """A diagnosis: its ``label`` (a known mistake's name, for the grader) and the ``text`` the learner reads."""

    label: str
    text: str


class Verdict(NamedTuple):
    """``status`` "ok", "stub" or "wrong"; the ``text`` printed; ``mistake``, the label of what was reported
    (" + mean", " + sum", " + overflow" after a right formula whose reduction or overflow is off), or None."""

    status: str
    text: str
    mistake: str | None = None


OVERFLOW_NOTE = (
    "Your function returns inf or NaN on the extreme-margin cases, where the exact loss is finite: "
    "-torch.log(torch.sigmoid(z)) (the seed's dpo_loss and ipo_loss) and torch.log(1 + torch.exp(-z)) "
    "overflow once sigmoid(z) underflows to 0 (z below about -100 in float32, sooner in bfloat16). "
    "Use -F.logsigmoid(z), or F.softplus(-z), which stay finite."
)


class _Stub(Exception):
    """The learner's function raised NotImplementedError on the first case."""


def diagnose(fn, ex: Exercise) -> Verdict:
    """The verdict on ``fn`` for exercise ``ex``, without printing it. Never raises for the learner's mistakes:
    values (in order: exceptions, inputs changed in place, types, known mistakes, shapes, offsets, float16, inf/NaN,
    the numbers), then gradients."""
    name = getattr(fn, "__name__", "")
    name = name if name.isidentifier() else "your function"
    if not callable(fn):
        call, got = f"check_{ex.short_name}(my_{ex.short_name})", type(fn).__name__
        text = f"❌ Pass the function itself, not what it returns: {call} (no parentheses after the function's name)."
        return Verdict("wrong", f"{text} Got a {got}.", "not a function")
    try:
        found = _values_problem(fn, ex) or _gradient_problem(fn, ex)
    except _Stub:
        text = f"⏳ {name} is not implemented yet — replace `raise NotImplementedError()` with your code."
        return Verdict("stub", text)
    if found:
        return Verdict("wrong", f"❌ {name} does not match {ex.reference_name} yet.\n{found.text}", found.label)
    cases = f"all {len(ex.cases)} cases ({ex.summary})"
    return Verdict("ok", f"✅ {name} matches {ex.reference_name} on {cases}, gradients included.")


def print_wrapped(text: str) -> None:
    """Print ``text`` wrapped at 100 columns, except its indented lines (of numbers)."""
    for line in text.split("\n"):
        wrap = not line.startswith(" ")
        print(textwrap.fill(line, 100, break_long_words=False, break_on_hyphens=False) if wrap else line)


def run_checker(fn, ex: Exercise) -> bool:
    """Print the verdict on ``fn`` for exercise ``ex``; True when it matches the library."""
    verdict = diagnose(fn, ex)
    print_wrapped(verdict.text)
    return verdict.status == "ok"


def _values_problem(fn, ex: Exercise) -> Finding | None:
    """Run ``fn`` on every case; a diagnosis, or None when every value matches the library's."""
    outputs = []
    for i, case in enumerate(ex.cases):
        out, found = _call(fn, ex, case, first=i == 0)
        if found:
            return found
        outputs.append(out.detach())
    expected = [ex.reference(*args, **kw) for args, kw in map(ex.inputs, ex.cases)]
    tolerances = [_tolerance(ex.inputs(case)[0]) for case in ex.cases]
    if all(map(_close, outputs, expected, tolerances)):
        return None
    views = [ex.view_of(case) for case in ex.cases]
    return (
        _known_mistake(outputs, views, tolerances, ex)
        or _shape_problem(outputs, expected, ex)
        or _offset_problem(outputs, expected, tolerances, ex)
        or _low_precision_problem(outputs, expected, tolerances, ex)
        or _non_finite_problem(outputs, expected, ex)
        or _show_numbers(outputs, expected, tolerances, views, ex)
    )


def _call(fn, ex: Exercise, case: Case, *, first: bool):
    """Call ``fn`` on a case's inputs: (output, None) or (None, a diagnosis)."""
    tensors, hyper = ex.inputs(case)
    saved = [(n, t, t.clone(), t._version) for n, t in zip(ex.tensor_names, tensors) if t is not None]
    try:
        inspect.signature(fn).bind(*tensors, **hyper)
    except TypeError as exc:
        defaults = inspect.signature(ex.reference).parameters
        keywords = ", ".join(f"{k}={defaults[k].default}" for k in hyper)
        text = (
            f"Your function cannot take the library's arguments ({exc}). Give it the library's signature: "
            f"def my_{ex.short_name}({', '.join(ex.tensor_names)}, *, {keywords})."
        )
        return None, Finding("wrong signature", text)
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*tensors, **hyper)
    except Exception as exc:  # any mistake in the learner's code becomes a diagnosis
        if first and isinstance(exc, NotImplementedError):
            raise _Stub() from exc
        return None, _exception_problem(exc, case)
    for name, t, before, version in saved:
        if t._version != version or t.shape != before.shape or not torch.equal(t, before):
            text = (
                f"Your function changed its input {name} in place (on the case: {case.name}). A loss must not "
                "modify its arguments: the caller reuses them, and autograd may fail. Use out-of-place "
                "operations, `a = a - b` instead of `a -= b`, `a.sub_(b)` or `a[...] = ...`."
            )
            return None, Finding("changed an input in place", text)
    return out, _type_problem(out, ex)


# What a value that is not a float tensor gets told: (test, message); {per} says what to return.
_TYPE_MESSAGES = (
    (
        lambda out: isinstance(out, torch.Tensor),
        "Your function returns a tensor of dtype {dtype}; losses are floating point ({per}). "
        "Look for integer division, a comparison, or .long().",
    ),
    (lambda out: out is None, "Your function returns None: did you forget `return`? Return {per}."),
    (
        lambda out: type(out).__module__.startswith("numpy"),
        "Your function returns a numpy {kind}: stay in torch (numpy cuts the autograd graph, so no "
        "gradient would reach the policy). Return {per}.",
    ),
    (
        lambda out: isinstance(out, float),
        "Your function returns a Python float (.item() or float(...)?): that cuts the autograd graph "
        "and loses the batch. Return {per}.",
    ),
    (lambda out: isinstance(out, tuple), "Your function returns a tuple: return only the losses, {per}."),
    (
        lambda out: isinstance(out, list),
        "Your function returns a Python list: return {per}, built with torch operations "
        "(torch.stack turns a list of tensors into one tensor).",
    ),
    (lambda out: True, "Your function returns a value of type {kind}; return {per}."),
)


def _type_problem(out, ex: Exercise) -> Finding | None:
    """A diagnosis when ``out`` is not a floating-point torch tensor."""
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return None
    message = next(message for test, message in _TYPE_MESSAGES if test(out))
    per, dtype = f"one loss per {ex.unit}, a tensor of shape (B,)", out.dtype if torch.is_tensor(out) else None
    return Finding("not a float tensor", message.format(per=per, dtype=dtype, kind=type(out).__name__))


_EXCEPTION_HINTS = {
    "must be Tensor, not list": "torch functions take tensors, not Python lists: combine a list of tensors with "
    "torch.stack([...]) first (the seed's rrhf_loss has this bug).",
    "BFloat16": "numpy has no bfloat16: stay in torch.",
}


def _exception_problem(exc: Exception, case: Case, where: str = "") -> Finding:
    """'Your function raised TypeError: ... (on the case: ...).' plus a hint for the common ones."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # no memory addresses: the output must be deterministic
    text = text if len(text) <= 200 else text[:197] + "..."
    message = f"Your function raised {type(exc).__name__}" + (f": {text}" if text else "")
    message += f"{where} (on the case: {case.name})."
    message += "".join(f" {hint}" for needle, hint in _EXCEPTION_HINTS.items() if needle in str(exc))
    return Finding(f"raised {type(exc).__name__}", message)


_BATCH_REDUCED = (
    "Your function returns one number for the whole batch (its {}) instead of one loss per {{unit}}: return "
    "the (B,) tensor and let the caller {}."
)
_REDUCTIONS = {
    "none": (lambda t: t, ""),
    "mean": (lambda t: t.mean(), _BATCH_REDUCED.format("mean", "take .mean()")),
    "sum": (lambda t: t.sum(), _BATCH_REDUCED.format("sum", "reduce it")),
}


def _known_mistake(outputs, views, tolerances, ex: Exercise) -> Finding | None:
    """The first known mistake (optionally with a batch reduction) that reproduces every output.

    A second pass leaves out the extreme cases where the learner's output is not finite, and adds the
    overflow note; the library's formula itself is tried as a "mistake" with no message of its own, so that
    a right formula that only overflows or only reduces the batch is recognised too.
    """
    right = Mistake("the library's formula", lambda v: ex.reference(*v.args, **v.kwargs), "")
    overflowed = [i for i, c in enumerate(ex.cases) if c.extreme and not bool(torch.isfinite(outputs[i]).all())]
    values = {}  # (mistake, case) -> the formula's losses, each computed once
    for skipped in ([], overflowed) if overflowed else ([],):
        kept = [i for i in range(len(outputs)) if i not in skipped]
        for mistake in (right, *ex.mistakes):
            for reduction, (reduce, note) in _REDUCTIONS.items():
                if mistake is right and reduction == "none" and not skipped:
                    continue
                for i in kept:
                    if (mistake.name, i) not in values:
                        values[mistake.name, i] = mistake.formula(views[i])
                if all(_close(outputs[i], reduce(values[mistake.name, i]), tolerances[i]) for i in kept):
                    seed = ex.seed if mistake is right and reduction == "mean" and skipped else ""
                    notes = [seed, mistake.message, note.format(unit=ex.unit), OVERFLOW_NOTE if skipped else ""]
                    label = mistake.name + (f" + {reduction}" if reduction != "none" else "")
                    return Finding(label + (" + overflow" if skipped else ""), "\n".join(n for n in notes if n))
    return None


def _shape_problem(outputs, expected, ex: Exercise) -> Finding | None:
    """A diagnosis for the first case whose output has the wrong shape."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if out.shape == want.shape:
            continue
        b, got, per = want.shape[0], tuple(out.shape), f"one loss per {ex.unit}"
        if b == 1 and out.dim() == 0:
            text = (
                "For a batch of size 1 your function returns shape () instead of (1,): keep the batch dimension "
                f"(no .squeeze(), .item() or [0]); return {per}, shape (B,)."
            )
        elif out.dim() == 0:
            text = (
                f"Your function returns a single number (shape ()) for a batch of {b}: return {per}, shape (B,), "
                "and let the caller take the mean."
            )
        elif out.numel() == b:
            text = (
                f"Your function returns shape {got} for a batch of {b}; expected ({b},), {per}. "
                "Drop the extra dimension (keepdim=True, unsqueeze or view?)."
            )
        else:
            text = f"Your function returns shape {got} on the case: {case.name}; expected ({b},), {per}."
        return Finding("wrong shape", text)
    return None


def _offset_problem(outputs, expected, tolerances, ex: Exercise) -> Finding | None:
    """The learner's losses are the library's plus one constant (the same on every pair of every case)."""
    pairs = list(zip(outputs, expected))
    if not all(o.shape == w.shape and bool(torch.isfinite(o).all() & torch.isfinite(w).all()) for o, w in pairs):
        return None
    offset = float((outputs[0].double() - expected[0].double()).flatten().median())
    if abs(offset) < 1e-3 or not all(_close(o, w.double() + offset, t) for (o, w), t in zip(pairs, tolerances)):
        return None
    text = (
        f"Your losses are the library's plus a constant, {offset:.4g} on every {ex.unit} (a + log(2), a stray "
        "term or a shifted target?). A constant changes no gradient, but the loss values are not the "
        f"{ex.short_name}'s, and a log or a table of losses would be off by it: drop it."
    )
    return Finding("constant offset", text)


def _low_precision_problem(outputs, expected, tolerances, ex: Exercise) -> Finding | None:
    """Right to about 3 digits on the float32 cases, and every number a float16 one: a float16 intermediate."""
    cases = zip(ex.cases, outputs, expected, tolerances)
    pairs = [(o, w) for c, o, w, t in cases if not c.extreme and t[0] <= 1e-3 and o.shape == w.shape]
    if not pairs or not all(_close(o, w, (4e-3, 4e-3)) for o, w in pairs):
        return None
    if all(_close(o, w, (1e-4, 1e-5)) for o, w in pairs):
        return None
    if not all(torch.equal(o.float(), o.float().half().float()) for o, _ in pairs):
        return None
    text = (
        "Your numbers are right to about 3 significant digits only, and every one of them is a float16 number: "
        "part of your computation runs in float16 (.half(), dtype=torch.float16, or autocast). float16 keeps "
        "11 bits and overflows above 65504: compute in the inputs' dtype."
    )
    return Finding("float16 intermediate", text)


def _non_finite_problem(outputs, expected, ex: Exercise) -> Finding | None:
    """A diagnosis for the first case where the output has inf/NaN and the library's does not."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if bool(torch.isfinite(out).all()) or not bool(torch.isfinite(want).all()):
            continue
        if case.extreme:
            return Finding("inf or NaN", OVERFLOW_NOTE)
        text = (
            f"Your function returns inf or NaN on the case: {case.name}, where the library's losses are finite "
            f"(yours: {format_numbers(out)}). Look for the log of a number <= 0, a square root of a negative "
            "number, or a division by zero."
        )
        return Finding("inf or NaN", text)
    return None


def _show_numbers(outputs, expected, tolerances, views, ex: Exercise) -> Finding:
    """No known mistake: the numbers of the first case that differs, and the checklist."""
    i = next(i for i in range(len(outputs)) if not _close(outputs[i], expected[i], tolerances[i]))
    library = f"{ex.reference_name} gives"
    text = (
        f"On the case: {ex.cases[i].name} ({ex.explain(views[i])})\n  {library} {format_numbers(expected[i])}\n"
        f"  {'your function gives'.rjust(len(library))} {format_numbers(outputs[i])}\n{ex.hint}"
    )
    return Finding("unrecognised numbers", text)


_DETACHED = (
    "Your losses have the right values but are cut off from the autograd graph, so training would not change the "
    "policy. Don't use .detach(), .item(), .numpy(), .data, torch.no_grad() or torch.tensor(...) on values computed "
    "from the inputs."
)


def _gradient_problem(fn, ex: Exercise) -> Finding | None:
    """Check that gradients reach the policy's log-probs and match the library's (the values are right)."""
    for case in (c for c in ex.cases if c.check_grad):
        (mine, hyper), (ref, _) = ex.inputs(case), ex.inputs(case)
        n = len(ex.grad_names)  # the first n tensors: the policy's
        for t in mine[:n] + ref[:n]:
            t.requires_grad_(True)
        ex.reference(*ref, **hyper).sum().backward()
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(*mine, **hyper)
                if not (isinstance(out, torch.Tensor) and out.requires_grad):
                    return Finding("wrong gradients", _DETACHED)
                out.sum().backward()
        except Exception as exc:
            return _exception_problem(exc, case, " when the inputs require grad")
        for name, got, want in zip(ex.grad_names, mine, ref):
            found = _compare_gradient(got.grad, want.grad, name, case, ex)
            if found:
                return found
    return None


def _compare_gradient(got, want, name: str, case: Case, ex: Exercise) -> Finding | None:
    """A diagnosis when the learner's gradient ``got`` differs from the library's ``want``."""
    if got is None:
        text = (
            f"The gradient does not reach {name}: part of your computation is detached "
            "(.detach(), .item(), .data or torch.tensor(...))."
        )
    elif not bool(torch.isfinite(got).all()):
        text = (
            f"Your losses are right, but the gradient with respect to {name} is inf/NaN on the case: {case.name}. "
            "torch.where (or a clamp) around -torch.log(torch.sigmoid(z)) still differentiates the branch that "
            "overflows; use -F.logsigmoid(z) instead."
        )
    elif _close(got, want, (1e-4, 1e-6)):
        return None
    else:
        return _kink_problem(got, want, name, case, ex) or Finding(
            "wrong gradients",
            f"Your losses are right, but the gradients with respect to {name} differ from the library's on the "
            f"case: {case.name} (yours {format_numbers(got)}, library {format_numbers(want)}). Is part of the "
            "computation detached (.detach(), .item(), .data)?",
        )
    return Finding("wrong gradients", text)


def _kink_problem(got, want, name: str, case: Case, ex: Exercise) -> Finding | None:
    """The gradients differ only where h = 0, and are 0 there: a loss with a kink (relu, abs) at h = 0."""
    h = getattr(ex.view_of(case), "h", None)
    if h is None or h.shape != got.shape:
        return None
    at_zero = h == 0
    differ = ~torch.isclose(got.double(), want.double(), rtol=1e-4, atol=1e-6)
    if not bool(at_zero.any()) or bool((differ & ~at_zero).any()) or not bool((got[at_zero] == 0).all()):
        return None
    text = (
        f"Your losses are right, but their gradient with respect to {name} is 0 at h = 0 (on the case: "
        f"{case.name}), where the library's is {format_numbers(want[at_zero])}. Your loss has no slope where every "
        "pair starts, h = 0; relu and abs have a kink there (torch takes their slope at 0 as 0), so training from "
        "the reference would never move the policy. Write it without the kink, e.g. F.softplus(-z) or "
        "-F.logsigmoid(z)."
    )
    return Finding("no slope at h = 0", text)


def _tolerance(tensors) -> tuple[float, float]:
    """(rtol, atol): loose for bfloat16/float16 inputs (about 3 significant digits), tight for float32."""
    low = any(isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) for t in tensors)
    return (3e-2, 3e-2) if low else (1e-4, 1e-5)


def _close(got: torch.Tensor, want: torch.Tensor, tolerance) -> bool:
    """Same shape and allclose in float64 (inf equals inf, NaN equals NaN)."""
    rtol, atol = tolerance
    return got.shape == want.shape and torch.allclose(
        got.detach().double(), want.detach().double(), rtol=rtol, atol=atol, equal_nan=True
    )


def format_numbers(t: torch.Tensor) -> str:
    """Rounded numbers, 4 significant digits: '[0.576, 0.7194]' or '0.5'."""
    text = [f"{v + 0.0:.4g}" for v in t.detach().double().flatten().tolist()]  # + 0.0 turns -0.0 into 0.0
    return text[0] if t.dim() == 0 else "[" + ", ".join(text) + "]"
