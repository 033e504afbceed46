"""Which device the course runs on: the one resolver of a device name (argument, option or variable)."""

import os

import torch


def resolve_device(requested: str | torch.device | None = None, *, name: str = "device") -> torch.device:
    """The torch device for ``requested``; None means :func:`default_device`.

    Raises ValueError naming ``name`` (the argument, the CLI option or the variable) for a name torch does
    not know, or a device this machine does not have.
    """
    if requested is None:
        return default_device()
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{name} {requested!r} is not a torch device ({str(err).splitlines()[0]})") from None
    mps = getattr(torch.backends, "mps", None)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {requested!r}: torch.cuda.is_available() is False on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {requested!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"{name} {requested!r}: torch.backends.mps.is_available() is False on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} {requested!r}: use cpu, cuda, cuda:N or mps")
    return device


def default_device() -> torch.device:
    """``$COURSE_DEVICE`` when set (checked as above), else ``cuda`` if available, else ``mps``, else ``cpu``."""
    requested = os.environ.get("COURSE_DEVICE", "").strip()
    if requested:
        return resolve_device(requested, name="COURSE_DEVICE")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
