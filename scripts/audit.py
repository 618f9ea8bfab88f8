"""Audit the Gaussian mechanism empirically: a 95% lower bound on its epsilon.

The audit attacks the product's own release step. It builds a dataset D and
its neighbour D' = D plus one record y* = R e_1 on the boundary of the domain
ball, fully in component 0, so that D and D' differ by the worst-case
contribution (1, y*, vech(y* y*^T)), whose blocks have norms 1, R and R^2.
It computes both datasets' sufficient statistics with
``dpgmm_jax.em.sufficient_statistics``, calibrates noise scales with
``dpgmm_jax.mechanism.noise_scales_from_shares`` at mu =
``mu_from_epsilon_delta(epsilon, delta)``, and draws releases of each with
``dpgmm_jax.mechanism.add_noise`` under ``jax.vmap``. ``release_statistics``
is ``postprocess(add_noise(...))``, and post-processing cannot make two
outputs easier to tell apart, so testing the noisy statistics is the strongest
test of the release.

The test statistic is the likelihood-ratio test between the two output
distributions. It reads the coordinates of a release that carry independent
noise: the counts, the first moments and the upper triangle of the second
moments. Each is divided by its declared noise scale, and the result is
projected onto the unit vector along the scaled difference of the two means. Under D the statistic is
N(0, 1) and under D' N(mu, 1) when the noise is as declared.

For a threshold t, FPR = P(T > t | D) and FNR = P(T <= t | D'). Any
(epsilon, delta)-DP mechanism satisfies FPR + e^epsilon FNR >= 1 - delta and
the same with the roles swapped (the hypothesis-testing characterisation of
differential privacy, Kairouz, Oh and Viswanath, ICML 2015), so

    epsilon >= log((1 - delta - FPR) / FNR).

Replacing FPR and FNR by Clopper-Pearson upper bounds gives a lower bound on
epsilon that holds with the stated confidence, the recipe of Jagielski,
Ullman and Oprea (NeurIPS 2020). The threshold and which of the two
inequalities to use are chosen on the first half of the draws, and the bound
is computed on the second half, so the selection does not invalidate the
confidence level. The two upper bounds are
each taken at confidence 1 - alpha/2, a union bound that keeps the whole
estimate at 1 - alpha.

``--mechanism histogram`` audits the other private release, the cell counts
of ``histogram_em``: D' adds one record to D, which raises one count by
one, and the statistic is that count's noisy difference from D's exact
count, divided by the declared noise 1/mu.

Usage:
    python scripts/audit.py --epsilon 1 --delta 1e-5
    python scripts/audit.py --epsilon 1 --delta 1e-5 --mechanism histogram
    python scripts/audit.py --epsilon 2 --delta 1e-5 --noise-multiplier-scale 0.5   # broken copy, exits 1

Exit status: 0 when the lower bound is at most the claimed epsilon, 1 when it
exceeds it (the mechanism is not as private as it claims).
"""

import argparse
import logging
import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.allocation import equal_shares
from dpgmm_jax.em import sufficient_statistics
from dpgmm_jax.histogram import noisy_histogram
from dpgmm_jax.mechanism import add_noise, noise_scales_from_shares
from dpgmm_jax.types import NoiseScales, SufficientStatistics

logger = logging.getLogger("audit")

N_COMPONENTS = 2
N_FEATURES = 2
N_RECORDS = 500
RADIUS = 3.0
HISTOGRAM_BINS = 16
FIRST_INEQUALITY = "log((1 - delta - FPR) / FNR)"
SECOND_INEQUALITY = "log((1 - delta - FNR) / FPR)"


