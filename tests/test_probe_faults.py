"""The fault probe (``scripts/probe_faults.py``) stays runnable: its maths probes, imported and run here,
find no silent wrong result. The whole probe (CLIs, faults, child processes) runs from the command line."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "probe_faults.py"


def test_the_maths_probes_find_no_silent_result():
    spec = importlib.util.spec_from_file_location("probe_faults", SCRIPT)
    probe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = probe  # (dataclasses look their module up there)
    try:
        spec.loader.exec_module(probe)
    finally:
        del sys.modules[spec.name]
    probe.probe_maths()
    kinds = {r.kind for r in probe.RESULTS}
    assert len(probe.RESULTS) > 200
    assert kinds <= {"clear", "ok"}, [r for r in probe.RESULTS if r.kind not in ("clear", "ok")]
