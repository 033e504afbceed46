"""What the grader runs *inside* a submission's kernel: a recorder around the trainer, and the checks.

:func:`install` runs before the learner's first cell. It wraps ``train_preference`` and ``evaluate_policy``
(``course_lib.loop.training`` and ``course_lib.loop.evaluation``, so ``from ... import`` in the notebook
gets the wrappers) to record every run and every measurement with the learner's function it was made in
(``my_train_and_measure``, ``my_sweep``, ``my_ipo_summed``: the outermost ``my_`` function of the notebook
on the call stack) and that function's ``loss_fn`` argument. Nothing is changed in what they do.

After the notebook has run, :func:`check_losses` calls the checkers on the learner's own functions, and
:func:`check_runs` checks the recorded runs (:func:`course_lib.teaching.exercises.diagnose_run`). A run the
notebook did not make (its cell waited for another exercise) is made here by calling the learner's own
function, when its loss passes its checker. Each prints one line, ``MARKER`` + JSON: the grader reads that,
never what the notebook printed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import traceback

MARKER = "COURSE_GRADE_FINDINGS "
RUNS: list[dict] = []  # one per train_preference call: history, caller, frame, loss_fn, policy_is_reference
MEASUREMENTS: list[dict] = []  # one per evaluate_policy call: result, caller, frame


LEARNER_RUNS = ("my_train_and_measure", "my_sweep", "my_ipo_summed")  # the exercise's functions that train


def _learner_frame():
    """The outermost frame of the notebook's ``my_train_and_measure``, ``my_sweep`` or ``my_ipo_summed`` on the
    stack (else of any notebook function named ``my_...`` other than the ``my_attempt`` helper), or None."""
    frame, found, other = sys._getframe(2), None, None
    while frame is not None:
        name = frame.f_code.co_name
        if name.startswith("my_") and frame.f_globals.get("__name__") == "__main__":
            if name in LEARNER_RUNS:
                found = frame
            elif name != "my_attempt":
                other = frame
        frame = frame.f_back
    return found or other


def install() -> None:
    """Wrap the trainer and the evaluation so that every call is recorded (idempotent)."""
    from ...loop import evaluation, training

    if getattr(training.train_preference, "_course_grader", False):
        return
    train, measure = training.train_preference, evaluation.evaluate_policy

    @functools.wraps(train)
    def train_preference(*args, **kwargs):
        frame = _learner_frame()
        policy = args[0] if args else kwargs.get("policy")
        reference = args[1] if len(args) > 1 else kwargs.get("reference")
        record = {
            "caller": frame.f_code.co_name if frame else None,
            "frame": frame,
            "loss_fn": frame.f_locals.get("loss_fn") if frame else None,
            "policy_is_reference": policy is reference,
            "history": None,
        }
        RUNS.append(record)
        record["history"] = train(*args, **kwargs)
        return record["history"]

    @functools.wraps(measure)
    def evaluate_policy(*args, **kwargs):
        frame = _learner_frame()
        result = measure(*args, **kwargs)
        MEASUREMENTS.append({"caller": frame.f_code.co_name if frame else None, "frame": frame, "result": result})
        return result

    train_preference._course_grader = True
    training.train_preference = train_preference
    evaluation.evaluate_policy = evaluate_policy


def _emit(findings: dict) -> None:
    print(MARKER + json.dumps(findings, default=str))


def check_losses(namespace: dict) -> dict:
    """Each checker on the learner's function (``my_dpo_loss``, ``my_ipo_loss``, ``my_rrhf_loss``)."""
    from ..exercises import DPO_EXERCISE, IPO_EXERCISE, RRHF_EXERCISE, diagnose

    findings = {}
    for key, exercise in (("dpo", DPO_EXERCISE), ("ipo", IPO_EXERCISE), ("rrhf", RRHF_EXERCISE)):
        fn = namespace.get(f"my_{key}_loss")
        if fn is None:
            findings[key] = {"status": "missing", "mistake": "missing", "text": f"my_{key}_loss is not defined."}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            verdict = diagnose(fn, exercise)
        findings[key] = {
            "status": verdict.status,
            "mistake": verdict.mistake,
            "calls_library": verdict.calls_library,
            "text": verdict.text,
        }
    _emit({"losses": findings})
    return findings


def _problems(problems) -> list[list[str]]:
    return [[p.code, p.message] for p in problems]


