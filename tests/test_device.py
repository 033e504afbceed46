"""course_lib.loop.device: default_device() and the COURSE_DEVICE override."""

import pytest
import torch

from course_lib.loop.device import default_device, resolve_device
from course_lib.loop.training import train_preference


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def test_default_device_without_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    device = default_device()
    assert isinstance(device, torch.device)
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif mps_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available() or mps_available(), reason="a CPU-only machine")
def test_default_device_is_cpu_here(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert default_device() == torch.device("cpu")


@pytest.mark.parametrize("value", ["cpu", " cpu ", "cpu\n"])
def test_course_device_cpu_is_honoured(monkeypatch, value):
    monkeypatch.setenv("COURSE_DEVICE", value)
    assert default_device() == torch.device("cpu")


def test_empty_course_device_means_no_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "")
    empty = default_device()
    monkeypatch.delenv("COURSE_DEVICE")
    assert empty == default_device()


@pytest.mark.parametrize("value", ["gpu", "cpuu", "cuda:x", "banana"])
def test_invalid_course_device_raises(monkeypatch, value):
    monkeypatch.setenv("COURSE_DEVICE", value)
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        default_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_raises(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        default_device()


@pytest.mark.skipif(mps_available(), reason="needs a machine without MPS")
def test_unavailable_mps_raises(monkeypatch):
    """Like cuda: asking for a backend this machine lacks fails at once, not at the first tensor moved."""
    monkeypatch.setenv("COURSE_DEVICE", "mps")
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        default_device()


@pytest.mark.parametrize("value", ["foo", "tpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_a_device_this_machine_lacks_is_named_before_any_work(value):
    with pytest.raises(ValueError, match=rf"device '{value}'"):
        resolve_device(value)
    policy = torch.nn.Linear(1, 1)  # never reached: the device is checked with the other arguments
    with pytest.raises(ValueError, match=rf"^device '{value}'"):
        train_preference(policy, policy, [{"prompt": "p", "chosen": " a", "rejected": " b"}], device=value)
