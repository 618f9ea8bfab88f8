"""dpgmm_jax: differentially private release of Gaussian mixture models in JAX.

The functional core works on pytrees (``GMMParams``, ``SufficientStatistics``)
with explicit PRNG keys, so every function composes with ``jax.jit`` and
``jax.vmap``. ``release_gmm`` is the one-call path from records to a
published mixture with its privacy metadata.
"""

from dpgmm_jax.accounting import (
    NeighbouringRelation,
    compose_mu,
    epsilon_from_mu,
    iteration_schedule,
    mu_from_epsilon_delta,
    pld_epsilon,
)
from dpgmm_jax.algorithms import ReleaseConfig, data_independent_init, dp_em, oracle_release
from dpgmm_jax.allocation import closed_form_shares, cost_coefficients, equal_shares, predicted_expected_kl
from dpgmm_jax.domain import Domain, to_data_coordinates, to_mechanism_coordinates
from dpgmm_jax.em import EMResult, e_step, fit_em, log_prob, m_step, responsibilities, sufficient_statistics
from dpgmm_jax.estimator import DPGaussianMixture
from dpgmm_jax.histogram import histogram_em
from dpgmm_jax.kl import best_matching, gaussian_kl, kl_monte_carlo, matched_bound, permute_components, sample
from dpgmm_jax.parallel import fit_em_sharded
from dpgmm_jax.mechanism import (
    add_noise,
    noise_scales_from_shares,
    postprocess,
    release_mu,
    release_statistics,
)
from dpgmm_jax.release import nonprivate_fit, privacy_metadata, release_gmm
from dpgmm_jax.types import GMMParams, NoiseScales, PublicPrior, Release, SufficientStatistics
from dpgmm_jax.validation import PrivacyLeakWarning

__version__ = "0.1.0"

__all__ = [
    "DPGaussianMixture",
    "Domain",
    "EMResult",
    "GMMParams",
    "NeighbouringRelation",
    "NoiseScales",
    "PrivacyLeakWarning",
    "PublicPrior",
    "Release",
    "ReleaseConfig",
    "SufficientStatistics",
    "add_noise",
    "best_matching",
    "closed_form_shares",
    "compose_mu",
    "cost_coefficients",
    "data_independent_init",
    "dp_em",
    "e_step",
    "epsilon_from_mu",
    "equal_shares",
    "fit_em",
    "fit_em_sharded",
    "gaussian_kl",
    "histogram_em",
    "iteration_schedule",
    "kl_monte_carlo",
    "log_prob",
    "m_step",
    "matched_bound",
    "mu_from_epsilon_delta",
    "noise_scales_from_shares",
    "nonprivate_fit",
    "oracle_release",
    "permute_components",
    "pld_epsilon",
    "postprocess",
    "predicted_expected_kl",
    "privacy_metadata",
    "release_gmm",
    "release_mu",
    "release_statistics",
    "responsibilities",
    "sample",
    "sufficient_statistics",
    "to_data_coordinates",
    "to_mechanism_coordinates",
]
