"""``check_run`` / ``check_sweep`` (course_lib.teaching.exercises.runs) on histories built by hand.

The figures are the solution's own (seed 0, INSTRUCTORS.md's "Expected figures"), so these tests need no
training; the grader's test (tests/test_grade.py) runs the real trainer.
"""

from __future__ import annotations

import pytest

from course_lib.loop.training import History
from course_lib.teaching.exercises import expected
from course_lib.teaching.exercises.runs import check_run, check_sweep, diagnose_run, diagnose_sweep

DPO_EVALS = {
    "preference_accuracy": [0, 0.832, 0.902, 0.918, 0.887, 0.926, 0.918],
    "kl": [0, 3.6, 4.2, 10.2, 9.2, 13.7, 12.9],
}
IPO_EVALS = {
    "preference_accuracy": [0, 0.777, 0.844, 0.828, 0.832, 0.812, 0.816],
    "kl": [0, 2.2, 3.6, 2.9, 3.3, 3.2, 3.0],
}


def my_dpo_loss(*args, beta=0.1):
    raise NotImplementedError  # only its name matters here


def my_ipo_loss(*args, beta=0.1):
    raise NotImplementedError


def history(
    loss="my_dpo_loss",
    *,
    beta=0.5,
    length_normalize=False,
    steps=300,
    seed=0,
    evals=DPO_EVALS,
    margin=lambda step: 13.0 * (step - 1) / 300,
    summed_margin=None,
    eval_steps=None,
):
    h = History(
        {"step": s, "loss": 0.1, "margin": margin(s), "rewards/margins": beta * (summed_margin or margin)(s)}
        for s in range(1, steps + 1)
    )
    h.loss, h.beta, h.length_normalize, h.steps, h.seed = loss, beta, length_normalize, steps, seed
    eval_steps = eval_steps or range(0, steps + 1, 50)
    h.evals = [
        {"step": s, "preference_accuracy": a, "kl": k}
        for s, a, k in zip(eval_steps, evals["preference_accuracy"], evals["kl"])
    ]
    return h


def ipo_history(**kwargs):
    defaults = dict(
        loss="my_ipo_loss",
        length_normalize=True,
        evals=IPO_EVALS,
        margin=lambda s: 0.7 * min(1, s / 60),
        summed_margin=lambda s: 5.7 * min(1, s / 60),
    )
    return history(**{**defaults, **kwargs})


def codes(problems):
    return [p.code for p in problems]


def test_the_solutions_runs_pass(capsys):
    assert diagnose_run(history(), "dpo", loss_fn=my_dpo_loss, seed=0) == []
    assert diagnose_run(ipo_history(), "ipo", loss_fn=my_ipo_loss, seed=0) == []
    assert check_run(history(), "dpo", loss_fn=my_dpo_loss)
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("✅ DPO: 300 steps at beta = 0.5 on summed log-probs from a fresh copy of the reference")
    assert "held-out figures within the expected ranges" in out


@pytest.mark.parametrize(
    "run, loss, code, text",
    [
        (ipo_history(length_normalize=False), "ipo", "summed log-probs for IPO", "IPO uses averaged ones"),
        (history(length_normalize=True), "dpo", "averaged log-probs", "averaged log-probs"),
        (history(beta=0.1), "dpo", "wrong beta", "beta = 0.1, not 0.5"),
        (history(steps=200, eval_steps=[0, 50, 100, 150, 200]), "dpo", "too few steps", "its default is 200"),
        (history(loss="dpo"), "dpo", "library loss", "loss='dpo'"),
        (history(loss="my_ipo_loss"), "dpo", "wrong loss", "trained with my_ipo_loss"),
        (history(seed=3), "dpo", "wrong seed", "seed=3"),
        (history(margin=lambda s: 2.0 + s / 100), "dpo", "reused policy", "did not start as a copy"),
        (
            history(evals={"preference_accuracy": [0] * 7, "kl": [0.0] * 7}),
            "dpo",
            "trained the reference",
            "*is* the reference",
        ),
        (
            history(margin=lambda s: 0.0, evals={"preference_accuracy": [0] * 7, "kl": [0.0] * 7}),
            "dpo",
            "no slope at h = 0",
            "no slope where every pair starts, h = 0",
        ),
        (
            history(evals={**DPO_EVALS, "kl": [0, 3.6, 4.2, 4.0, 3.9, 3.5, 3.0]}),
            "dpo",
            "figure off",
            "held-out KL at the end is 3",
        ),
        (history(eval_steps=[0, 100, 200, 300]), "dpo", "evaluation steps", "pass every=eval_every"),
        ([1, 2], "dpo", "not a history", "return the History"),
    ],
    ids=[
        "ipo summed",
        "dpo averaged",
        "beta",
        "steps",
        "library loss",
        "wrong loss",
        "seed",
        "reused",
        "trained ref",
        "no slope",
        "figure",
        "eval steps",
        "not a history",
    ],
)
def test_each_slip_is_named(run, loss, code, text, capsys):
    problems = diagnose_run(run, loss, loss_fn=my_dpo_loss if loss == "dpo" else my_ipo_loss, seed=0)
    assert code in codes(problems), problems
    assert check_run(run, loss, loss_fn=my_dpo_loss if loss == "dpo" else my_ipo_loss, seed=0) is False
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("❌") and text in out, out


