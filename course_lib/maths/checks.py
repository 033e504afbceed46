"""Input checks for the library's public functions: a TypeError or ValueError naming the argument instead
of a trace from deep inside torch. Public entry points call them once; internal helpers trust their callers.
"""

import math
import numbers

import torch

_KINDS = {  # kind -> (test on a tensor, what the error says it must hold)
    "float": (lambda t: t.is_floating_point(), "floating-point values"),
    "int": (lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool), "integers"),
    "real": (lambda t: not (t.is_complex() or t.dtype == torch.bool), "real numbers (not bool or complex)"),
}


def check_tensor(name: str, value, shape: str, kind: str = "float") -> None:
    """``value`` is a torch.Tensor with as many dims as ``shape`` names (e.g. "(B, K)"), holding ``kind``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}")
    accepts, holds = _KINDS[kind]
    if not accepts(value):
        raise TypeError(f"{name} must hold {holds}, got dtype {value.dtype}")
    n_dims = len([dim for dim in shape.strip("()").split(",") if dim.strip()])  # "(B,)" -> 1, "(B, K)" -> 2
    if value.dim() != n_dims:
        raise ValueError(f"{name} must be {n_dims}-D with shape {shape}, got {tuple(value.shape)}")


def check_same_shape(**named: torch.Tensor) -> None:
    """The named tensors all have one shape (broadcasting would hide a mismatch)."""
    if len({tuple(value.shape) for value in named.values()}) > 1:
        listed = ", ".join(f"{name}{tuple(value.shape)}" for name, value in named.items())
        raise ValueError(f"{', '.join(named)} must have the same shape, got {listed}")


def check_same_device(**named: torch.Tensor) -> None:
    """The named tensors live on one device (torch's own error names none of them)."""
    if len({value.device for value in named.values()}) > 1:
        listed = ", ".join(f"{name} on {value.device}" for name, value in named.items())
        raise ValueError(f"tensors must all be on one device, got {listed}; move them with .to(device)")


def check_logps(**named: torch.Tensor) -> None:
    """Each named tensor holds floating-point log-probs of shape (B,), all of one shape and on one device."""
    for name, value in named.items():
        check_tensor(name, value, "(B,)")
    check_same_shape(**named)
    check_same_device(**named)


def _number(name: str, value) -> float:
    """A Python float from a real number (int, float, numpy scalar, one-element tensor); TypeError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """A finite number > 0 (numpy scalars, 0-d tensors count), returned as a float."""
    number = _number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_finite(name: str, value, *, minimum: float | None = None) -> float:
    """A finite number (and ``>= minimum`` when given), returned as a float."""
    number = _number(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return number


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """A whole number (int or numpy integer; not bool, float or str) ``>= minimum``, returned as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices: tuple) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_record(where: str, record, fields: tuple[str, ...], hint: str = "") -> dict:
    """A dict holding every one of ``fields``; the error names ``where`` (e.g. "pairs[3]", "file, line 7")."""
    if not isinstance(record, dict):
        raise TypeError(f"{where} must be a dict with {', '.join(fields)}, got {type(record).__name__}")
    missing = [field for field in fields if field not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; expected {list(fields)}{hint}")
    return record


def check_candidates(candidate_logps, candidate_lengths, candidate_rewards=None) -> None:
    """RRHF's (B, K) inputs: floating log-probs, lengths that are finite and > 0, and (when given) real
    rewards without NaN for K >= 2 candidates; one shape, one device."""
    named = {"candidate_logps": candidate_logps, "candidate_lengths": candidate_lengths}
    if candidate_rewards is not None:
        named["candidate_rewards"] = candidate_rewards
    for name, value in named.items():
        check_tensor(name, value, "(B, K)", "float" if name == "candidate_logps" else "real")
    check_same_shape(**named)
    check_same_device(**named)
    bad = ~(candidate_lengths > 0) | ~candidate_lengths.isfinite()  # NaN fails "> 0" too
    if bool(bad.any()):
        value = candidate_lengths[bad][0].item()
        raise ValueError(f"candidate_lengths must all be finite and > 0 (numbers of response tokens), got {value}")
    if candidate_rewards is None:
        return
    if candidate_logps.shape[1] < 2:
        raise ValueError(f"RRHF ranks K >= 2 candidates per prompt, got K = {candidate_logps.shape[1]}")
    if bool(candidate_rewards.isnan().any()):
        rows = torch.nonzero(candidate_rewards.isnan().any(dim=1)).flatten().tolist()
        raise ValueError(
            f"candidate_rewards hold NaN (prompts {rows}): a NaN reward has no rank, and argmax would make it "
            "the best candidate"
        )


def check_logits_and_labels(labels, **logits) -> None:
    """Each named logits tensor is floating point, (B, T, V) with V >= 1, all of one shape; ``labels`` holds
    integer token ids of shape (B, T); all on one device."""
    for name, value in logits.items():
        check_tensor(name, value, "(B, T, V)")
        if value.shape[-1] == 0:
            raise ValueError(f"{name} must have a vocabulary of V >= 1 tokens, got shape {tuple(value.shape)}")
    check_same_shape(**logits)
    check_tensor("labels", labels, "(B, T)", "int")
    first = next(iter(logits.values()))
    if labels.shape != first.shape[:2]:
        raise ValueError(f"labels must have shape (B, T) = {tuple(first.shape[:2])}, got {tuple(labels.shape)}")
    check_same_device(**logits, labels=labels)
