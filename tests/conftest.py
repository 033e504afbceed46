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


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say plainly which browser tests were skipped, and how to run them (a learner may have no chromium)."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if "browser" in report.keywords]
    if skipped:
        terminalreporter.write_sep("=", "browser tests skipped", yellow=True)
        terminalreporter.write_line(
            f"SKIPPED {len(skipped)} browser test(s) (JupyterLab's widgets driven in headless Chromium): "
            "/usr/bin/chromium was not found. To run them: apt-get install chromium (as .ci/run does)."
        )
