"""The pairwise exercises: the prepared cases, and the catalogues of known mistakes of DPO and IPO (formulas of
:class:`Pairs`, in float64; the engine reports the first that reproduces every result). The cases avoid beta = 1,
where several mistakes equal the right formula; mistakes that agree on every case are named in one message.
"""

import torch
import torch.nn.functional as F

from ...maths.losses import loss_spec
from .engine import Case, Exercise, Mistake, format_numbers

PAIR_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pairs(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected, dtype=torch.float32):
    """A case builder: four (B,) log-prob tensors of ``dtype`` and ``beta``."""
    values = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return lambda: {**{n: torch.tensor(v, dtype=dtype) for n, v in zip(PAIR_NAMES, values)}, "beta": beta}


# Multiples of 1/4, exact in bfloat16 too. h = [2.5, -0.5, 9.0, 0.0]; IPO's target 1/(2 beta) falls
# between them for beta = 0.1 and 0.5; the reference margins rc - rr are not all zero.
_BATCH = (
    [-12.5, -20.0, -3.0, -30.0],  # policy_chosen_logps
    [-15.0, -17.5, -13.25, -26.75],  # policy_rejected_logps
    [-14.0, -19.0, -10.5, -29.5],  # ref_chosen_logps
    [-14.0, -17.0, -11.75, -26.25],  # ref_rejected_logps
)
# h = [1e4, -1e4, 2005, 0.5]: with beta = 0.5, |beta * h| reaches 5000.
_EXTREME = (
    [-150.0, -10150.0, -40.0, -7.5],
    [-80.0, -60.0, -3000.0, -6.0],
    [-10150.0, -150.0, -45.0, -7.0],
    [-80.0, -60.0, -1000.0, -5.0],
)
# h = [-300, 300, 0.5], exact in bfloat16: with beta = 0.5, -log(sigmoid(-150)) is inf in bfloat16.
_EXTREME_BF16 = ([-310.0, -10.0, -6.5], [-20.0, -20.0, -9.0], [-10.0, -310.0, -6.0], [-20.0, -20.0, -8.0])

PAIRWISE_CASES = (
    Case("a batch of 4 pairs, beta = 0.1", _pairs(0.1, *_BATCH), check_grad=True),
    Case("the same 4 pairs, beta = 0.5", _pairs(0.5, *_BATCH)),
    Case("the same 4 pairs, beta = 3", _pairs(3.0, *_BATCH)),
    Case("a batch of size 1, beta = 0.2", _pairs(0.2, [-8.0], [-12.5], [-9.0], [-10.0])),
    Case("extreme margins (|beta * h| up to 5000, float32), beta = 0.5", _pairs(0.5, *_EXTREME), True, True),
    Case("bfloat16 inputs, beta = 0.25", _pairs(0.25, *_BATCH, dtype=torch.bfloat16)),
    Case(
        "bfloat16 inputs with large margins (|beta * h| = 150), beta = 0.5",
        _pairs(0.5, *_EXTREME_BF16, dtype=torch.bfloat16),
        extreme=True,
    ),
)


def _ls(z: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(z)) = -softplus(-z), stable; F.logsigmoid is the same but slow on tiny CPU tensors."""
    return -F.softplus(-z)


class Pairs:
    """What the pairwise mistake formulas read: the four log-probs in float64 (a missing reference: zeros),
    beta, the margin h and IPO's target 1/(2 beta)."""

    def __init__(self, inputs: dict):
        policy = inputs[PAIR_NAMES[0]]
        self.args = tuple(
            (torch.zeros_like(policy) if inputs[n] is None else inputs[n]).detach().double() for n in PAIR_NAMES
        )
        self.pc, self.pr, self.rc, self.rr = self.args
        self.beta = inputs["beta"]
        self.kwargs = {"beta": self.beta}
        self.h = (self.pc - self.rc) - (self.pr - self.rr)  # (B,) the log-ratio margin
        self.target = 1.0 / (2.0 * self.beta)  # IPO's target for h


_H = "h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)"
_CLAMP = (
    "beyond the clamp the loss is flat and its gradient 0, so a pair that is far off gets no push (the "
    "extreme-margin cases show it)."
)
_REF_SIGN = f"The reference log-probs enter with the wrong sign: a log-ratio is policy minus reference. Use {_H}."


