"""Shared pytest fixtures: generic only (module-specific helpers live in each test file)."""

import pytest
import torch


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with 0, so each test draws the same numbers on every run."""
    return torch.Generator().manual_seed(0)
