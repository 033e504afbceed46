"""IPO's population optimum, Eq. 11 of Azar et al. 2023 (arXiv:2310.12036), on a finite set of responses.

For Psi = identity the Psi-PO optimum fixes every margin by the responses' win rates against the
behaviour distribution mu (Eq. 11, the identity that Eqs. 12-13 turn into a regression):

    h*(y, y') = (p*(y > mu) - p*(y' > mu)) / tau,     p*(y > mu) = E_{y'' ~ mu} p*(y > y''),

so h* lies in [-1/tau, 1/tau]. The sampled loss (Eq. 17) regresses each observed pair on 1/(2 tau), but
only its *expectation* over pairs drawn i.i.d. from mu equals the population loss up to a constant
(Proposition 3). Here mu is the empirical distribution of a data set's responses to each prompt, and
p*(y > y'') is deterministic: 1 if y's true reward is higher, 1/2 for a tie (a response ties with itself).
Eq. 11 holds for any margin that is a difference of per-response terms, so for summed and for
length-averaged log-ratios alike; the KL-regularised optimum pi* of Eqs. 7-9 is about summed ones only.
"""

import torch

from .checks import check_positive, check_same_shape, check_tensor


def _check_rewards_and_groups(rewards_name: str, rewards, groups_name: str, groups) -> None:
    check_tensor(rewards_name, rewards, "(N,)")
    check_tensor(groups_name, groups, "(N,)", "int")
    check_same_shape(**{rewards_name: rewards, groups_name: groups})
    if not torch.isfinite(rewards).all():
        raise ValueError(f"{rewards_name} must be finite")


def win_rates(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    population_rewards: torch.Tensor,
    population_groups: torch.Tensor,
) -> torch.Tensor:
    """p*(y > mu) of each response: its win rate against the population's responses to the same prompt.

    ``mean over y'' in the population with the same group of [r(y) > r(y'')] + 1/2 [r(y) = r(y'')]``.

    Args:
        rewards, groups: (N,) true rewards of the responses and their prompt ids (integers).
        population_rewards, population_groups: (M,) the same for the responses that mu is made of.

    Returns:
        (N,) float64 win rates in [0, 1].
    """
    _check_rewards_and_groups("rewards", rewards, "groups", groups)
    _check_rewards_and_groups("population_rewards", population_rewards, "population_groups", population_groups)
    same_prompt = groups[:, None] == population_groups[None, :]  # (N, M)
    counts = same_prompt.sum(1)
    if (counts == 0).any():
        missing = groups[counts == 0][0].item()
        raise ValueError(
            f"prompt id {missing} of groups has no response in population_groups: its win rate is undefined"
        )
    r, pop = rewards.double()[:, None], population_rewards.double()[None, :]
    wins = (r > pop).double() + 0.5 * (r == pop).double()  # (N, M)
    return (wins * same_prompt).sum(1) / counts


def eq11_margins_from_win_rates(
    chosen_win_rates: torch.Tensor, rejected_win_rates: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """Eq. 11: h*(y_w, y_l) = (p*(y_w > mu) - p*(y_l > mu)) / tau, with tau = ``beta``. (N,), (N,) -> (N,)."""
    beta = check_positive("beta", beta)
    for name, value in (("chosen_win_rates", chosen_win_rates), ("rejected_win_rates", rejected_win_rates)):
        check_tensor(name, value, "(N,)")
        if ((value < 0) | (value > 1)).any():
            raise ValueError(f"{name} must lie in [0, 1]: they are probabilities")
    check_same_shape(chosen_win_rates=chosen_win_rates, rejected_win_rates=rejected_win_rates)
    return (chosen_win_rates - rejected_win_rates) / beta
