"""GDP calibration and composition against dp_accounting's PLD accountant over a grid.

For every (epsilon, delta) the GDP budget mu = mu_from_epsilon_delta(epsilon,
delta) is split over T DP-EM iterations by ``iteration_schedule``, and the PLD
accountant composes the T Gaussian releases with noise multipliers 1/mu_t.
GDP composition is exact for Gaussian mechanisms, so the PLD epsilon must
match the target up to the accountant's discretisation error.
"""

import numpy as np
import pytest

from dpgmm_jax.accounting import iteration_schedule, mu_from_epsilon_delta, pld_epsilon

EPSILONS = [0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
DELTAS = [1e-3, 1e-5, 1e-8]
# (T, last_share): one release, and the default DP-EM schedule that spends
# half of mu^2 on the last iteration, so the PLD accountant composes
# releases of unequal mu_t.
SCHEDULES = [(1, None), (5, 0.5), (20, 0.5)]


@pytest.mark.parametrize("n_iter, last_share", SCHEDULES)
@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_composed_mu_matches_pld(epsilon, delta, n_iter, last_share):
    mu = mu_from_epsilon_delta(epsilon, delta)
    shares = iteration_schedule(n_iter, last_share)
    iteration_mus = np.sqrt(shares) * mu

    assert iteration_mus.shape == (n_iter,)
    assert np.sum(iteration_mus**2) == pytest.approx(mu**2, rel=1e-12)
    assert pld_epsilon(iteration_mus, delta) == pytest.approx(epsilon, rel=1e-3)


@pytest.mark.parametrize("delta", DELTAS)
def test_pld_detects_overspent_schedule(delta):
    # A schedule that spends 1% more mu^2 than calibrated must give a larger
    # epsilon than the target, so the grid test above can fail.
    epsilon = 1.0
    mu = mu_from_epsilon_delta(epsilon, delta)
    iteration_mus = np.sqrt(iteration_schedule(5, 0.5) * 1.01) * mu
    assert pld_epsilon(iteration_mus, delta) > epsilon * (1 + 1e-3)
