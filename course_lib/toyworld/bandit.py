"""The IPO paper's toy bandit world (Azar et al. 2023, arXiv:2310.12036, Sec. 5.4): training and the stored sweep.

A "response" is one of ``n`` actions and there is no prompt. The policy is ``pi = softmax(theta)``,
``theta`` in R^n, initialised at ``theta = log pi_ref`` so that training starts at the reference.
For a preference pair (w, l) the log-probs of the two "responses" are ``log pi(w)`` and ``log pi(l)``,
so the margin is ``h = [log pi(w) - log pi_ref(w)] - [log pi(l) - log pi_ref(l)]`` and the library's
losses (:mod:`course_lib.maths.losses`) apply unchanged: the maths stays in one place.

Everything here is exact: no sampling of responses, and the KL from the reference is a sum over the
``n`` actions (:func:`course_lib.maths.bandit.bandit_kl`). The closed forms (KL, IPO's optimum) live in
:mod:`course_lib.maths.bandit`; this module trains on the bandit and stores the sweep.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from ..maths.bandit import bandit_ref_logps, check_preferences
from ..maths.checks import check_int, check_positive
from ..maths.losses import PairwiseLoss, resolve_loss
from .data import MANIFEST, data_dir, update_manifest, verify_if_listed

#: The IPO paper's dataset D1 = {(a, b), (b, c), (a, c)} with a, b, c = 0, 1, 2: a total order a > b > c.
D1 = ((0, 1), (1, 2), (0, 2))


def sample_pair_indices(n_pairs: int, *, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Mini-batches of pair indices, drawn uniformly *with replacement*: (steps, batch_size) int64.

    One ``torch.Generator`` seeded with ``seed``: the same seed gives the same batches whatever else
    is trained alongside (which is what makes :func:`train_bandit_sweep` equal to separate runs).
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_pairs, (steps, batch_size), generator=generator)


def train_bandit_sweep(
    preferences: Sequence[tuple[int, int]],
    *,
    losses: Sequence[str | PairwiseLoss],
    betas: Sequence[float],
    seeds: Sequence[int],
    steps: int = 18000,
    lr: float = 0.01,
    batch_size: int = 9,
    ref_probs=None,
) -> torch.Tensor:
    """Train every (loss, beta, seed) combination at once; the result equals separate runs.

    Each configuration has its own row of a (C, n) parameter ``theta`` and its own mini-batches
    (:func:`sample_pair_indices` with its seed). The total loss is the sum over configurations of each
    one's batch-mean loss, so a row's gradient is exactly that configuration's gradient; Adam works
    elementwise, so one Adam on the stacked ``theta`` is the same as one Adam per configuration.

    Args:
        preferences: (winner, loser) action-index pairs, e.g. :data:`D1`.
        losses: names in :data:`course_lib.maths.losses.PAIRWISE_LOSSES` or callables
            ``fn(pc, pr, rc, rr, *, beta) -> (B,)``.
        betas: the KL coefficients (IPO's tau), each > 0.
        seeds: one run per seed.
        steps, lr, batch_size: Adam steps, its learning rate, pairs per mini-batch (Sec. 5.4: 18,000, 0.01, 9).
        ref_probs: (n,) reference probabilities; None means uniform over the actions in ``preferences``.

    Returns:
        (len(losses), len(betas), len(seeds), steps, n) float32 probabilities; entry ``[..., t, :]`` is the
        policy after update t + 1.
    """
    if not losses or not betas or not seeds:
        raise ValueError("losses, betas and seeds must each hold at least one value")
    configs = [(resolve_loss(loss), check_positive("beta", beta)) for loss in losses for beta in betas]
    seeds = [check_int("seed", seed) for seed in seeds]
    steps, batch_size = check_int("steps", steps, minimum=1), check_int("batch_size", batch_size, minimum=1)
    lr = check_positive("lr", lr)
    ref_n = None if ref_probs is None else torch.as_tensor(ref_probs).numel()
    winners, losers, n_actions = check_preferences(preferences, ref_n)
    ref_logps, n_actions = bandit_ref_logps(ref_probs, n_actions)  # (n,)
    # pair indices per configuration, in (loss, beta, seed) order: (steps, C, B)
    per_seed = torch.stack(
        [sample_pair_indices(len(winners), steps=steps, batch_size=batch_size, seed=s) for s in seeds]
    )
    pair_idx = per_seed.repeat(len(configs), 1, 1).transpose(0, 1)
    probs = _adam_on_theta(configs, winners[pair_idx], losers[pair_idx], ref_logps, lr)  # (steps, C, n)
    return probs.transpose(0, 1).reshape(len(losses), len(betas), len(seeds), steps, n_actions)


def _adam_on_theta(configs, winner_idx, loser_idx, ref_logps, lr: float) -> torch.Tensor:
    """Adam on a (C, n) ``theta``, one block of rows per (loss, beta) in ``configs``; the policy after each
    step, (steps, C, n). ``winner_idx``, ``loser_idx``: (steps, C, B) action indices of each step's pairs."""
    steps, n_configs, batch_size = winner_idx.shape
    block = n_configs // len(configs) * batch_size  # per step, each (loss, beta) is a contiguous slice
    ref_chosen_all = ref_logps[winner_idx].reshape(steps, -1)  # (steps, C * B)
    ref_rejected_all = ref_logps[loser_idx].reshape(steps, -1)
    theta = ref_logps.repeat(n_configs, 1).clone().requires_grad_(True)  # (C, n): pi = pi_ref at start
    optimizer = torch.optim.Adam([theta], lr=lr)
    probs = torch.empty(steps, n_configs, len(ref_logps))
    for t in range(steps):
        # log pi = theta - logsumexp(theta), written out: the same as log_softmax, and cheaper on tiny tensors
        logps = theta - theta.logsumexp(-1, keepdim=True)  # (C, n)
        policy_chosen = logps.gather(1, winner_idx[t]).view(-1)  # (C * B,)
        policy_rejected = logps.gather(1, loser_idx[t]).view(-1)
        total = 0.0
        for g, (loss_fn, beta) in enumerate(configs):
            rows = slice(g * block, (g + 1) * block)
            per_pair = loss_fn(
                policy_chosen[rows],
                policy_rejected[rows],
                ref_chosen_all[t, rows],
                ref_rejected_all[t, rows],
                beta=beta,
            )  # (n_seeds * B,)
            total = total + per_pair.sum() / batch_size  # = sum over seeds of each run's batch mean
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with torch.no_grad():
            probs[t] = (theta - theta.logsumexp(-1, keepdim=True)).exp()
    return probs


def train_bandit(
    preferences: Sequence[tuple[int, int]],
    *,
    loss: str | PairwiseLoss,
    beta: float,
    steps: int = 18000,
    lr: float = 0.01,
    batch_size: int = 9,
    seed: int = 0,
    ref_probs=None,
) -> torch.Tensor:
    """One run of the Sec. 5.4 bandit (:func:`train_bandit_sweep` with one ``loss``, ``beta`` and ``seed``).

    ``loss``: "dpo", "ipo", "hinge" or a callable ``fn(pc, pr, rc, rr, *, beta) -> (B,)``; the defaults are
    the paper's (18,000 Adam steps at lr 0.01, 9 pairs drawn with replacement per step). Returns
    (steps, n_actions) probabilities; row t is the policy after update t + 1.
    """
    return train_bandit_sweep(
        preferences,
        losses=[loss],
        betas=[beta],
        seeds=[seed],
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        ref_probs=ref_probs,
    )[0, 0, 0]


# ----------------------------------------------------------------------------- the stored D1 sweep
#: What :func:`build_d1_sweep` trains: the Sec. 5.4 set-up on D1 for DPO and IPO over a grid of tau,
#: keeping the policy after every ``record_every``-th update.
D1_SWEEP = {
    "losses": ("dpo", "ipo"),
    "betas": (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    "seeds": tuple(range(10)),
    "steps": 18000,
    "lr": 0.01,
    "batch_size": 9,
    "record_every": 50,
}


def d1_sweep_path() -> Path:
    """``<repo>/data/bandit/d1_sweep.pt`` (or under ``$COURSE_DATA_DIR``)."""
    return data_dir() / "bandit" / "d1_sweep.pt"


def build_d1_sweep(path: str | Path | None = None) -> Path:
    """Train :data:`D1_SWEEP` with :func:`train_bandit_sweep` and save it (a few minutes on 2 CPU cores).

    The file holds the settings and ``probs``: (losses, betas, seeds, steps // record_every, 3) float32.
    Run ``python -m course_lib.build_data --d1-sweep`` to rebuild it; tests regenerate slices and compare.
    """
    path = Path(path) if path is not None else d1_sweep_path()
    settings = {key: value for key, value in D1_SWEEP.items() if key != "record_every"}
    every = D1_SWEEP["record_every"]
    probs = train_bandit_sweep(D1, **settings)[..., every - 1 :: every, :].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {key: list(value) if isinstance(value, tuple) else value for key, value in D1_SWEEP.items()}
    torch.save({**saved, "preferences": [list(p) for p in D1], "probs": probs}, path)
    folder = path.resolve().parent.parent  # <data>/bandit/d1_sweep.pt: keep <data>'s manifest in step
    if (folder / MANIFEST).is_file():
        update_manifest(folder, [path.resolve().relative_to(folder).as_posix()])
    return path


def load_d1_sweep(path: str | Path | None = None) -> dict:
    """Load the stored D1 sweep: a dict with the :data:`D1_SWEEP` settings, ``preferences`` and ``probs``
    of shape (losses, betas, seeds, steps // record_every, 3); ``probs[..., k, :]`` is the policy after
    update ``(k + 1) * record_every``. Raises FileNotFoundError with the command that rebuilds it.

    When the file is listed in the data folder's ``MANIFEST.sha256`` (the default path is), it is checked
    against it first: a changed or truncated file raises DataIntegrityError naming it; a file that
    cannot be read raises ValueError naming it."""
    path = Path(path) if path is not None else d1_sweep_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; rebuild it with `python -m course_lib.build_data --d1-sweep`")
    verify_if_listed(path)
    try:
        sweep = torch.load(path, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}): it is truncated or "
            "corrupt; restore it with `git checkout -- data/` or rebuild it with "
            "`python -m course_lib.build_data --d1-sweep`"
        ) from err
    if not isinstance(sweep, dict) or "probs" not in sweep:
        raise ValueError(f"{path} does not hold a D1 sweep (a dict with 'probs'); rebuild it")
    for key, value in D1_SWEEP.items():
        if tuple(sweep[key]) != tuple(value) if isinstance(value, tuple) else sweep[key] != value:
            raise ValueError(f"{path} was built with {key}={sweep[key]!r}, the library expects {value!r}; rebuild it")
    return sweep