class AuditResult(NamedTuple):
    """Outcome of one audit.

    Attributes:
        claimed_epsilon: the epsilon the mechanism was calibrated to.
        delta: the delta of the claim.
        mu: the GDP parameter of the calibrated release.
        lower_bound: the 95% (1 - alpha) lower bound on epsilon.
        point_estimate: log((1 - delta - FPR) / FNR) at the chosen threshold,
            with the empirical rates in place of their upper bounds.
        threshold: the chosen threshold on the test statistic.
        inequality: which of the two DP inequalities gave the bound,
            ``FIRST_INEQUALITY`` or ``SECOND_INEQUALITY``.
        false_positives: evaluation draws from D with T > threshold.
        false_negatives: evaluation draws from D' with T <= threshold.
        n_evaluation: draws per dataset used for the bound.
    """

    claimed_epsilon: float
    delta: float
    mu: float
    lower_bound: float
    point_estimate: float
    threshold: float
    inequality: str
    false_positives: int
    false_negatives: int
    n_evaluation: int


def neighbouring_statistics(dtype=jnp.float64) -> tuple[SufficientStatistics, SufficientStatistics]:
    """Build the statistics of D and of D' = D plus one worst-case record.

    D has ``N_RECORDS`` records drawn from a fixed seed inside the ball of
    radius ``RADIUS``, each assigned to one component. The extra record of D'
    is R e_1, on the boundary and along an axis, so that
    ||vech(y y^T)|| = ||y||^2 = R^2 and every group sensitivity is attained.

    Returns:
        ``(stats_d, stats_d_prime)``.
    """
    rng = np.random.default_rng(12345)
    directions = rng.normal(size=(N_RECORDS, N_FEATURES))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    records = directions * RADIUS * rng.uniform(size=(N_RECORDS, 1)) ** (1.0 / N_FEATURES)
    labels = rng.integers(N_COMPONENTS, size=N_RECORDS)
    resp = np.eye(N_COMPONENTS)[labels]

    extra_record = np.zeros((1, N_FEATURES))
    extra_record[0, 0] = RADIUS
    extra_resp = np.eye(N_COMPONENTS)[[0]]

    stats_d = sufficient_statistics(jnp.asarray(records, dtype), jnp.asarray(resp, dtype))
    stats_d_prime = sufficient_statistics(
        jnp.asarray(np.vstack([records, extra_record]), dtype),
        jnp.asarray(np.vstack([resp, extra_resp]), dtype),
    )
    return stats_d, stats_d_prime


def scaled_coordinates(stats: SufficientStatistics, scales: NoiseScales) -> jax.Array:
    """Flatten the independently noised coordinates, each divided by its noise scale.

    The noise on S_k is drawn on the upper triangle and mirrored, so only the
    upper triangle (diagonal included) enters.

    Returns:
        Shape (..., K + K d + K d(d+1)/2).
    """
    d = stats.first_moments.shape[-1]
    rows, cols = jnp.triu_indices(d)
    upper = stats.second_moments[..., rows, cols]
    return jnp.concatenate(
        [
            stats.counts / scales.weights,
            (stats.first_moments / scales.means[:, None]).reshape(stats.counts.shape[:-1] + (-1,)),
            (upper / scales.covariances[:, None]).reshape(stats.counts.shape[:-1] + (-1,)),
        ],
        axis=-1,
    )


def draw_test_statistics(
    key: jax.Array,
    stats: SufficientStatistics,
    baseline: jax.Array,
    direction: jax.Array,
    declared: NoiseScales,
    noise_multiplier_scale: float,
    n_releases: int,
) -> np.ndarray:
    """Draw releases of ``stats`` and project them onto the test direction.

    Args:
        key: PRNG key for the noise.
        stats: the exact statistics of one dataset.
        baseline: scaled coordinates of D, subtracted before projecting.
        direction: unit vector along the scaled difference of the two means.
        declared: the noise scales the mechanism declares.
        noise_multiplier_scale: factor on the noise actually drawn; 1 is the
            real mechanism, below 1 is a broken copy that adds too little noise.
        n_releases: number of releases.

    Returns:
        The test statistics, shape (n_releases,).
    """
    drawn = NoiseScales(*(noise_multiplier_scale * scale for scale in declared))

    @jax.jit
    def project(keys):
        noisy = jax.vmap(lambda one_key: add_noise(one_key, stats, drawn))(keys)
        return (scaled_coordinates(noisy, declared) - baseline) @ direction

    return np.asarray(project(jax.random.split(key, n_releases)))


