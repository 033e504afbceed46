"""Which device the course runs on."""

import os

import torch


def default_device() -> torch.device:
    """Return ``cuda`` if available, else ``mps``, else ``cpu``.

    The environment variable ``COURSE_DEVICE`` (e.g. ``COURSE_DEVICE=cpu``) overrides the choice.
    """
    requested = os.environ.get("COURSE_DEVICE", "").strip()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(f"COURSE_DEVICE={requested!r} is not a torch device: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("COURSE_DEVICE asks for cuda, but torch.cuda.is_available() is False")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise ValueError("COURSE_DEVICE asks for mps, but torch.backends.mps.is_available() is False")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
