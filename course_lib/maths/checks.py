"""Input checks shared by the maths modules: a clear ValueError/TypeError instead of a torch trace."""

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


def check_positive(name: str, value: float) -> None:
    """Check that a hyperparameter is a finite positive number."""
    if isinstance(value, torch.Tensor):
        value = float(value)
    if not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
