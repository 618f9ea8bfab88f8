#!/usr/bin/env bash
# Measure EM throughput and the release benchmark on an accelerator machine.
#
# Prints the devices jax.devices() returns, then the time per EM iteration and the records
# processed per second for N = 10,000,000, d = 32, K = 64 in float32 with the
# chunked E step (compile time excluded), then runs the release and Monte Carlo
# KL benchmarks of scripts/bench.py. It installs only this repository, without
# dependencies, so jax with its accelerator plugin must already be installed.
# Budget: under 5 minutes; each step has its own timeout.
#
#     bash scripts/gpu_check.sh [output_dir]
#
# PYTHON sets the interpreter; N_RECORDS (default 10000000) shrinks the EM
# check for a smoke test on a CPU; INSTALL=0 skips the pip install where the
# repository is installed already.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUTPUT_DIR=${1:-${OUT:-gpu_check_output}}
N_RECORDS=${N_RECORDS:-10000000}
mkdir -p "$OUTPUT_DIR"

if [[ "${INSTALL:-1}" != 0 ]]; then
    echo "== install (repository only, no dependencies)"
    timeout 30 "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e .
fi

echo "== EM throughput: N=$N_RECORDS, d=32, K=64, float32, chunked"
timeout 120 "$PYTHON" - "$OUTPUT_DIR/em_throughput.json" "$N_RECORDS" <<'EOF'
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dpgmm_jax.em import DEFAULT_CHUNK_SIZE, fit_em, initial_params_from_means

N_RECORDS, N_FEATURES, N_COMPONENTS, N_ITER = int(sys.argv[2]), 32, 64, 10
print("devices:", jax.devices(), flush=True)

key_centres, key_labels, key_noise = jax.random.split(jax.random.key(0), 3)
centres = 5.0 * jax.random.normal(key_centres, (N_COMPONENTS, N_FEATURES), jnp.float32)
labels = jax.random.randint(key_labels, (N_RECORDS,), 0, N_COMPONENTS)
x = centres[labels] + jax.random.normal(key_noise, (N_RECORDS, N_FEATURES), jnp.float32)
x = jax.block_until_ready(x)

# The start reads a 100,000-record subset: assigning all 10^7 records to their
# nearest mean in NumPy would take longer than the fit.
subset = np.asarray(x[:100_000])
init = initial_params_from_means(subset, subset[:: len(subset) // N_COMPONENTS][:N_COMPONENTS], reg_covar=1e-3)

# reg_covar 1e-3 keeps the float32 Cholesky factors finite for components
# that start with fewer records than dimensions (seen at N = 20,000, where
# float32 rounding left a start covariance with eigenvalue -3.8e-5).
start = time.perf_counter()
jax.block_until_ready(fit_em(x, init, max_iter=1, tol=0.0, reg_covar=1e-3))
compile_and_one = time.perf_counter() - start

start = time.perf_counter()
result = jax.block_until_ready(fit_em(x, init, max_iter=N_ITER, tol=0.0, reg_covar=1e-3))
seconds = time.perf_counter() - start
if not np.isfinite(float(result.log_likelihood)) or int(result.n_iter) != N_ITER:
    print(
        f"WARNING: the fit stopped after {int(result.n_iter)} of {N_ITER} iterations with mean log-likelihood "
        f"{float(result.log_likelihood)}; the timing below is not a full {N_ITER}-iteration run",
        flush=True,
    )

# fit_em runs N_ITER E and M steps plus one final E step for the log-likelihood.
e_steps = int(result.n_iter) + 1
per_iteration = seconds / e_steps
# Matrix-product work per E+M step: 2 N K d^2 for the projections and
# 2 N K d(d+1)/2 for the second moments (multiply-adds counted as 2 flops).
flops = 2 * N_RECORDS * N_COMPONENTS * (N_FEATURES**2 + N_FEATURES * (N_FEATURES + 1) // 2)
summary = {
    "device": str(jax.devices()[0]),
    "n_records": N_RECORDS, "n_features": N_FEATURES, "n_components": N_COMPONENTS,
    "chunk_size": DEFAULT_CHUNK_SIZE, "dtype": str(result.params.means.dtype),
    "first_call_seconds_with_compile": compile_and_one,
    "seconds": seconds, "e_steps": e_steps, "seconds_per_iteration": per_iteration,
    "records_per_second": N_RECORDS / per_iteration,
    "matmul_tflops_per_second": flops / per_iteration / 1e12,
    "mean_log_likelihood": float(result.log_likelihood),
}
print(
    f"EM: {per_iteration * 1e3:.1f} ms per iteration, {N_RECORDS / per_iteration:.3g} records/s, "
    f"{flops / per_iteration / 1e12:.3g} TFLOP/s in matrix products; {e_steps} E steps in {seconds:.2f} s "
    f"(compile excluded; first call with compile {compile_and_one:.1f} s); "
    f"mean log-likelihood {float(result.log_likelihood):.4f}",
    flush=True,
)
with open(sys.argv[1], "w") as output:
    json.dump(summary, output, indent=2)
EOF

echo "== release and Monte Carlo KL benchmarks"
timeout 150 "$PYTHON" scripts/bench.py "$OUTPUT_DIR/bench_gpu.json" --only releases kl_monte_carlo

echo "== done; results in $OUTPUT_DIR"
