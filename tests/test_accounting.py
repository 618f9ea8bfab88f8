"""Calibration and composition against dp_accounting's PLD accountant."""

import numpy as np
import pytest

from dpgmm_jax.accounting import (
    compose_mu,
    epsilon_from_mu,
    iteration_schedule,
    mu_from_epsilon_delta,
    pld_epsilon,
    sensitivity_multiplier,
)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5])
def test_mu_matches_pld_single_release(epsilon, delta):
    mu = mu_from_epsilon_delta(epsilon, delta)
    assert pld_epsilon([mu], delta) == pytest.approx(epsilon, rel=1e-3)


@pytest.mark.parametrize("n_iter", [1, 5, 20])
@pytest.mark.parametrize("last_share", [None, 0.5])
def test_composed_schedule_matches_pld(n_iter, last_share):
    epsilon, delta = 1.0, 1e-5
    mu = mu_from_epsilon_delta(epsilon, delta)
    mus = np.sqrt(iteration_schedule(n_iter, last_share)) * mu
    assert compose_mu(mus) == pytest.approx(mu, rel=1e-12)
    assert pld_epsilon(mus, delta) == pytest.approx(epsilon, rel=1e-3)


def test_mu_epsilon_round_trip():
    mu = mu_from_epsilon_delta(2.0, 1e-6)
    assert epsilon_from_mu(mu, 1e-6) == pytest.approx(2.0, rel=1e-6)


def test_mu_grows_with_epsilon():
    mus = [mu_from_epsilon_delta(e, 1e-5) for e in (0.1, 0.3, 1.0, 3.0, 10.0)]
    assert np.all(np.diff(mus) > 0)


def test_schedule_sums_to_one():
    shares = iteration_schedule(10, 0.5)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[-1] == pytest.approx(0.5)
    assert np.allclose(shares[:-1], 0.5 / 9)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_epsilon_rejected(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        mu_from_epsilon_delta(epsilon, 1e-5)


@pytest.mark.parametrize("delta", [0.0, 1.0, 1.5, -1e-5])
def test_invalid_delta_rejected(delta):
    with pytest.raises(ValueError, match="delta must be in"):
        mu_from_epsilon_delta(1.0, delta)


def test_invalid_schedule_rejected():
    with pytest.raises(ValueError, match="n_iter"):
        iteration_schedule(0)
    with pytest.raises(ValueError, match="last_share"):
        iteration_schedule(5, 1.2)


def test_replace_one_doubles_sensitivity():
    assert sensitivity_multiplier("replace_one") == 2.0
    assert sensitivity_multiplier("add_or_remove_one") == 1.0
