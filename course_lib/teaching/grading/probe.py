"""What the grader runs inside a submission's kernel, after the notebook: the checkers on the learner's functions,
and the checks of the runs. Each prints one line, ``MARKER`` + JSON: the grader reads that, never the notebook's output.
"""

from __future__ import annotations

import contextlib
import io
import json
import traceback
from functools import partial

from ...maths.losses import loss_spec
from ..exercises import DPO_EXERCISE, IPO_EXERCISE, RRHF_EXERCISE
from ..exercises.engine import diagnose
from ..exercises.runs import diagnose_run, diagnose_sweep

MARKER = "COURSE_GRADE_FINDINGS "
EXERCISES = {"dpo": DPO_EXERCISE, "ipo": IPO_EXERCISE, "rrhf": RRHF_EXERCISE}


def check_losses(namespace: dict) -> None:
    """Each checker on the learner's ``my_dpo_loss``, ``my_ipo_loss`` and ``my_rrhf_loss``."""
    found = {}
    for key, exercise in EXERCISES.items():
        fn = namespace.get(f"my_{key}_loss")
        if fn is None:
            found[key] = {"status": "missing", "mistake": "missing", "text": f"my_{key}_loss is not defined."}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            verdict = diagnose(fn, exercise)
        found[key] = {"status": verdict.status, "mistake": verdict.mistake, "text": verdict.text}
    print(MARKER + json.dumps({"losses": found}))


def _call(fn, *args, **kwargs):
    """Call a learner's function (or a partial of one): (result, None) or (None, a [code, message] problem)."""
    name = getattr(getattr(fn, "func", fn), "__name__", "the function")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, ["not implemented", f"{name} is not implemented yet."]
    except Exception as exc:
        line = traceback.extract_tb(exc.__traceback__)[-1].lineno
        return None, ["raised", f"{name} raised {type(exc).__name__}: {exc} (line {line})"[:400]]


def _check(value, loss_ok: bool, make, diagnose_value) -> dict:
    """One run part: the notebook's ``value``, else what ``make()`` returns (when the loss passed)."""
    result = {"found": False, "problems": [], "made_by_grader": False}
    if value is None and loss_ok:
        result["made_by_grader"] = True
        value, problem = _call(make)
        result["problems"] += [problem] if problem else []
    if value is not None:
        result["found"] = True
        result["problems"] += [[p.code, p.message] for p in diagnose_value(value)]
    return result


def check_runs(namespace: dict, settings: dict, losses_ok: dict) -> None:
    """Check the §3 runs, the §5 sweeps and the 7b run: the values the notebook kept (``dpo_history``, ``dpo_sweep``,
    ``ipo_summed_history``, ...), or where it left None, what the learner's function returns when the loss passed.

    ``settings``: beta, steps, eval_every, sweep_betas, sweep_steps, seed (what the runs must use);
    ``losses_ok``: {"dpo": bool, "ipo": bool}, whether each loss passed its checker.
    """
    s, ns, out = settings, namespace, {}
    train, sweep, summed = (ns.get(n, _undefined(n)) for n in ("my_train_and_measure", "my_sweep", "my_ipo_summed"))
    run = dict(beta=s["beta"], steps=s["steps"], eval_every=s["eval_every"])
    swept = dict(betas=s["sweep_betas"], steps=s["sweep_steps"])
    for key in ("dpo", "ipo"):
        fn, ok, averaged = ns.get(f"my_{key}_loss"), losses_ok.get(key, False), loss_spec(key).average_logps
        checked = dict(loss=key, seed=s["seed"], loss_fn=fn)
        make, check = partial(train, fn, length_normalize=averaged, **run), partial(diagnose_run, **run, **checked)
        out[f"{key}_run"] = _check(ns.get(f"{key}_history"), ok, make, check)
        make, check = (
            partial(sweep, fn, length_normalize=averaged, **swept),
            partial(diagnose_sweep, **swept, **checked),
        )
        out[f"{key}_sweep"] = _check(ns.get(f"{key}_sweep"), ok, make, check)
    checked = dict(loss="ipo", part="summed", beta=s["beta"], seed=s["seed"], loss_fn=ns.get("my_ipo_loss"))
    check = partial(diagnose_run, steps=s["sweep_steps"], **checked)
    ok = losses_ok.get("ipo", False)
    out["summed_run"] = _check(ns.get("ipo_summed_history"), ok, partial(summed, steps=s["sweep_steps"]), check)
    print(MARKER + json.dumps({"runs": out}, default=str))


def _undefined(name: str):
    def undefined(*args, **kwargs):
        raise NameError(f"name {name!r} is not defined")

    undefined.__name__ = name
    return undefined
