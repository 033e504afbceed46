"""Shared pytest fixtures: generic only (module-specific helpers live in each test file)."""

import pytest
import torch


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with 0, so each test draws the same numbers on every run."""
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread (much faster than OpenMP spinning on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