def _beta_ignored(loss: str, value: float, formula) -> Mistake:
    return Mistake(
        f"beta ignored ({value:g})",
        formula,
        f"Your loss ignores the beta it is given: it computes {loss} at beta = {value:g} whatever beta is (a "
        f"hard-coded {value:g}, or a global instead of the argument?). Use the beta argument of your function.",
    )


# fmt: off
DPO_MISTAKES = (
    Mistake("chosen and rejected swapped", lambda p: -_ls(-p.beta * p.h),
            "Your loss is small when the *rejected* response gains probability: chosen and rejected are swapped "
            f"somewhere (or the sign of h is flipped). Use {_H} and the loss -F.logsigmoid(beta * h)."),
    Mistake("no reference model", lambda p: -_ls(p.beta * (p.pc - p.pr)),
            "Your loss ignores the reference model: it uses policy_chosen_logps - policy_rejected_logps. "
            f"DPO compares log-ratios against the reference: {_H}."),
    Mistake("reference added", lambda p: -_ls(p.beta * ((p.pc - p.pr) + (p.rc - p.rr))), _REF_SIGN),
    Mistake("beta missing", lambda p: -_ls(p.h),
            "beta is missing: you compute -logsigmoid(h). DPO's loss is -F.logsigmoid(beta * h)."),
    Mistake("beta multiplies the loss", lambda p: -p.beta * F.logsigmoid(p.h),
            "beta multiplies the loss instead of the margin: you compute -beta * logsigmoid(h). "
            "Write -F.logsigmoid(beta * h)."),
    Mistake("margin divided by beta", lambda p: -_ls(p.h / p.beta),
            "You divide the margin by beta (logsigmoid(h / beta)): DPO multiplies it, -F.logsigmoid(beta * h)."),
    Mistake("beta on the policy only", lambda p: -_ls(p.beta * (p.pc - p.pr) - (p.rc - p.rr)),
            f"beta multiplies only the policy's log-probs: put it in front of the whole margin, "
            f"-F.logsigmoid(beta * h) with {_H}."),
    Mistake("sign of the loss", lambda p: _ls(p.beta * p.h),
            "Your losses are negative: you return logsigmoid(beta * h), the log-likelihood that DPO maximises. "
            "The loss to minimise is its negative, -F.logsigmoid(beta * h)."),
    Mistake("no log", lambda p: -torch.sigmoid(p.beta * p.h),
            "The log is missing: you return -sigmoid(beta * h). Write -F.logsigmoid(beta * h)."),
    Mistake("no log, 1 - sigmoid", lambda p: torch.sigmoid(-p.beta * p.h),
            "The log is missing: you return 1 - sigmoid(beta * h) = sigmoid(-beta * h). "
            "Write -F.logsigmoid(beta * h)."),
    Mistake("linear loss", lambda p: -p.beta * p.h,
            "You return -beta * h, the implicit reward margin with a minus sign: DPO wraps it in a log-sigmoid, "
            "-F.logsigmoid(beta * h)."),
    Mistake("margin only", lambda p: -p.h, "You return -h: DPO's loss is -F.logsigmoid(beta * h)."),
    _beta_ignored("-logsigmoid(beta * h)", 0.1, lambda p: -_ls(0.1 * p.h)),
    _beta_ignored("-logsigmoid(beta * h)", 0.5, lambda p: -_ls(0.5 * p.h)),
    Mistake("loss times beta", lambda p: -p.beta * _ls(p.beta * p.h),
            "Your loss is beta times DPO's: -beta * logsigmoid(beta * h). beta belongs inside, on the margin, and "
            "only there: -F.logsigmoid(beta * h)."),
    Mistake("margin clamped", lambda p: -_ls(p.beta * p.h.clamp(-10, 10)),
            f"You clamp the margin h to [-10, 10]: {_CLAMP} -F.logsigmoid(beta * h) is stable on its own: "
            "no clamp is needed."),
    Mistake("beta * h clamped", lambda p: -_ls((p.beta * p.h).clamp(-10, 10)),
            f"You clamp beta * h to [-10, 10]: {_CLAMP} -F.logsigmoid(beta * h) is stable on its own: "
            "no clamp is needed."),
    Mistake("IPO instead of DPO", lambda p: (p.h - p.target) ** 2,
            "This is the IPO loss (h - 1/(2*beta))**2; this checker expects DPO, -F.logsigmoid(beta * h). "
            "Check it with check_ipo_loss instead."),
    Mistake("hinge instead of DPO", lambda p: torch.relu(1 - p.beta * p.h),
            "This is the hinge loss max(0, 1 - beta * h) (SLiC/RSO); DPO is -F.logsigmoid(beta * h)."),
)