def test_no_slope_is_not_called_a_trained_reference():
    run = history(margin=lambda s: 0.0, evals={"preference_accuracy": [0] * 7, "kl": [0.0] * 7})
    assert "trained the reference" not in codes(diagnose_run(run, "dpo"))


def test_figures_are_compared_only_at_the_expected_settings():
    short = history(steps=4, eval_steps=[0, 2, 4], evals={"preference_accuracy": [0, 0.5, 0.6], "kl": [0, 0.1, 0.2]})
    assert diagnose_run(short, "dpo", steps=4, eval_every=2) == []


SWEEP_DPO = [
    {"beta": 0.5, "preference_accuracy": 0.918, "kl": 10.1, "kl_stderr": 0.3},
    {"beta": 2.0, "preference_accuracy": 0.891, "kl": 2.09, "kl_stderr": 0.1},
    {"beta": 8.0, "preference_accuracy": 0.844, "kl": 1.69, "kl_stderr": 0.1},
]


def sweep_runs(margin=lambda i: lambda s: s / 100):
    """The sweep's points, each with the History of its run (the i-th run's margin over steps)."""
    runs = [
        history(beta=b, steps=150, evals={"preference_accuracy": [], "kl": []}, margin=margin(i))
        for i, b in enumerate(expected.SETTINGS.sweep_betas)
    ]
    return [{**point, "history": run} for point, run in zip(SWEEP_DPO, runs)]


def test_the_solutions_sweep_passes(capsys):
    assert diagnose_sweep(sweep_runs(), "dpo", loss_fn=my_dpo_loss, seed=0) == []
    assert check_sweep(sweep_runs(), "dpo")
    assert "✅ DPO sweep: 3 betas, figures within the expected ranges." in capsys.readouterr().out


def test_a_reused_policy_in_the_sweep_is_named():
    reused = sweep_runs()
    reused[1]["kl"], reused[2]["kl"] = 11.5, 12.8  # each beta starts where the previous one stopped
    assert "reused policy" in codes(diagnose_sweep(reused, "dpo"))
    later = sweep_runs(margin=lambda i: (lambda s: s / 100) if i == 0 else (lambda s: 5 + s / 100))
    assert codes(diagnose_sweep(later, "dpo")).count("reused policy") == 2


def test_sweep_format_and_betas():
    assert codes(diagnose_sweep({"beta": 0.5}, "dpo")) == ["sweep format"]
    assert codes(diagnose_sweep(sweep_runs()[:2], "dpo")) == ["sweep betas"]
    assert codes(diagnose_sweep(SWEEP_DPO, "dpo")) == ["sweep format"]  # no history


def test_a_new_loss_of_the_registry_is_checked_without_figures():
    """The runs' checks read the registry: a loss with no expected figures gets its slips checked, no figures."""
    from course_lib.maths.losses import PAIRWISE_LOSSES

    for name, spec in PAIRWISE_LOSSES.items():
        run = history(loss=f"my_{name}_loss", length_normalize=spec.average_logps)
        assert all(p.code == "figure off" for p in diagnose_run(run, name)), name
    assert codes(diagnose_run(history(length_normalize=True), "hinge")) == ["averaged log-probs"]
