"""Data-parallel EM on two forced host devices against single-device EM.

XLA reads ``--xla_force_host_platform_device_count`` only when jax starts, so
the sharded fit runs in a subprocess that sets it before importing jax.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from sklearn.datasets import make_blobs

    from dpgmm_jax.em import fit_em, initial_params_from_means
    from dpgmm_jax.parallel import fit_em_sharded, make_record_mesh

    n_records, max_iter, tol = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    x, _ = make_blobs(n_records, n_features=3, centers=4, random_state=0)
    init = initial_params_from_means(x, x[:4])
    mesh = make_record_mesh()
    single = fit_em(jnp.asarray(x), init, max_iter=max_iter, tol=tol, chunk_size=700)
    sharded = fit_em_sharded(x, init, mesh, max_iter=max_iter, tol=tol, chunk_size=700)

    def to_lists(result):
        return {
            "weights": result.params.weights.tolist(),
            "means": result.params.means.tolist(),
            "covariances": result.params.covariances.tolist(),
            "log_likelihood": float(result.log_likelihood),
            "n_iter": int(result.n_iter),
            "converged": bool(result.converged),
        }

    print(json.dumps({
        "n_devices": len(jax.devices()),
        "mesh_size": int(mesh.devices.size),
        "sharded_devices": len(sharded.params.means.sharding.device_set),
        "single": to_lists(single),
        "sharded": to_lists(sharded),
    }))
    """
)


def run_two_devices(n_records: int, max_iter: int, tol: float) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(n_records), str(max_iter), str(tol)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "n_records, max_iter, tol",
    [
        (3000, 60, 0.0),  # N divisible by 2, fixed number of iterations
        (3001, 300, 1e-6),  # one padding row, tolerance stop
    ],
)
def test_sharded_em_matches_single_device(n_records, max_iter, tol):
    output = run_two_devices(n_records, max_iter, tol)
    single, sharded = output["single"], output["sharded"]

    assert output["n_devices"] == 2
    assert output["mesh_size"] == 2
    assert output["sharded_devices"] == 2
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-8, err_msg=name)
    assert sharded["log_likelihood"] == pytest.approx(single["log_likelihood"], rel=1e-5)
    assert sharded["n_iter"] == single["n_iter"]
    assert sharded["converged"] == single["converged"]


def test_sharded_em_rejects_mesh_without_record_axis():
    import jax
    from jax.sharding import Mesh

    from dpgmm_jax.em import initial_params_from_means
    from dpgmm_jax.parallel import fit_em_sharded

    x = np.random.default_rng(0).normal(size=(100, 2))
    init = initial_params_from_means(x, x[:2])
    mesh = Mesh(jax.devices()[:1], ("batch",))
    with pytest.raises(ValueError, match="records"):
        fit_em_sharded(x, init, mesh)
