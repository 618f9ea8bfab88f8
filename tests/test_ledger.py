"""The privacy budget ledger: GDP composition, rejection before overspending, reporting."""

import math

import numpy as np
import pytest

from dpgmm_jax.accounting import epsilon_from_mu, iteration_schedule, mu_from_epsilon_delta, pld_epsilon
from dpgmm_jax.ledger import BudgetExceededError, LedgerEntry, PrivacyAccountant


def test_fresh_ledger_has_full_budget():
    accountant = PrivacyAccountant(1.0, 1e-5)
    assert accountant.spent_epsilon == 0.0
    assert accountant.spent_mu == 0.0
    assert accountant.entries == ()
    assert accountant.total_mu == pytest.approx(mu_from_epsilon_delta(1.0, 1e-5), rel=1e-12)
    assert accountant.remaining_epsilon == pytest.approx(1.0, rel=1e-9)


def test_spends_compose_in_mu_squared():
    accountant = PrivacyAccountant(2.0, 1e-5)
    first = accountant.spend(0.5, 1e-5, "pilot")
    second = accountant.spend(1.0, 1e-5, "fit")

    expected_mu = math.hypot(mu_from_epsilon_delta(0.5, 1e-5), mu_from_epsilon_delta(1.0, 1e-5))
    assert accountant.spent_mu == pytest.approx(expected_mu, rel=1e-12)
    assert accountant.spent_epsilon == pytest.approx(epsilon_from_mu(expected_mu, 1e-5), rel=1e-9)
    assert accountant.entries == (first, second)
    assert first == LedgerEntry("pilot", 0.5, 1e-5, mu_from_epsilon_delta(0.5, 1e-5))
    # GDP composition is sub-additive in epsilon.
    assert accountant.spent_epsilon < 1.5


def test_spent_epsilon_matches_pld_accountant():
    accountant = PrivacyAccountant(3.0, 1e-6)
    for index, epsilon in enumerate([0.3, 0.7, 1.2]):
        accountant.spend(epsilon, 1e-6, f"release {index}")
    mus = [entry.mu for entry in accountant.entries]
    assert accountant.spent_epsilon == pytest.approx(pld_epsilon(mus, 1e-6), rel=1e-3)


def test_overspend_raises_and_records_nothing():
    accountant = PrivacyAccountant(1.0, 1e-5)
    accountant.spend(0.8, 1e-5, "first release")
    remaining_before = accountant.remaining_mu

    with pytest.raises(BudgetExceededError) as caught:
        accountant.spend(0.8, 1e-5, "second release")

    message = str(caught.value)
    assert "second release" in message
    assert "epsilon=0.8" in message
    assert f"epsilon={accountant.remaining_epsilon:.6g}" in message
    assert "larger budget" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.remaining_mu == pytest.approx(remaining_before, rel=1e-12)
    assert len(accountant.entries) == 1
    assert accountant.remaining_mu == remaining_before


def test_spending_exactly_remaining_budget_succeeds():
    accountant = PrivacyAccountant(1.0, 1e-5)
    accountant.spend(0.4, 1e-5, "pilot")
    accountant.spend(accountant.remaining_epsilon, 1e-5, "final")
    assert accountant.remaining_mu == pytest.approx(0.0, abs=1e-6)
    assert accountant.spent_epsilon == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(BudgetExceededError):
        accountant.spend(1e-3, 1e-5, "one more")


def test_dp_em_schedule_fills_budget_exactly():
    accountant = PrivacyAccountant(1.0, 1e-5)
    for index, share in enumerate(iteration_schedule(10, 0.5)):
        accountant.spend_mu(math.sqrt(share) * accountant.total_mu, f"DP-EM iteration {index}")
    assert accountant.spent_epsilon == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(BudgetExceededError):
        accountant.spend_mu(1e-3, "after the run")


