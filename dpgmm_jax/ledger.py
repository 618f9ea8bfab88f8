"""A privacy budget ledger: every fit and release draws from one (epsilon, delta) budget.

``PrivacyAccountant(epsilon, delta)`` stores a total budget and records each
spend. Composition goes through Gaussian differential privacy: the total
budget is mu_total = ``mu_from_epsilon_delta(epsilon, delta)``, each request is
converted to its own mu_i, and the requests compose to sqrt(sum_i mu_i^2)-GDP
(Dong, Roth and Su, JRSS-B 2022, Corollary 3.3). A request is accepted only
when sum_i mu_i^2 stays at most mu_total^2, so every sequence of accepted
requests, adaptive or not, is mu_total-GDP and hence (epsilon, delta)-DP.

Convention for a request's delta. A request (epsilon_i, delta_i) is charged
mu_i = ``mu_from_epsilon_delta(epsilon_i, delta)`` at the ledger's delta, not
at delta_i. A mechanism calibrated to (epsilon_i, delta_i) with delta_i <=
delta is mu-GDP with mu = mu_from_epsilon_delta(epsilon_i, delta_i) <= mu_i,
because a smaller delta at the same epsilon needs more noise. The charge
therefore never under-counts, and over-counts when delta_i < delta. A
request with delta_i > delta would be under-counted, so it is rejected.

The ledger is exact in GDP arithmetic: the spent and remaining epsilon are
conversions of sqrt(sum mu_i^2) and sqrt(mu_total^2 - sum mu_i^2), and they
do not add up to the total epsilon because epsilon does not compose
additively under GDP.
"""

import logging
import math
import threading
from typing import NamedTuple

from dpgmm_jax.accounting import epsilon_from_mu, mu_from_epsilon_delta
from dpgmm_jax.validation import check_delta, check_epsilon, check_positive

logger = logging.getLogger(__name__)

# Relative slack on mu^2 in the budget check. It absorbs float rounding in
# sums of squares and the 1e-12 tolerance of dp_accounting's root finder, so
# that spending exactly the remaining budget succeeds. It moves epsilon by
# about 1e-10 relative, far below the accounting's own precision.
_RELATIVE_SLACK = 1e-10


class BudgetExceededError(ValueError):
    """Raised when a request would spend more privacy budget than is left.

    The ledger raises it before the request is recorded, so the caller must
    not draw any noise for it.

    Attributes:
        description: the request's description.
        requested_mu: the GDP parameter the request would have spent.
        remaining_mu: the GDP budget left in the ledger.
    """

    def __init__(self, message: str, description: str, requested_mu: float, remaining_mu: float):
        super().__init__(message)
        self.description = description
        self.requested_mu = requested_mu
        self.remaining_mu = remaining_mu


class LedgerEntry(NamedTuple):
    """One recorded spend.

    Attributes:
        description: what the budget was spent on.
        epsilon: the requested epsilon, or None for a request given as mu.
        delta: the requested delta, or None for a request given as mu.
        mu: the GDP parameter charged to the ledger.
    """

    description: str
    epsilon: float | None
    delta: float | None
    mu: float