_SQUARE = "IPO's square acts on both sides: (h - 1/(2*beta))**2."
IPO_MISTAKES = (
    Mistake("the seed's ipo_loss", lambda p: -_ls((p.pc - p.pr) - p.beta),
            "This is the seed's ipo_loss: -log(sigmoid(policy_chosen_logps - policy_rejected_logps - beta)) is a "
            "logistic loss with an offset (margin DPO) and it ignores the reference model. IPO (Azar et al. 2023, "
            f"Eq. 17) is the squared loss (h - 1/(2*beta))**2 with {_H}."),
    Mistake("DPO instead of IPO", lambda p: -_ls(p.beta * p.h),
            "This is the DPO loss -logsigmoid(beta * h). IPO replaces it with a square that has a finite target, "
            "(h - 1/(2*beta))**2: the margin stops at 1/(2*beta) instead of growing without bound."),
    Mistake("logistic with an offset", lambda p: -_ls(p.h - p.beta),
            "-logsigmoid(h - beta) is a logistic loss with an offset (margin DPO), not IPO: IPO's loss is the "
            "square (h - 1/(2*beta))**2."),
    Mistake("hinge instead of IPO", lambda p: torch.relu(1 - p.beta * p.h),
            "This is the hinge loss max(0, 1 - beta * h) (SLiC/RSO); IPO is the square (h - 1/(2*beta))**2."),
    Mistake("no reference model", lambda p: ((p.pc - p.pr) - p.target) ** 2,
            "Your loss ignores the reference model: it squares policy_chosen_logps - policy_rejected_logps - "
            f"1/(2*beta). IPO's margin is the difference of log-ratios, {_H}."),
    Mistake("reference added", lambda p: ((p.pc - p.pr) + (p.rc - p.rr) - p.target) ** 2, _REF_SIGN),
    Mistake("swapped, or + target", lambda p: (p.h + p.target) ** 2,
            "You compute (h + 1/(2*beta))**2, which is the same as swapping chosen and rejected: the loss would "
            f"push the margin to -1/(2*beta). Use (h - 1/(2*beta))**2 with {_H}."),
    Mistake("target 1/beta", lambda p: (p.h - 1.0 / p.beta) ** 2,
            "Your target is 1/beta; IPO's is 1/(2*beta) (Eq. 17). Write (h - 1/(2*beta))**2."),
    Mistake("target beta/2 (precedence)", lambda p: (p.h - p.beta / 2) ** 2,
            "Your target is beta/2: in Python 1/2*beta means (1/2)*beta. Write (h - 1/(2*beta))**2."),
    Mistake("target 1/2", lambda p: (p.h - 0.5) ** 2,
            "Your target is 1/2 whatever beta is: IPO's target is 1/(2*beta). Write (h - 1/(2*beta))**2."),
    Mistake("target beta", lambda p: (p.h - p.beta) ** 2,
            "Your target is beta; IPO's is 1/(2*beta). Write (h - 1/(2*beta))**2."),
    Mistake("target missing", lambda p: p.h**2,
            "The target is missing: h**2 pulls the margin to 0, so nothing is learned. "
            "IPO's loss is (h - 1/(2*beta))**2."),
    Mistake("beta * h, target 1/2", lambda p: (p.beta * p.h - 0.5) ** 2,
            "Your loss is beta**2 times IPO's: (beta*h - 1/2)**2 = beta**2 * (h - 1/(2*beta))**2. It has the same "
            "minimum, but its gradients are beta**2 times smaller (100 times at beta = 0.1), so the learning rate "
            "means something else. IPO puts no beta in front of h: write (h - 1/(2*beta))**2."),
    Mistake("beta * h, target 1", lambda p: (p.beta * p.h - 1) ** 2,
            "You compute (beta*h - 1)**2 = beta**2 * (h - 1/beta)**2: the scale and the target are both off. "
            "IPO puts no beta in front of h: write (h - 1/(2*beta))**2."),
    Mistake("beta * h, right target", lambda p: (p.beta * p.h - p.target) ** 2,
            "You multiply h by beta as in DPO's implicit reward; IPO's loss uses h itself: (h - 1/(2*beta))**2."),
    _beta_ignored("(h - 1/(2*beta))**2", 0.1, lambda p: (p.h - 5.0) ** 2),
    _beta_ignored("(h - 1/(2*beta))**2", 0.5, lambda p: (p.h - 1.0) ** 2),
    Mistake("one-sided", lambda p: torch.relu(p.target - p.h) ** 2,
            "Your loss is one-sided: relu(1/(2*beta) - h)**2 is 0 once h passes the target, so it never pushes an "
            f"over-separated pair back, and the margin can grow without bound as in DPO. {_SQUARE}"),
    Mistake("one-sided, other side", lambda p: torch.relu(p.h - p.target) ** 2,
            "Your loss is one-sided: relu(h - 1/(2*beta))**2 is 0 below the target, so it never pulls a pair up to "
            f"it. {_SQUARE}"),
    Mistake("loss times beta", lambda p: p.beta * (p.h - p.target) ** 2,
            "Your loss is beta times IPO's: beta * (h - 1/(2*beta))**2. The same minimum, but the gradients are "
            "scaled by beta. IPO's beta sits only in the target: (h - 1/(2*beta))**2."),
    Mistake("margin clamped", lambda p: (p.h.clamp(-10, 10) - p.target) ** 2,
            f"You clamp the margin h to [-10, 10]: {_CLAMP} The square needs no clamp: (h - 1/(2*beta))**2."),
    Mistake("no square", lambda p: p.h - p.target,
            "You return h - 1/(2*beta) without the square: it can be negative and has no minimum. "
            "IPO squares it: (h - 1/(2*beta))**2."),
    Mistake("no square, reversed", lambda p: p.target - p.h,
            "You return 1/(2*beta) - h without the square: it can be negative and has no minimum. "
            "IPO squares it: (h - 1/(2*beta))**2."),
    Mistake("absolute value", lambda p: (p.h - p.target).abs(),
            "You take the absolute value |h - 1/(2*beta)| instead of the square: its gradient does not shrink "
            "near the target. IPO (Eq. 17) squares it: (h - 1/(2*beta))**2."),
    Mistake("both orderings", lambda p: 0.5 * ((p.h - 1.0 / p.beta) ** 2 + p.h**2),
            "You compute 0.5*[(h - 1/beta)**2 + h**2], the form with both orderings of each pair. It equals "
            "(h - 1/(2*beta))**2 + 1/(4*beta**2): the same gradients, but not the library's numbers. "
            "Write Eq. 17 as it is: (h - 1/(2*beta))**2."),
    Mistake("half the loss", lambda p: 0.5 * (p.h - p.target) ** 2,
            "Your loss has an extra factor 1/2: Eq. 17 is (h - 1/(2*beta))**2 with no 1/2 in front."),
    Mistake("margin only", lambda p: -p.h, "You return -h: IPO's loss is the square (h - 1/(2*beta))**2."),
)
# fmt: on

