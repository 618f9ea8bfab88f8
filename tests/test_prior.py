"""A public prior as the source of the noise allocation."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import DPGaussianMixture, Domain, GMMParams, PublicPrior, pld_epsilon, release_gmm
from dpgmm_jax.algorithms import ReleaseConfig, allocate_shares, dp_em_trace, prior_release
from dpgmm_jax.domain import params_to_mechanism_coordinates, to_data_coordinates
from dpgmm_jax.ledger import PrivacyAccountant
from dpgmm_jax.mechanism import statistics_from_release
from dpgmm_jax.release import check_prior

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CENTRES = np.array([[-2.0, -1.0], [0.5, 2.0], [2.5, -1.5]])


def draw_records(rng, n_records):
    labels = rng.integers(3, size=n_records)
    return CENTRES[labels] + 0.4 * rng.normal(size=(n_records, 2)), labels


def public_prior(n_records=3000.0):
    covariances = np.broadcast_to(0.2 * np.eye(2), (3, 2, 2)).copy()
    return PublicPrior(GMMParams(np.full(3, 1.0 / 3.0), CENTRES + 0.3, covariances), n_records)


@pytest.fixture
def records(rng):
    return draw_records(rng, 3000)


def test_prior_round_trips_through_mechanism_coordinates():
    domain = Domain.from_bounds([-5.0, -4.0], [5.0, 6.0])
    prior = public_prior().params
    back = to_data_coordinates(params_to_mechanism_coordinates(prior, domain), domain)
    np.testing.assert_allclose(back.means, prior.means, rtol=1e-12)
    np.testing.assert_allclose(back.covariances, prior.covariances, rtol=1e-12)


def test_prior_means_outside_domain_are_projected():
    domain = Domain.from_ball([0.0, 0.0], 2.0)
    prior = public_prior().params
    mapped = params_to_mechanism_coordinates(prior, domain)
    assert np.linalg.norm(mapped.means, axis=1).max() <= domain.radius * (1 + 1e-12)


@pytest.mark.parametrize("allocation", ["closed_form", "optax"])
def test_first_allocation_reads_the_prior_not_the_data(rng, allocation):
    config = ReleaseConfig(n_components=3, n_iter=3, allocation=allocation)
    prior = prior_release(GMMParams(*(jnp.asarray(a) for a in public_prior().params)), jnp.asarray(3000.0))
    key = jax.random.key(1)

    first_data, _ = draw_records(rng, 3000)
    other_data = rng.uniform(-3.0, 3.0, size=(3000, 2))
    _, shares = dp_em_trace(key, jnp.asarray(first_data) / 10, 1.0, 1.0, config, None, prior)
    _, other_shares = dp_em_trace(key, jnp.asarray(other_data) / 10, 1.0, 1.0, config, None, prior)

    # The first iteration's split is the same for both datasets and equal to
    # the split planned from the prior alone. The closed form reads neither
    # the key nor mu, so any key and mu reproduce it. The solver draws from a
    # key inside dp_em_trace, so for it only the independence of the data is
    # checked.
    np.testing.assert_array_equal(shares[0], other_shares[0])
    if allocation == "closed_form":
        expected = allocate_shares(jax.random.key(0), statistics_from_release(prior), 1.0, 1.0, config)
        np.testing.assert_allclose(shares[0], expected, rtol=1e-6)
    assert not np.allclose(shares[0], 1.0 / 3.0), "the prior should move the split off the equal one"

    # Later iterations plan from the private iterates, which do depend on the data.
    assert not np.allclose(shares[1], other_shares[1])


def test_dp_em_with_prior_metadata(records):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    params, metadata = release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=3,
                                   key=jax.random.key(2), prior=public_prior())
    assert metadata["start"] == "public_prior"
    assert metadata["allocation_source"] == "public prior, then the previous private iterate"
    assert metadata["dp_guarantee"] is True
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(1.0, rel=1e-3)
    assert np.linalg.eigvalsh(params.covariances).min() > 0


def test_labelled_with_prior_is_one_release(records):
    x, labels = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    params, metadata = release_gmm(x, epsilon=2.0, delta=1e-5, domain=domain, n_components=3, mode="labelled",
                                   labels=labels, key=jax.random.key(3), prior=public_prior())
    assert metadata["n_releases"] == 1
    assert metadata["pilot_fraction"] is None
    assert metadata["allocation_source"] == "public prior"
    assert metadata["composed_mu"] == pytest.approx(metadata["mu"], rel=1e-12)
    np.testing.assert_allclose(params.means, CENTRES, atol=0.1)


def test_equal_split_reads_no_statistics(records):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    _, metadata = release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, key=jax.random.key(4),
                              allocation="equal", n_iter=2)
    assert metadata["allocation_source"] == "none: the equal split reads no statistics"


def test_labelled_without_prior_names_the_pilot(records):
    x, labels = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    _, metadata = release_gmm(x, epsilon=2.0, delta=1e-5, domain=domain, n_components=3, mode="labelled",
                              labels=labels, key=jax.random.key(3))
    assert metadata["allocation_source"] == "private pilot release"
    assert metadata["n_releases"] == 2


def _with_params(**fields):
    prior = public_prior()
    return PublicPrior(prior.params._replace(**fields), prior.n_records)


BAD_PRIORS = [
    ("not a prior", public_prior().params, TypeError, "PublicPrior"),
    ("weights and means disagree", _with_params(weights=np.full(4, 0.25)), ValueError, "prior.params is invalid"),
    ("four components", PublicPrior(GMMParams(np.full(4, 0.25), np.zeros((4, 2)), np.broadcast_to(np.eye(2), (4, 2, 2))),
                                    10.0), ValueError, "prior has 4 components"),
    ("weights off simplex", _with_params(weights=np.array([0.5, 0.5, 0.5])), ValueError, "simplex"),
    ("covariance not PD", _with_params(covariances=-np.broadcast_to(np.eye(2), (3, 2, 2))), ValueError,
     "positive definite"),
    ("NaN mean", _with_params(means=np.where(CENTRES > 2, np.nan, CENTRES)), ValueError, "not finite"),
    ("zero records", PublicPrior(public_prior().params, 0.0), ValueError, "n_records=0.0"),
    ("NaN records", PublicPrior(public_prior().params, float("nan")), ValueError, "n_records=nan"),
    ("bool records", PublicPrior(public_prior().params, True), ValueError, "n_records=True"),
]


@pytest.mark.parametrize("case, prior, error, match", BAD_PRIORS, ids=[row[0] for row in BAD_PRIORS])
def test_bad_prior_rejected_before_spending(records, case, prior, error, match):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    accountant = PrivacyAccountant(epsilon=10.0, delta=1e-5)
    with pytest.raises(error, match=match):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, prior=prior, accountant=accountant)
    assert accountant.spent_mu == 0.0

    estimator = DPGaussianMixture(3, bounds=([-4.0, -4.0], [4.0, 4.0]), prior=prior, accountant=accountant)
    with pytest.raises(error, match=match):
        estimator.fit(x)
    assert accountant.spent_mu == 0.0


def test_prior_with_wrong_dimension_rejected(records):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    prior = PublicPrior(GMMParams(np.full(3, 1 / 3), np.zeros((3, 3)), np.broadcast_to(np.eye(3), (3, 3, 3))), 10.0)
    with pytest.raises(ValueError, match="d=3 features but the domain has d=2"):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, prior=prior)


@pytest.mark.parametrize("options, match", [({"mode": "oracle"}, "takes no prior"),
                                            ({"start": "histogram"}, "replaces the histogram start"),
                                            ({"start": "kmeans"}, "replaces the kmeans start")])
def test_prior_rejected_where_it_has_no_role(records, options, match):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    with pytest.raises(ValueError, match=match):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, prior=public_prior(), **options)


@pytest.mark.parametrize("options, match", [({"start": "kmeans"}, "start='kmeans' has no role with a prior"),
                                            ({"mode": "histogram_em"}, "takes no prior")])
def test_estimator_rejects_prior_before_spending(records, options, match):
    x, _ = records
    accountant = PrivacyAccountant(epsilon=10.0, delta=1e-3)
    gmm = DPGaussianMixture(3, bounds=([-4.0, -4.0], [4.0, 4.0]), prior=public_prior(), accountant=accountant,
                            **options)
    with pytest.raises(ValueError, match=match):
        gmm.fit(x)
    assert accountant.spent_mu == 0.0


def test_prior_float32_no_warning(records):
    x, _ = records
    domain = Domain.from_bounds([-4.0, -4.0], [4.0, 4.0])
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        release = check_prior(public_prior(), domain, 3, np.float64)
    assert release.params.means.dtype == np.float32


def test_estimator_passes_prior(records):
    x, labels = records
    gmm = DPGaussianMixture(3, epsilon=2.0, bounds=([-4.0, -4.0], [4.0, 4.0]), mode="labelled", prior=public_prior(),
                            random_state=0).fit(x, labels)
    assert gmm.privacy_["allocation_source"] == "public prior"
    assert gmm.privacy_["n_releases"] == 1


def test_prior_sweep_runs_in_harness():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.harness import prepare_dataset, run_dataset

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose("config", overrides=["+sweep=prior", "datasets.synthetic.options.n_samples=1000"])
    prepared = prepare_dataset(config.datasets.synthetic, "float64")
    methods = OmegaConf.create({"dp_em_public_prior": config.methods.dp_em_public_prior})
    kl = OmegaConf.create({"n_samples": 300})
    rows, releases = run_dataset(prepared, methods, config.release, [1.0], config.delta, 2, 0, kl)

    assert len(rows) == 2
    assert all(np.isfinite(row["kl_mc"]) for row in rows)
    privacy = releases[0]["privacy"]
    assert privacy["start"] == "public_prior"
    assert privacy["n_iter"] == 1
    assert privacy["allocation_source"] == "public prior, then the previous private iterate"


def test_public_sample_prior_needs_generating_model():
    from hydra import compose, initialize_config_dir

    from experiments.harness import prepare_dataset, public_sample_prior

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose("config", overrides=["+sweep=eps_grid"])
    prepared = prepare_dataset(config.datasets.faithful, "float64")
    with pytest.raises(ValueError, match="'faithful' has none"):
        public_sample_prior(prepared, 100, 1)
