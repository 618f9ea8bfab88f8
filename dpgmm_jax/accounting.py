"""Privacy accounting in Gaussian differential privacy (mu-GDP).

A Gaussian mechanism whose L2 sensitivity, divided by its noise standard
deviation, is mu is mu-GDP, and T adaptive mu_t-GDP mechanisms compose to
sqrt(sum_t mu_t^2)-GDP (Dong, Roth and Su, "Gaussian Differential Privacy",
JRSS-B 2022, Corollary 3.3). A mu-GDP mechanism has the privacy curve of the
Gaussian mechanism with sigma = 1/mu, so the conversion to (epsilon, delta)
is the analytic Gaussian mechanism (Balle and Wang, ICML 2018, Theorem 8).

All conversions go through Google's dp_accounting package; nothing here
inverts the Gaussian privacy curve by hand.
"""

import enum
import math

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant

from dpgmm_jax.validation import check_delta, check_epsilon, check_positive


class NeighbouringRelation(str, enum.Enum):
    """Neighbouring relation between datasets.

    ADD_OR_REMOVE_ONE: one dataset has one record more than the other.
    REPLACE_ONE: one record is replaced, so every sensitivity doubles.
    """

    ADD_OR_REMOVE_ONE = "add_or_remove_one"
    REPLACE_ONE = "replace_one"


def sensitivity_multiplier(relation: NeighbouringRelation | str) -> float:
    """Return the factor on every L2 sensitivity for a neighbouring relation.

    Under replace-one, the difference between two neighbouring statistics is
    the contribution of one record minus that of another, whose norm is at
    most twice the add/remove bound by the triangle inequality.
    """
    relation = NeighbouringRelation(relation)
    return 2.0 if relation is NeighbouringRelation.REPLACE_ONE else 1.0


def mu_from_epsilon_delta(epsilon: float, delta: float) -> float:
    """Return the largest mu such that mu-GDP implies (epsilon, delta)-DP.

    Args:
        epsilon: target epsilon, > 0.
        delta: target delta, in (0, 1).

    Returns:
        mu = 1 / sigma, where sigma is the noise multiplier of the analytic
        Gaussian mechanism for (epsilon, delta) at sensitivity one, computed
        by ``dp_accounting.get_sigma_gaussian``.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    return 1.0 / dp_accounting.get_sigma_gaussian(epsilon, delta)


def epsilon_from_mu(mu: float, delta: float) -> float:
    """Return the smallest epsilon for which mu-GDP implies (epsilon, delta)-DP."""
    mu = check_positive("mu", mu)
    delta = check_delta(delta)
    return dp_accounting.get_epsilon_gaussian(1.0 / mu, delta)


def compose_mu(mus) -> float:
    """Compose adaptive mu_t-GDP mechanisms: mu = sqrt(sum_t mu_t^2)."""
    mus = np.asarray(mus, dtype=np.float64)
    if np.any(mus < 0) or not np.all(np.isfinite(mus)):
        raise ValueError(f"every mu must be finite and >= 0, got mus={mus.tolist()}")
    return float(math.sqrt(np.sum(mus**2)))


def iteration_schedule(n_iter: int, last_share: float | None = None) -> np.ndarray:
    """Split mu^2 over the iterations of DP-EM.

    Args:
        n_iter: number of iterations T >= 1.
        last_share: fraction of mu^2 spent on the last iteration, with the
            rest split evenly over the others; None spends 1/T on each.

    Returns:
        Fractions w_t >= 0 with sum_t w_t = 1, so mu_t = sqrt(w_t) * mu.
    """
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got n_iter={n_iter}")
    n_iter = int(n_iter)
    if last_share is None or n_iter == 1:
        return np.full(n_iter, 1.0 / n_iter)

    last_share = float(last_share)
    if not 0.0 < last_share < 1.0:
        raise ValueError(
            f"last_share must be in (0, 1), got last_share={last_share}; "
            "pass None for a uniform schedule"
        )
    shares = np.full(n_iter, (1.0 - last_share) / (n_iter - 1))
    shares[-1] = last_share
    return shares


def pld_epsilon(mus, delta: float) -> float:
    """Return epsilon for composed Gaussian releases from dp_accounting's PLD accountant.

    This is an independent check on the GDP arithmetic: each release is a
    Gaussian mechanism with noise multiplier 1/mu_t at sensitivity one.

    Args:
        mus: the mu_t of each release.
        delta: target delta.

    Returns:
        The epsilon of the composition at ``delta``.
    """
    delta = check_delta(delta)
    accountant = pld_privacy_accountant.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=1e-4,
    )
    for mu in np.atleast_1d(np.asarray(mus, dtype=np.float64)):
        if mu > 0:
            accountant.compose(dp_accounting.GaussianDpEvent(1.0 / float(mu)))
    return float(accountant.get_epsilon(delta))