def clopper_pearson_upper(count: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Return the one-sided Clopper-Pearson upper bound at confidence 1 - alpha.

    The bound is the 1 - alpha quantile of Beta(count + 1, n - count), and 1
    when every trial succeeded (Clopper and Pearson, Biometrika 1934).
    """
    count = np.asarray(count)
    upper = scipy_stats.beta.ppf(1.0 - alpha, count + 1, np.maximum(n - count, 1))
    return np.where(count >= n, 1.0, upper)


def epsilon_bounds(null: np.ndarray, alternative: np.ndarray, thresholds: np.ndarray, delta: float, alpha: float):
    """Return the epsilon lower bounds of both DP inequalities at every threshold.

    Args:
        null: test statistics under D.
        alternative: test statistics under D'.
        thresholds: candidate thresholds t.
        delta: the claimed delta.
        alpha: each Clopper-Pearson bound is taken at confidence 1 - alpha.

    Returns:
        ``(first, second, (false_positives, false_negatives))``. The arrays
        ``first`` and ``second`` hold, per threshold, the bounds
        log((1 - delta - FPR) / FNR) and log((1 - delta - FNR) / FPR) of the
        test "T > t means D'", with Clopper-Pearson upper bounds in place of
        FPR and FNR. The counts are those behind the rates.
    """
    n_null, n_alternative = null.size, alternative.size
    null_sorted = np.sort(null)
    alternative_sorted = np.sort(alternative)
    null_above = n_null - np.searchsorted(null_sorted, thresholds, side="right")
    alternative_at_or_below = np.searchsorted(alternative_sorted, thresholds, side="right")

    # The test rejects D when T > t: FPR = P(T > t | D), FNR = P(T <= t | D').
    fpr_upper = clopper_pearson_upper(null_above, n_null, alpha)
    fnr_upper = clopper_pearson_upper(alternative_at_or_below, n_alternative, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.maximum(1.0 - delta - fpr_upper, 0.0) / fnr_upper)
        second = np.log(np.maximum(1.0 - delta - fnr_upper, 0.0) / fpr_upper)
    return first, second, (null_above, alternative_at_or_below)


def statistics_test_draws(
    key: jax.Array, mu: float, noise_multiplier_scale: float, n_releases: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the test statistic under D and D' for one release of sufficient statistics.

    Returns:
        ``(null, alternative)``, each of shape (n_releases,).
    """
    stats_d, stats_d_prime = neighbouring_statistics()
    declared = noise_scales_from_shares(equal_shares(N_COMPONENTS, jnp.float64), mu, RADIUS)

    baseline = scaled_coordinates(stats_d, declared)
    difference = scaled_coordinates(stats_d_prime, declared) - baseline
    # With the declared noise, ||difference|| is the release's mu: a check
    # that the neighbours are worst-case, before any draws are spent.
    check_scaled_distance(float(jnp.linalg.norm(difference)), mu)
    direction = difference / jnp.linalg.norm(difference)

    key_null, key_alternative = jax.random.split(key)
    null = draw_test_statistics(key_null, stats_d, baseline, direction, declared, noise_multiplier_scale, n_releases)
    alternative = draw_test_statistics(
        key_alternative, stats_d_prime, baseline, direction, declared, noise_multiplier_scale, n_releases
    )
    return null, alternative


def histogram_test_draws(
    key: jax.Array, mu: float, noise_multiplier_scale: float, n_releases: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the test statistic under D and D' for one release of ``histogram_em``'s cell counts.

    D has ``N_RECORDS`` records in the cube [-1, 1]^2 and D' one more, at
    (0.9, 0.9). ``dpgmm_jax.histogram.noisy_histogram`` releases the counts
    of a ``HISTOGRAM_BINS`` x ``HISTOGRAM_BINS`` grid, and everything
    ``histogram_em`` does after it is post-processing. A broken copy is the
    same function called with mu / noise_multiplier_scale.

    Returns:
        ``(null, alternative)``, each of shape (n_releases,).
    """
    rng = np.random.default_rng(54321)
    records = rng.uniform(-1.0, 1.0, size=(N_RECORDS, 2))
    neighbour = np.vstack([records, [[0.9, 0.9]]])
    sigma = 1.0 / mu
    drawn_mu = mu / noise_multiplier_scale

    def release(one_key, y):
        return noisy_histogram(one_key, y, drawn_mu, HISTOGRAM_BINS, 1.0, "add_or_remove_one")

    # The same key gives the same noise, so the difference of two releases
    # is the difference of the exact counts.
    difference = np.asarray(release(key, jnp.asarray(neighbour)) - release(key, jnp.asarray(records))) / sigma
    check_scaled_distance(float(np.linalg.norm(difference)), mu)
    direction = jnp.asarray(difference / np.linalg.norm(difference))
    counts, _ = np.histogramdd(records, bins=HISTOGRAM_BINS, range=[(-1.0, 1.0)] * 2)
    baseline = jnp.asarray(counts.T.ravel()) / sigma

    @jax.jit
    def project(keys, y):
        noisy = jax.vmap(lambda one_key: release(one_key, y))(keys)
        return (noisy / sigma - baseline) @ direction

    key_null, key_alternative = jax.random.split(key)
    null = np.asarray(project(jax.random.split(key_null, n_releases), jnp.asarray(records)))
    alternative = np.asarray(project(jax.random.split(key_alternative, n_releases), jnp.asarray(neighbour)))
    return null, alternative


def check_scaled_distance(distance: float, mu: float) -> None:
    """Raise RuntimeError unless the neighbours' noise-scaled distance equals mu, the worst case."""
    if not math.isclose(distance, mu, rel_tol=1e-9):
        raise RuntimeError(
            f"the neighbouring datasets do not attain the sensitivity: scaled distance {distance} != mu={mu}"
        )


MECHANISMS = {"statistics": statistics_test_draws, "histogram": histogram_test_draws}


def audit(
    epsilon: float,
    delta: float,
    n_releases: int = 200_000,
    noise_multiplier_scale: float = 1.0,
    seed: int = 0,
    alpha: float = 0.05,
    mechanism: str = "statistics",
) -> AuditResult:
    """Run the likelihood-ratio audit of one Gaussian release.

    Args:
        epsilon: the claimed epsilon.
        delta: the claimed delta.
        n_releases: releases drawn from each of D and D'; half of them choose
            the threshold and half bound epsilon.
        noise_multiplier_scale: factor on the noise actually drawn (1 is the
            real mechanism).
        seed: seed of the audit's own PRNG key.
        alpha: one minus the confidence level of the lower bound.
        mechanism: "statistics" (DP-EM's release of sufficient statistics)
            or "histogram" (the cell counts of ``histogram_em``).

    Returns:
        The ``AuditResult``.
    """
    if n_releases < 1000:
        raise ValueError(f"n_releases must be >= 1000 for a meaningful audit, got n_releases={n_releases}")
    if not noise_multiplier_scale > 0:
        raise ValueError(f"noise_multiplier_scale must be > 0, got noise_multiplier_scale={noise_multiplier_scale}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {tuple(MECHANISMS)}, got mechanism={mechanism!r}")

    # The sensitivity checks need float64; float32 rounds at 1e-7.
    jax.config.update("jax_enable_x64", True)
    mu = mu_from_epsilon_delta(epsilon, delta)
    draw = MECHANISMS[mechanism]
    null, alternative = draw(jax.random.key(seed), mu, noise_multiplier_scale, n_releases)

    half = n_releases // 2
    select_null, evaluate_null = null[:half], null[half:]
    select_alternative, evaluate_alternative = alternative[:half], alternative[half:]

    # Candidate thresholds are quantiles of the pooled selection draws.
    candidates = np.quantile(np.concatenate([select_null, select_alternative]), np.linspace(0.0005, 0.9995, 2000))
    first, second, _ = epsilon_bounds(select_null, select_alternative, candidates, delta, alpha / 2)
    if np.nanmax(first) >= np.nanmax(second):
        inequality, threshold = FIRST_INEQUALITY, float(candidates[np.nanargmax(first)])
    else:
        inequality, threshold = SECOND_INEQUALITY, float(candidates[np.nanargmax(second)])

    first, second, (false_positives, false_negatives) = epsilon_bounds(
        evaluate_null, evaluate_alternative, np.array([threshold]), delta, alpha / 2
    )
    n_evaluation = evaluate_null.size
    lower_bound = float(first[0] if inequality == FIRST_INEQUALITY else second[0])
    false_positives, false_negatives = int(false_positives[0]), int(false_negatives[0])

    fpr, fnr = false_positives / n_evaluation, false_negatives / n_evaluation
    if inequality == FIRST_INEQUALITY:
        numerator, denominator = 1.0 - delta - fpr, fnr
    else:
        numerator, denominator = 1.0 - delta - fnr, fpr
    if numerator <= 0:
        point_estimate = -math.inf
    elif denominator == 0:
        point_estimate = math.inf
    else:
        point_estimate = math.log(numerator / denominator)
    # A threshold with no evidence gives log(0 / x); the audit then found nothing.
    lower_bound = max(lower_bound, 0.0) if np.isfinite(lower_bound) else 0.0

    return AuditResult(
        claimed_epsilon=float(epsilon),
        delta=float(delta),
        mu=float(mu),
        lower_bound=lower_bound,
        point_estimate=point_estimate,
        threshold=threshold,
        inequality=inequality,
        false_positives=false_positives,
        false_negatives=false_negatives,
        n_evaluation=n_evaluation,
    )


def format_result(result: AuditResult, noise_multiplier_scale: float) -> str:
    """Return the human-readable report of one audit."""
    verdict = "FAIL: the mechanism leaks more than claimed" if result.lower_bound > result.claimed_epsilon else "pass"
    return "\n".join(
        [
            f"claimed epsilon          {result.claimed_epsilon:g} (delta={result.delta:g}, mu={result.mu:.5f})",
            f"noise multiplier scale   {noise_multiplier_scale:g}",
            f"empirical epsilon, 95% lower bound (Clopper-Pearson)  {result.lower_bound:.4f}",
            f"empirical epsilon, point estimate                     {result.point_estimate:.4f}",
            f"test T > {result.threshold:.4f} means D': {result.false_positives} false positives "
            f"and {result.false_negatives} false negatives in {result.n_evaluation} evaluation draws "
            f"per dataset, bound {result.inequality}",
            f"verdict                  {verdict}",
        ]
    )


def main(argv=None) -> int:
    """Parse arguments, run the audit, print it and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilon", type=float, required=True, help="claimed epsilon the release is calibrated to")
    parser.add_argument("--delta", type=float, required=True, help="claimed delta, in (0, 1)")
    parser.add_argument(
        "--n-releases", type=int, default=200_000, help="releases drawn from each neighbouring dataset (default 200000)"
    )
    parser.add_argument(
        "--noise-multiplier-scale",
        type=float,
        default=1.0,
        help="factor on the noise actually drawn; 1 audits the real mechanism, 0.5 a broken copy with half the noise",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the audit's PRNG key (default 0)")
    parser.add_argument(
        "--mechanism",
        choices=tuple(MECHANISMS),
        default="statistics",
        help="the release to audit: DP-EM's sufficient statistics (default) or histogram_em's cell counts",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    result = audit(args.epsilon, args.delta, args.n_releases, args.noise_multiplier_scale, args.seed,
                   mechanism=args.mechanism)
    print(format_result(result, args.noise_multiplier_scale))
    if result.lower_bound > result.claimed_epsilon:
        logger.error(
            "empirical epsilon lower bound %.4f exceeds the claimed epsilon %g",
            result.lower_bound,
            result.claimed_epsilon,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
