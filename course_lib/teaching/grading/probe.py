"""What the grader runs *inside* a submission's kernel, after the notebook: the checks of its functions.

:func:`check_losses` calls the checkers on the learner's ``my_dpo_loss``, ``my_ipo_loss`` and
``my_rrhf_loss``. :func:`check_runs` checks what the learner's run functions returned: the values the
notebook's own cells kept (``dpo_history``, ``dpo_sweep``, ``ipo_summed_history``, ...), and where a cell left
None (it waited for another exercise) it calls the function itself (``my_train_and_measure``, ``my_sweep``,
``my_ipo_summed``) when the loss it needs passes its checker. Each prints one line, ``MARKER`` + JSON: the
grader reads that, never what the notebook printed.
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
    """Each checker on the learner's function (``my_dpo_loss``, ``my_ipo_loss``, ``my_rrhf_loss``)."""
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
    """Call a learner's function: (result, None) or (None, a [code, message] problem)."""
    name = getattr(fn, "__name__", repr(fn))
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
    """Check the §3 runs, the §5 sweeps and the 7b run.

    ``settings``: beta, steps, eval_every, sweep_betas, sweep_steps, seed (what the runs must use);
    ``losses_ok``: {"dpo": bool, "ipo": bool}, whether each loss passed its checker.
    """
    s, ns, out = settings, namespace, {}
    train, sweep, summed = (
        ns.get(name, _undefined(name)) for name in ("my_train_and_measure", "my_sweep", "my_ipo_summed")
    )
    for key in ("dpo", "ipo"):
        fn, ok, averaged = ns.get(f"my_{key}_loss"), losses_ok.get(key, False), loss_spec(key).average_logps
        out[f"{key}_run"] = _check(
            ns.get(f"{key}_history"),
            ok,
            partial(train, fn, beta=s["beta"], length_normalize=averaged, steps=s["steps"], eval_every=s["eval_every"]),
            partial(
                diagnose_run,
                loss=key,
                beta=s["beta"],
                steps=s["steps"],
                eval_every=s["eval_every"],
                seed=s["seed"],
                loss_fn=fn,
            ),
        )
        out[f"{key}_sweep"] = _check(
            ns.get(f"{key}_sweep"),
            ok,
            partial(sweep, fn, length_normalize=averaged, betas=s["sweep_betas"], steps=s["sweep_steps"]),
            partial(
                diagnose_sweep, loss=key, betas=s["sweep_betas"], steps=s["sweep_steps"], seed=s["seed"], loss_fn=fn
            ),
        )
    out["summed_run"] = _check(
        ns.get("ipo_summed_history"),
        losses_ok.get("ipo", False),
        partial(summed, steps=s["sweep_steps"]),
        partial(
            diagnose_run,
            loss="ipo",
            part="summed",
            beta=s["beta"],
            steps=s["sweep_steps"],
            seed=s["seed"],
            loss_fn=ns.get("my_ipo_loss"),
        ),
    )
    print(MARKER + json.dumps({"runs": out}, default=str))


def _undefined(name: str):
    def undefined(*args, **kwargs):
        raise NameError(f"name {name!r} is not defined")

    undefined.__name__ = name
    return undefined
