"""Pytree containers shared by every module.

All containers are NamedTuples of arrays, so they pass through ``jax.jit``,
``jax.vmap`` and ``jax.lax.scan`` unchanged and stack along a leading batch
axis when vmapped.
"""

from typing import NamedTuple

import jax


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture with full covariances.

    Attributes:
        weights: mixture weights pi_k, shape (K,), on the probability simplex.
        means: component means m_k, shape (K, d).
        covariances: symmetric positive definite matrices C_k, shape (K, d, d).
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class SufficientStatistics(NamedTuple):
    """Responsibility-weighted sufficient statistics of a Gaussian mixture.

    For records y_i and responsibilities r_k(y_i):

        counts[k]          = n_k = sum_i r_k(y_i)
        first_moments[k]   = s_k = sum_i r_k(y_i) y_i
        second_moments[k]  = S_k = sum_i r_k(y_i) y_i y_i^T

    Attributes:
        counts: shape (K,).
        first_moments: shape (K, d).
        second_moments: shape (K, d, d), symmetric.
    """

    counts: jax.Array
    first_moments: jax.Array
    second_moments: jax.Array


class NoiseScales(NamedTuple):
    """Standard deviations of the Gaussian noise, one per group and component.

    Attributes:
        weights: sigma_{w,k}, noise on the counts n_k, shape (K,).
        means: sigma_{m,k}, noise on each coordinate of s_k, shape (K,).
        covariances: sigma_{c,k}, noise on each upper-triangular entry of
            S_k, shape (K,).
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class Release(NamedTuple):
    """One private release after post-processing.

    Attributes:
        params: the released mixture, in the coordinates of the statistics.
        counts: the floored noisy counts n_k^+, shape (K,). They are a
            function of the noisy statistics, so publishing them is free, and
            later iterations use them to rebuild statistics from ``params``.
    """

    params: GMMParams
    counts: jax.Array


class PublicPrior(NamedTuple):
    """A public mixture that plans the noise allocation, in data units.

    Attributes:
        params: the prior mixture, for example a model published earlier or
            one fitted to public data. It must not be computed from the
            records being released.
        n_records: a public estimate of the number of records N; the
            allocation reads counts w_k * n_records. The true N is private
            under add/remove, so it must not be read off the data.
    """

    params: GMMParams
    n_records: float
