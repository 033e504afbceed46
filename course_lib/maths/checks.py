"""Input checks shared by the maths modules: a clear ValueError/TypeError instead of a torch trace."""

import math
import numbers

import torch


def check_logps(**named: torch.Tensor) -> None:
    """Check that each named log-prob tensor is a floating 1-D tensor and that all shapes agree."""
    shapes = {}
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of log-probabilities, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(
                f"{name} must hold floating-point log-probabilities, got dtype {value.dtype}; "
                "did you pass token ids or counts by mistake?"
            )
        if value.dim() != 1:
            raise ValueError(f"{name} must be 1-D with shape (B,), got shape {tuple(value.shape)}")
        shapes[name] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n}{s}" for n, s in shapes.items())
        raise ValueError(f"log-prob tensors must all have the same shape (B,), got {listed}")
    check_same_device(**named)


def check_same_device(**named: torch.Tensor) -> None:
    """Check that the named tensors live on one device (torch's own error names none of them)."""
    devices = {name: value.device for name, value in named.items() if isinstance(value, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"tensors must all be on one device, got {listed}; move them with .to(device)")


def _number(name: str, value) -> float:
    """A Python float from a real number (int, float, numpy scalar, one-element tensor); TypeError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Check that a hyperparameter is a finite number > 0 (numpy scalars, 0-d tensors count); return it as a float."""
    number = _number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_finite(name: str, value: float, *, minimum: float | None = None) -> float:
    """Check that a hyperparameter is a finite number (and ``>= minimum`` when given); return it as a float."""
    number = _number(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return number