def test_smaller_delta_is_charged_at_ledger_delta():
    accountant = PrivacyAccountant(1.0, 1e-5)
    entry = accountant.spend(0.5, 1e-8, "strict release")
    assert entry.mu == pytest.approx(mu_from_epsilon_delta(0.5, 1e-5), rel=1e-12)
    assert entry.delta == 1e-8
    # The charge over-counts: the release itself has a smaller mu.
    assert entry.mu > mu_from_epsilon_delta(0.5, 1e-8)


def test_larger_delta_is_rejected():
    accountant = PrivacyAccountant(1.0, 1e-5)
    with pytest.raises(ValueError, match=r"delta=0\.001, above the ledger's delta=1e-05") as caught:
        accountant.spend(0.1, 1e-3, "loose release")
    assert not isinstance(caught.value, BudgetExceededError)
    assert accountant.entries == ()
    assert not accountant.can_spend(0.1, 1e-3)


def test_can_spend_does_not_record():
    accountant = PrivacyAccountant(1.0, 1e-5)
    assert accountant.can_spend(1.0, 1e-5)
    assert not accountant.can_spend(1.01, 1e-5)
    assert accountant.entries == ()


@pytest.mark.parametrize(
    "arguments, error",
    [
        ((0.0, 1e-5), ValueError),
        ((-1.0, 1e-5), ValueError),
        ((float("nan"), 1e-5), ValueError),
        ((1.0, 0.0), ValueError),
        ((1.0, 1.0), ValueError),
        (("1.0", 1e-5), TypeError),
    ],
)
def test_invalid_requests_raise(arguments, error):
    accountant = PrivacyAccountant(1.0, 1e-5)
    with pytest.raises(error):
        accountant.spend(*arguments)
    assert accountant.entries == ()


@pytest.mark.parametrize("mu", [0.0, -0.1, float("inf")])
def test_invalid_mu_raises(mu):
    accountant = PrivacyAccountant(1.0, 1e-5)
    with pytest.raises(ValueError, match="mu"):
        accountant.spend_mu(mu)


@pytest.mark.parametrize("epsilon, delta", [(0.0, 1e-5), (1.0, 0.0), (1.0, 2.0)])
def test_invalid_budget_raises(epsilon, delta):
    with pytest.raises(ValueError):
        PrivacyAccountant(epsilon, delta)


def test_summary_lists_every_spend():
    accountant = PrivacyAccountant(2.0, 1e-5)
    accountant.spend(0.5, 1e-5, "pilot fit")
    accountant.spend_mu(0.1, "extra release")
    summary = accountant.summary()
    assert "epsilon=2, delta=1e-05" in summary
    assert "pilot fit" in summary
    assert "extra release" in summary
    assert f"remaining: epsilon={accountant.remaining_epsilon:.6g}" in summary
    assert f"spent:     epsilon={accountant.spent_epsilon:.6g}" in summary


def test_many_small_spends_never_exceed_total():
    rng = np.random.default_rng(0)
    accountant = PrivacyAccountant(1.0, 1e-5)
    accepted = 0
    for index in range(200):
        try:
            accountant.spend(float(rng.uniform(0.01, 0.2)), 1e-5, f"query {index}")
            accepted += 1
        except BudgetExceededError:
            pass
    assert accepted == len(accountant.entries)
    assert accepted > 1
    total_mu = math.sqrt(sum(entry.mu**2 for entry in accountant.entries))
    assert total_mu <= accountant.total_mu * (1 + 1e-9)
    assert pld_epsilon([entry.mu for entry in accountant.entries], 1e-5) <= 1.0 * (1 + 1e-3)


def test_release_gmm_draws_from_ledger():
    import jax
    import numpy as np

    from dpgmm_jax import Domain, release_gmm

    ledger = PrivacyAccountant(1.0, 1e-5)
    records = np.random.default_rng(0).uniform(-1, 1, size=(200, 2))
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    release_gmm(records, epsilon=0.6, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(0),
                n_iter=2, accountant=ledger)
    assert len(ledger.entries) == 1
    with pytest.raises(BudgetExceededError):
        release_gmm(records, epsilon=0.9, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(1),
                    n_iter=2, accountant=ledger)
    assert len(ledger.entries) == 1