def _call(fn, *args, **kwargs):
    """Call a learner's function: (result, None) or (None, a problem)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, ["not implemented", f"{fn.__name__} is not implemented yet."]
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return None, ["raised", f"{fn.__name__} raised {type(exc).__name__}: {exc} (line {last.lineno})"[:400]]


def _runs_in(caller: str, loss_fn) -> list[dict]:
    """The recorded runs made inside ``caller`` for ``loss_fn``, those of its last invocation, in order."""
    mine = [r for r in RUNS if r["caller"] == caller and r["loss_fn"] is loss_fn and r["history"] is not None]
    if not mine:
        return []
    last = mine[-1]["frame"]
    return [r for r in mine if r["frame"] is last]


def check_runs(namespace: dict, settings: dict, losses_ok: dict) -> dict:
    """Check the §3 runs, the §5 sweeps and the 7b run (made here when the notebook did not make them).

    ``settings``: beta, steps, eval_every, sweep_betas, sweep_steps, seed, figures (what the runs must use);
    ``losses_ok``: {"dpo": bool, "ipo": bool}, whether each loss passed its checker.
    """
    from ..exercises import diagnose_run, diagnose_sweep

    s = settings
    out = {}
    fns = {key: namespace.get(f"my_{key}_loss") for key in ("dpo", "ipo")}
    train_and_measure = namespace.get("my_train_and_measure")
    sweep_fn, summed_fn = namespace.get("my_sweep"), namespace.get("my_ipo_summed")
    common = {"seed": s["seed"], "figures": s["figures"]}

    for key in ("dpo", "ipo"):  # §3: the main runs
        result = {"found": False, "problems": [], "made_by_grader": False}
        runs = _runs_in("my_train_and_measure", fns[key])
        if not runs and losses_ok.get(key) and callable(train_and_measure):
            result["made_by_grader"] = True
            _, problem = _call(
                train_and_measure, fns[key], beta=s["beta"], length_normalize=key == "ipo", steps=s["steps"]
            )
            runs = _runs_in("my_train_and_measure", fns[key])
            if problem:
                result["problems"].append(problem)
        if runs:
            record = runs[-1]
            result["found"] = True
            result["problems"] += _problems(
                diagnose_run(
                    record["history"],
                    key,
                    part="main",
                    beta=s["beta"],
                    steps=s["steps"],
                    eval_every=s["eval_every"],
                    loss_fn=fns[key],
                    **common,
                )
            )
            if record["policy_is_reference"] and all(c != "trained the reference" for c, _ in result["problems"]):
                result["problems"].append(
                    [
                        "trained the reference",
                        f"{key.upper()}: train_preference was given the reference itself as the policy: train "
                        "copy.deepcopy(reference) instead.",
                    ]
                )
        out[f"{key}_run"] = result

    for key in ("dpo", "ipo"):  # §5: the sweeps
        result = {"found": False, "problems": [], "made_by_grader": False}
        points = namespace.get(f"{key}_sweep")
        runs = _runs_in("my_sweep", fns[key])
        if not runs and losses_ok.get(key) and callable(sweep_fn):
            result["made_by_grader"] = True
            points, problem = _call(sweep_fn, fns[key], length_normalize=key == "ipo")
            runs = _runs_in("my_sweep", fns[key])
            if problem:
                result["problems"].append(problem)
        if runs and points is not None:
            result["found"] = True
            frame = runs[-1]["frame"]
            measured = [m["result"] for m in MEASUREMENTS if m["frame"] is frame]
            result["problems"] += _problems(
                diagnose_sweep(
                    points,
                    key,
                    betas=tuple(s["sweep_betas"]),
                    histories=[r["history"] for r in runs],
                    steps=s["sweep_steps"],
                    loss_fn=fns[key],
                    **common,
                )
            )
            if isinstance(points, (list, tuple)):
                for point in points:
                    kl = point.get("kl") if isinstance(point, dict) else None
                    if kl is not None and not any(m.get("kl") == kl for m in measured if isinstance(m, dict)):
                        result["problems"].append(
                            [
                                "not measured",
                                f"{key.upper()} sweep: the KL {kl} at beta = {point.get('beta')} was not measured "
                                "by evaluate_policy on the trained policy.",
                            ]
                        )
                        break
        out[f"{key}_sweep"] = result

    result = {"found": False, "problems": [], "made_by_grader": False}  # bonus 7b
    runs = [r for r in RUNS if r["caller"] == "my_ipo_summed" and r["history"] is not None]
    if not runs and losses_ok.get("ipo") and callable(summed_fn):
        result["made_by_grader"] = True
        _, problem = _call(summed_fn, steps=s["sweep_steps"])
        runs = [r for r in RUNS if r["caller"] == "my_ipo_summed" and r["history"] is not None]
        if problem:
            result["problems"].append(problem)
    if runs:
        result["found"] = True
        result["problems"] += _problems(
            diagnose_run(
                runs[-1]["history"],
                "ipo",
                part="summed",
                beta=s["beta"],
                steps=s["sweep_steps"],
                eval_every=s["sweep_steps"],
                loss_fn=fns["ipo"],
                **common,
            )
        )
    out["summed_run"] = result
    recorded = [
        [r["caller"], getattr(r["loss_fn"], "__name__", None), getattr(r["history"], "steps", None)] for r in RUNS
    ]
    _emit({"runs": out, "recorded_runs": recorded})
    return out