#: The exercise's text for the losses it teaches: known mistakes, the checklist, the seed's note.
CATALOGUES = {
    "dpo": dict(
        mistakes=DPO_MISTAKES,
        hint=f"Check, in order: the margin {_H}; beta multiplies h; the loss is -F.logsigmoid(beta * h), one "
        "value per pair.",
        seed="This is the seed's dpo_loss: its formula is right, but it returns the batch mean and it overflows "
        "at extreme margins.",
    ),
    "ipo": dict(
        mistakes=IPO_MISTAKES,
        hint=f"Check, in order: the margin {_H}; the target 1/(2*beta); the loss (h - 1/(2*beta))**2, one value "
        "per pair.",
        explain=lambda p: f"h = {format_numbers(p.h)}, target 1/(2*beta) = {format_numbers(torch.tensor(p.target))}",
    ),
}


def pairwise_exercise(loss) -> Exercise:
    """The checker's exercise for a loss of the registry (a name, a spec or a callable; see ``loss_spec``)."""
    spec = loss_spec(loss)
    text = {
        "mistakes": (),
        "hint": f"Check your formula against {spec.fn.__module__}.{spec.fn.__name__}'s docstring, one value per pair.",
        "explain": lambda p: f"h = {format_numbers(p.h)}",
        **CATALOGUES.get(spec.name, {}),
    }
    return Exercise(
        reference=spec.fn,
        tensor_names=PAIR_NAMES,
        cases=PAIRWISE_CASES,
        view=Pairs,
        grad_names=PAIR_NAMES[:2],
        unit="pair",
        summary="3 betas, a batch of 1, extreme margins, bfloat16",
        none_inputs=() if spec.needs_reference else PAIR_NAMES[2:],
        **text,
    )
