"""Release files (save_release, load_release) and the PRNG keys behind releases."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import Domain, release_gmm
from dpgmm_jax import mechanism
from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.algorithms import ReleaseConfig, dp_em
from dpgmm_jax.domain import to_mechanism_coordinates
from dpgmm_jax.io import FORMAT_NAME, FORMAT_VERSION, InvalidReleaseFileError, load_release, save_release
from dpgmm_jax.types import GMMParams


@pytest.fixture
def records(rng):
    centres = np.array([[2.0, 60.0], [4.5, 80.0]])
    labels = rng.integers(2, size=300)
    return centres[labels] + rng.normal(size=(300, 2)) * np.array([0.3, 5.0])


@pytest.fixture
def domain():
    return Domain.from_bounds([1.0, 40.0], [6.0, 100.0])


@pytest.fixture
def released(records, domain):
    return release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(0))


@pytest.fixture
def saved_file(tmp_path, released):
    params, metadata = released
    return save_release(tmp_path / "release.json", params, metadata)


# Round trip.


def test_round_trip_is_exact(tmp_path, released):
    params, metadata = released
    path = save_release(tmp_path / "release.json", params, metadata)
    loaded_params, loaded_metadata = load_release(path)

    np.testing.assert_array_equal(loaded_params.weights, params.weights)
    np.testing.assert_array_equal(loaded_params.means, params.means)
    np.testing.assert_array_equal(loaded_params.covariances, params.covariances)
    assert loaded_metadata == json.loads(json.dumps(metadata))
    assert loaded_metadata["dp_guarantee"] is True


def test_file_records_format_and_version(saved_file):
    document = json.loads(saved_file.read_text())
    assert document["format"] == FORMAT_NAME
    assert document["format_version"] == FORMAT_VERSION
    assert set(document["params"]) == {"weights", "means", "covariances"}


def test_save_accepts_jax_arrays_and_numpy_scalars(tmp_path):
    params = GMMParams(jnp.array([0.25, 0.75]), jnp.zeros((2, 3)), jnp.broadcast_to(jnp.eye(3), (2, 3, 3)))
    metadata = {"epsilon": np.float64(1.0), "delta": 1e-5, "dp_guarantee": np.bool_(True), "mu": np.float32(0.25)}
    loaded, loaded_metadata = load_release(save_release(tmp_path / "r.json", params, metadata))
    np.testing.assert_array_equal(loaded.weights, [0.25, 0.75])
    assert loaded_metadata["dp_guarantee"] is True


def test_save_rejects_invalid_release(tmp_path, released):
    params, metadata = released
    broken = params._replace(covariances=-params.covariances)
    with pytest.raises(InvalidReleaseFileError, match=r"covariances\[0\] is not positive definite"):
        save_release(tmp_path / "bad.json", broken, metadata)
    assert not (tmp_path / "bad.json").exists()


# Corruptions: each edit of a valid file and the field its error must name.


def set_path(document, keys, value):
    target = document
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value


def delete_path(document, keys):
    target = document
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]


CORRUPTIONS = [
    ("wrong format name", lambda doc: set_path(doc, ["format"], "sklearn.gmm"), r"format must be"),
    ("future version", lambda doc: set_path(doc, ["format_version"], 99), r"format_version 99 is not supported"),
    ("version missing", lambda doc: delete_path(doc, ["format_version"]), r"format_version None"),
    ("params missing", lambda doc: delete_path(doc, ["params"]), r"params is missing"),
    ("weights missing", lambda doc: delete_path(doc, ["params", "weights"]), r"params\.weights is missing"),
    ("negative weight", lambda doc: set_path(doc, ["params", "weights"], [1.5, -0.5]), r"weights\[1\] is negative"),
    ("weights off simplex", lambda doc: set_path(doc, ["params", "weights", 0], 0.9), r"weights sum to"),
    ("weight as string", lambda doc: set_path(doc, ["params", "weights", 0], "0.5"), r"weights\[0\] is not a number"),
    ("weight as bool", lambda doc: set_path(doc, ["params", "weights"], [True, False]), r"weights\[0\] is not a number"),
    ("too few weights", lambda doc: set_path(doc, ["params", "weights"], [1.0]), r"means must have shape \(K=1"),
    ("ragged means", lambda doc: set_path(doc, ["params", "means", 1], [1.0]), r"means must have a regular shape"),
    ("means wrong d", lambda doc: set_path(doc, ["params", "means"], [[1.0], [2.0]]), r"covariances must have shape"),
    ("covariance not square", lambda doc: set_path(doc, ["params", "covariances", 0], [[1.0, 0.0]]), r"covariances must"),
    ("covariance not symmetric", lambda doc: set_path(doc, ["params", "covariances", 1, 0, 1], 123.0),
     r"covariances\[1\] is not symmetric"),
    ("covariance indefinite", lambda doc: set_path(doc, ["params", "covariances", 1], [[1.0, 2.0], [2.0, 1.0]]),
     r"covariances\[1\] is not positive definite"),
    ("covariance singular", lambda doc: set_path(doc, ["params", "covariances", 0], [[0.0, 0.0], [0.0, 1.0]]),
     r"covariances\[0\] is not positive definite"),
    ("metadata missing", lambda doc: delete_path(doc, ["metadata"]), r"metadata is missing"),
    ("epsilon missing", lambda doc: delete_path(doc, ["metadata", "epsilon"]), r"metadata\.epsilon is missing"),
    ("epsilon negative", lambda doc: set_path(doc, ["metadata", "epsilon"], -1.0), r"metadata\.epsilon must be"),
    ("delta above one", lambda doc: set_path(doc, ["metadata", "delta"], 1.5), r"metadata\.delta must be"),
    ("guarantee as string", lambda doc: set_path(doc, ["metadata", "dp_guarantee"], "yes"), r"metadata\.dp_guarantee"),
    ("mu zero", lambda doc: set_path(doc, ["metadata", "mu"], 0.0), r"metadata\.mu must be"),
    ("metadata a list", lambda doc: set_path(doc, ["metadata"], [1, 2]), r"metadata must be a JSON object"),
]


@pytest.mark.parametrize("name, corrupt, message", CORRUPTIONS, ids=[row[0] for row in CORRUPTIONS])
def test_load_rejects_corrupted_file(saved_file, name, corrupt, message):
    document = json.loads(saved_file.read_text())
    corrupt(document)
    saved_file.write_text(json.dumps(document))
    with pytest.raises(InvalidReleaseFileError, match=message) as caught:
        load_release(saved_file)
    assert str(saved_file) in str(caught.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"format": "dpgmm_jax.release", "params": ', r"not valid JSON"),
        ("[1, 2, 3]", r"must contain a JSON object"),
        ("", r"not valid JSON"),
    ],
    ids=["truncated", "array", "empty"],
)
def test_load_rejects_unparseable_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InvalidReleaseFileError, match=message):
        load_release(path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_load_rejects_non_finite_number(saved_file, constant):
    text = saved_file.read_text()
    document = json.loads(text)
    original = json.dumps(document["params"]["means"][0][0])
    saved_file.write_text(text.replace(original, constant, 1))
    with pytest.raises(InvalidReleaseFileError, match=f"non-finite value {constant}"):
        load_release(saved_file)


# Keys.


def test_release_without_key_uses_fresh_entropy(records, domain):
    first, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2)
    second, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2)
    assert not np.array_equal(first.means, second.means)
    assert not np.array_equal(first.covariances, second.covariances)


def test_release_with_key_is_deterministic(records, domain):
    first, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(7))
    again, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(7))
    other, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(8))
    np.testing.assert_array_equal(first.means, again.means)
    np.testing.assert_array_equal(first.covariances, again.covariances)
    assert not np.array_equal(first.means, other.means)


def test_dp_em_draws_noise_from_fresh_key_per_release(records, domain, monkeypatch):
    # Record the key of every noise draw of a DP-EM run. Under disable_jit the
    # scan over iterations runs eagerly, so the keys are concrete values.
    recorded = []
    original_add_noise = mechanism.add_noise

    def recording_add_noise(key, stats, scales):
        recorded.append(tuple(np.asarray(jax.random.key_data(key)).ravel().tolist()))
        return original_add_noise(key, stats, scales)

    monkeypatch.setattr(mechanism, "add_noise", recording_add_noise)
    # The equal split and the data-independent start keep the eager run fast; the keys depend on neither.
    config = ReleaseConfig(n_components=2, n_iter=3, allocation="equal", start="data_independent")
    y = jnp.asarray(to_mechanism_coordinates(records, domain)[0])
    mu = mu_from_epsilon_delta(1.0, 1e-5)
    with jax.disable_jit():
        first = dp_em(jax.random.key(11), y, mu, domain.radius, config)
    first_keys = list(recorded)

    assert len(first_keys) >= config.n_iter
    assert len(set(first_keys)) == len(first_keys), "two releases of one run reused a noise key"

    recorded.clear()
    with jax.disable_jit():
        again = dp_em(jax.random.key(11), y, mu, domain.radius, config)
    assert recorded == first_keys
    np.testing.assert_array_equal(again.params.means, first.params.means)