class PrivacyAccountant:
    """A ledger of privacy spends against a total (epsilon, delta) budget.

    Args:
        epsilon: total privacy budget, > 0.
        delta: total delta, in (0, 1). Every request is charged at this delta.

    Example::

        accountant = PrivacyAccountant(epsilon=1.0, delta=1e-5)
        accountant.spend(0.5, 1e-5, description="pilot fit")
        accountant.remaining_epsilon  # above 0.5, because GDP composes sub-additively
    """

    def __init__(self, epsilon: float, delta: float):
        self.epsilon = check_epsilon(epsilon)
        self.delta = check_delta(delta)
        self.total_mu = mu_from_epsilon_delta(self.epsilon, self.delta)
        self._spent_mu_squared = 0.0
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()

    # Spending.

    def spend(self, epsilon: float, delta: float, description: str = "") -> LedgerEntry:
        """Charge an (epsilon, delta) request to the ledger, or raise before anything is recorded.

        Args:
            epsilon: the request's epsilon, > 0.
            delta: the request's delta, in (0, 1) and at most the ledger's delta.
            description: what the budget is spent on, shown in errors and the summary.

        Returns:
            The recorded ``LedgerEntry``; its ``mu`` is the charge at the ledger's delta.

        Raises:
            ValueError: if delta exceeds the ledger's delta.
            BudgetExceededError: if the request would overspend the budget.
        """
        epsilon = check_epsilon(epsilon)
        delta = check_delta(delta)
        description = _check_description(description)
        if delta > self.delta:
            raise ValueError(
                f"request {description!r} asks for delta={delta:g}, above the ledger's delta={self.delta:g}; "
                f"calibrate the release at delta <= {self.delta:g}, or create a PrivacyAccountant with a larger delta"
            )
        mu = mu_from_epsilon_delta(epsilon, self.delta)
        return self._charge(LedgerEntry(description, epsilon, delta, mu), f"epsilon={epsilon:g}, delta={delta:g}")

    def spend_mu(self, mu: float, description: str = "") -> LedgerEntry:
        """Charge a mu-GDP release to the ledger, or raise before anything is recorded.

        Args:
            mu: the GDP parameter of the release, > 0.
            description: what the budget is spent on.

        Returns:
            The recorded ``LedgerEntry``.

        Raises:
            BudgetExceededError: if the request would overspend the budget.
        """
        mu = check_positive("mu", mu)
        description = _check_description(description)
        return self._charge(LedgerEntry(description, None, None, mu), f"mu={mu:g}")

    def can_spend(self, epsilon: float, delta: float) -> bool:
        """Return whether ``spend(epsilon, delta)`` would succeed now, without recording anything."""
        epsilon = check_epsilon(epsilon)
        delta = check_delta(delta)
        if delta > self.delta:
            return False
        mu = mu_from_epsilon_delta(epsilon, self.delta)
        with self._lock:
            return self._fits(mu)

    def _fits(self, mu: float) -> bool:
        return self._spent_mu_squared + mu**2 <= self.total_mu**2 * (1.0 + _RELATIVE_SLACK)

    def _charge(self, entry: LedgerEntry, request: str) -> LedgerEntry:
        with self._lock:
            if not self._fits(entry.mu):
                remaining_mu = self._remaining_mu_unlocked()
                remaining_epsilon = self._epsilon_at(remaining_mu)
                raise BudgetExceededError(
                    f"request {entry.description!r} for {request} (mu={entry.mu:.6g}) exceeds the remaining "
                    f"privacy budget: epsilon={remaining_epsilon:.6g} (mu={remaining_mu:.6g}) is left of "
                    f"epsilon={self.epsilon:g}, delta={self.delta:g}; request at most epsilon={remaining_epsilon:.6g} "
                    f"at delta={self.delta:g}, or create a PrivacyAccountant with a larger budget",
                    entry.description,
                    entry.mu,
                    remaining_mu,
                )
            self._spent_mu_squared += entry.mu**2
            self._entries.append(entry)
        logger.info(
            "privacy ledger: spent mu=%.6g on %r (%s); mu=%.6g of %.6g left",
            entry.mu,
            entry.description,
            request,
            self.remaining_mu,
            self.total_mu,
        )
        return entry

    # Reporting.

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Recorded spends, oldest first."""
        with self._lock:
            return tuple(self._entries)

    @property
    def spent_mu(self) -> float:
        """GDP parameter of everything spent so far, sqrt(sum_i mu_i^2)."""
        with self._lock:
            return math.sqrt(self._spent_mu_squared)

    @property
    def remaining_mu(self) -> float:
        """Largest mu a further release can spend, sqrt(mu_total^2 - sum_i mu_i^2)."""
        with self._lock:
            return self._remaining_mu_unlocked()

    def _remaining_mu_unlocked(self) -> float:
        return math.sqrt(max(self.total_mu**2 - self._spent_mu_squared, 0.0))

    @property
    def spent_epsilon(self) -> float:
        """Epsilon at the ledger's delta of everything spent so far (0 before the first spend)."""
        return self._epsilon_at(self.spent_mu)

    @property
    def remaining_epsilon(self) -> float:
        """Largest epsilon one further request at the ledger's delta can spend."""
        return self._epsilon_at(self.remaining_mu)

    def _epsilon_at(self, mu: float) -> float:
        return epsilon_from_mu(mu, self.delta) if mu > 0 else 0.0

    def summary(self) -> str:
        """Return a plain-text table of the budget, every spend and what is left."""
        lines = [
            f"privacy budget: epsilon={self.epsilon:g}, delta={self.delta:g} (mu={self.total_mu:.6g}, GDP composition)",
            f"{'description':<32} {'epsilon':>10} {'delta':>10} {'mu':>10}",
        ]
        for entry in self.entries:
            epsilon = "-" if entry.epsilon is None else f"{entry.epsilon:.4g}"
            delta = "-" if entry.delta is None else f"{entry.delta:.3g}"
            lines.append(f"{entry.description:<32} {epsilon:>10} {delta:>10} {entry.mu:>10.4g}")
        lines.append(f"spent:     epsilon={self.spent_epsilon:.6g} (mu={self.spent_mu:.6g})")
        lines.append(f"remaining: epsilon={self.remaining_epsilon:.6g} (mu={self.remaining_mu:.6g})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(epsilon={self.epsilon:g}, delta={self.delta:g}, "
            f"spent_epsilon={self.spent_epsilon:.4g}, remaining_epsilon={self.remaining_epsilon:.4g}, "
            f"entries={len(self._entries)})"
        )


def _check_description(description) -> str:
    if not isinstance(description, str):
        raise TypeError(f"description must be a string, got description={description!r}")
    return description
