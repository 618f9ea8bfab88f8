"""Benchmark dpgmm_jax against NumPy, SciPy and scikit-learn references.

Each benchmark times the JAX code and its reference in the same process on
the same CPU, prints one line with both times and their ratio, and writes
every number to a JSON file:

    em_float32, em_float64  fit_em against sklearn's GaussianMixture, full
                            covariances, tolerance stop off, same start
    releases                vmapped release_statistics + matched_bound
                            against a NumPy loop computing the same thing
    kl_monte_carlo          kl_monte_carlo against scipy.stats
    memory                  peak resident memory of one chunked EM
                            iteration in float32, in a subprocess
    compilation             first against second call of fit_em with the
                            same shapes, and the size of its jit cache

JAX times exclude compilation: every jitted function runs once before it
is timed. JAX times are the median of --repeats runs. The scikit-learn and
release references run once, because a full-size fit takes minutes. The
Monte Carlo KL reference takes under a second, so it too is the median of
--repeats runs.

    python scripts/bench.py [bench_results.json] [--quick] [--repeats 3]
"""

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from scipy.stats import multivariate_normal  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from dpgmm_jax.allocation import equal_shares  # noqa: E402
from dpgmm_jax.em import fit_em, initial_params_from_means  # noqa: E402
from dpgmm_jax.kl import kl_monte_carlo, matched_bound  # noqa: E402
from dpgmm_jax.mechanism import add_noise, noise_scales_from_shares, postprocess_smooth, release_statistics  # noqa: E402
from dpgmm_jax.types import GMMParams, SufficientStatistics  # noqa: E402

logger = logging.getLogger("bench")

N_COMPONENTS = 10
N_FEATURES = 10
RADIUS = 10.0

# Sizes of the full run and of --quick, which must finish in under two
# minutes on a 2-core CPU.
FULL = {"em_records": 100_000, "em_iter": 100, "releases": 1000, "kl_samples": 100_000, "memory_records": 2_000_000}
QUICK = {"em_records": 20_000, "em_iter": 20, "releases": 200, "kl_samples": 20_000, "memory_records": 200_000}

TARGETS = {"em_float32": 8.0, "em_float64": 3.0, "releases": 50.0, "kl_monte_carlo": 10.0}
MEMORY_LIMIT_BYTES = 3e9
LOG_LIKELIHOOD_RTOL = 1e-3


def timed(fn, *args):
    """Run ``fn(*args)``, block on its JAX outputs, and return (seconds, output)."""
    start = time.perf_counter()
    output = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, output


def median_time(fn, *args, repeats: int):
    """Return the median of ``repeats`` timed runs of ``fn`` and the last output."""
    times = []
    for _ in range(repeats):
        seconds, output = timed(fn, *args)
        times.append(seconds)
    return statistics.median(times), output


def synthetic_records(n_records: int, dtype, seed: int = 0) -> np.ndarray:
    """Draw records from a well-separated K = 10, d = 10 Gaussian mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(N_COMPONENTS, N_FEATURES))
    labels = rng.integers(N_COMPONENTS, size=n_records)
    return (centres[labels] + rng.normal(size=(n_records, N_FEATURES))).astype(dtype)


def report(name: str, jax_seconds: float, reference_seconds: float, reference: str, extra: str = "") -> dict:
    ratio = reference_seconds / jax_seconds
    target = TARGETS[name]
    verdict = "met" if ratio >= target else "NOT met"
    print(
        f"{name}: jax {jax_seconds:.4f} s, {reference} {reference_seconds:.4f} s, "
        f"ratio {ratio:.1f}x (target {target:g}x, {verdict}){extra}",
        flush=True,
    )
    return {
        "jax_seconds": jax_seconds,
        "reference_seconds": reference_seconds,
        "reference": reference,
        "ratio": ratio,
        "target_ratio": target,
        "target_met": ratio >= target,
    }


def bench_em(dtype, sizes: dict, repeats: int) -> tuple[str, dict]:
    """Time fit_em and GaussianMixture from the same start, tolerance stop off."""
    n_records, n_iter = sizes["em_records"], sizes["em_iter"]
    x = synthetic_records(n_records, dtype)
    rng = np.random.default_rng(1)
    init = initial_params_from_means(x, x[rng.choice(n_records, N_COMPONENTS, replace=False)])
    x_device = jnp.asarray(x)

    jax.block_until_ready(fit_em(x_device, init, max_iter=n_iter, tol=0.0))  # compile
    jax_seconds, result = median_time(lambda: fit_em(x_device, init, max_iter=n_iter, tol=0.0), repeats=repeats)

    model = GaussianMixture(
        N_COMPONENTS, covariance_type="full", max_iter=n_iter, tol=0.0, reg_covar=1e-6,
        weights_init=np.asarray(init.weights), means_init=np.asarray(init.means),
        precisions_init=np.linalg.inv(np.asarray(init.covariances)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sklearn_seconds, _ = timed(model.fit, x)

    ours = float(result.log_likelihood)
    theirs = float(model.score(x))
    relative = abs(ours - theirs) / abs(theirs)
    name = f"em_{np.dtype(dtype).name}"
    extra = (
        f"; N={n_records}, {n_iter} iterations each (jax {int(result.n_iter)}, sklearn {model.n_iter_}), "
        f"compile excluded; mean log-likelihood jax {ours:.6f} sklearn {theirs:.6f} "
        f"(relative difference {relative:.1e}, limit {LOG_LIKELIHOOD_RTOL:g})"
    )
    entry = report(name, jax_seconds, sklearn_seconds, "sklearn", extra)
    entry.update(
        n_records=n_records, n_iter=n_iter, jax_n_iter=int(result.n_iter), sklearn_n_iter=int(model.n_iter_),
        sklearn_dtype=str(model.means_.dtype), log_likelihood_jax=ours, log_likelihood_sklearn=theirs,
        log_likelihood_relative_difference=relative, log_likelihood_within_limit=relative <= LOG_LIKELIHOOD_RTOL,
    )
    return name, entry


def reference_statistics() -> tuple[SufficientStatistics, GMMParams]:
    """Build float64 statistics of a K = 10, d = 10 mixture with about 1,000 records per component."""
    rng = np.random.default_rng(2)
    counts = rng.uniform(500.0, 1500.0, size=N_COMPONENTS)
    means = rng.uniform(-3.0, 3.0, size=(N_COMPONENTS, N_FEATURES))
    factors = rng.normal(size=(N_COMPONENTS, N_FEATURES, N_FEATURES))
    covariances = factors @ np.swapaxes(factors, 1, 2) / N_FEATURES + 0.5 * np.eye(N_FEATURES)
    stats = SufficientStatistics(
        jnp.asarray(counts),
        jnp.asarray(counts[:, None] * means),
        jnp.asarray(counts[:, None, None] * (covariances + np.einsum("kd,ke->kde", means, means))),
    )
    return stats, postprocess_smooth(stats)


def numpy_release_and_bound(rng, stats, scales, reference, eigenvalue_floor=1e-3, count_floor=1.0) -> float:
    """Reference: one release with post-processing and its matched KL bound in NumPy.

    Mirrors ``dpgmm_jax.mechanism.release_statistics`` (noise on counts,
    first moments and the upper triangle of the second moments, floored
    counts, means projected onto the ball, eigenvalues clipped to
    [floor, R^2]) and ``dpgmm_jax.kl.matched_bound``.
    """
    counts, first, second = stats
    sigma_w, sigma_m, sigma_c = scales
    n_components, d = first.shape
    rows, cols = np.triu_indices(d)

    upper = rng.standard_normal((n_components, rows.size)) * sigma_c[:, None]
    second_noise = np.zeros((n_components, d, d))
    second_noise[:, rows, cols] = upper
    second_noise[:, cols, rows] = upper
    noisy_counts = counts + rng.standard_normal(n_components) * sigma_w
    noisy_first = first + rng.standard_normal((n_components, d)) * sigma_m[:, None]
    noisy_second = second + second_noise

    floored = np.maximum(noisy_counts, count_floor)
    weights = floored / floored.sum()
    raw_means = noisy_first / floored[:, None]
    norms = np.linalg.norm(raw_means, axis=-1, keepdims=True)
    means = raw_means * np.minimum(1.0, RADIUS / np.maximum(norms, 1e-30))
    covariances = noisy_second / floored[:, None, None] - np.einsum("kd,ke->kde", raw_means, raw_means)
    covariances = 0.5 * (covariances + np.swapaxes(covariances, -1, -2))
    eigenvalues, eigenvectors = np.linalg.eigh(covariances)
    eigenvalues = np.clip(eigenvalues, min(eigenvalue_floor, RADIUS**2), RADIUS**2)
    covariances = np.einsum("kij,kj,klj->kil", eigenvectors, eigenvalues, eigenvectors)

    # Matched bound: KL(pi_p || pi_q) + sum_k pi_k KL(N_p,k || N_q,k).
    p_weights, p_means, p_covariances = reference
    chol_p = np.linalg.cholesky(p_covariances)
    chol_q = np.linalg.cholesky(covariances)
    bound = np.sum(p_weights * (np.log(p_weights) - np.log(weights)))
    for k in range(n_components):
        whitened = scipy.linalg.solve_triangular(chol_q[k], chol_p[k], lower=True)
        difference = scipy.linalg.solve_triangular(chol_q[k], means[k] - p_means[k], lower=True)
        log_det = 2.0 * (np.sum(np.log(np.diag(chol_q[k]))) - np.sum(np.log(np.diag(chol_p[k]))))
        kl = 0.5 * (np.sum(whitened**2) + np.sum(difference**2) - d + log_det)
        bound += p_weights[k] * kl
    return bound


def bench_releases(sizes: dict, repeats: int) -> tuple[str, dict]:
    """Time vmapped private releases plus their matched bound against a NumPy loop."""
    n_releases = sizes["releases"]
    stats, reference = reference_statistics()
    scales = noise_scales_from_shares(equal_shares(N_COMPONENTS, jnp.float64), 1.0, RADIUS)

    @jax.jit
    def releases_and_bounds(keys):
        def one(key):
            release = release_statistics(key, stats, scales, RADIUS)
            return matched_bound(reference, release.params)

        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.key(0), n_releases)
    jax.block_until_ready(releases_and_bounds(keys))  # compile
    jax_seconds, jax_bounds = median_time(releases_and_bounds, keys, repeats=repeats)

    numpy_stats = tuple(np.asarray(a) for a in stats)
    numpy_scales = tuple(np.asarray(a) for a in scales)
    numpy_reference = tuple(np.asarray(a) for a in reference)
    rng = np.random.default_rng(0)

    def numpy_loop():
        return np.array([numpy_release_and_bound(rng, numpy_stats, numpy_scales, numpy_reference) for _ in range(n_releases)])

    numpy_seconds, numpy_bounds = timed(numpy_loop)

    # The eigenvalue clip needs an eigendecomposition of every released
    # covariance. Time that step alone on the same (releases * K) noisy
    # covariances: the reference loop's time over it bounds the ratio that
    # any implementation with an exact eigendecomposition can reach.
    noisy = jax.vmap(lambda key: add_noise(key, stats, scales))(keys)
    counts = jnp.maximum(noisy.counts, 1.0)[..., None]
    raw_means = noisy.first_moments / counts
    covariances = noisy.second_moments / counts[..., None] - jnp.einsum("rkd,rke->rkde", raw_means, raw_means)
    covariances = covariances.reshape(-1, N_FEATURES, N_FEATURES)
    eigh = jax.jit(jnp.linalg.eigh)
    jax.block_until_ready(eigh(covariances))  # compile
    eigh_seconds, (eigenvalues, _) = median_time(eigh, covariances, repeats=repeats)
    clipped_fraction = float(np.mean(np.asarray(eigenvalues)[:, 0] < 1e-3))

    # Different random draws, so the bound distributions must agree, not the values.
    jax_median, numpy_median = float(np.median(jax_bounds)), float(np.median(numpy_bounds))
    extra = (
        f"; {n_releases} releases, K={N_COMPONENTS}, d={N_FEATURES}, float64, compile excluded; "
        f"median bound jax {jax_median:.4g} numpy {numpy_median:.4g}; eigh of the {covariances.shape[0]} "
        f"covariances alone {eigh_seconds:.4f} s ({clipped_fraction:.0%} need the floor), so an exact "
        f"eigenvalue clip caps the ratio at {numpy_seconds / eigh_seconds:.1f}x"
    )
    entry = report("releases", jax_seconds, numpy_seconds, "numpy loop", extra)
    entry.update(n_releases=n_releases, median_bound_jax=jax_median, median_bound_numpy=numpy_median,
                 eigh_seconds=eigh_seconds, clipped_fraction=clipped_fraction,
                 ratio_ceiling_with_eigh=numpy_seconds / eigh_seconds)
    return "releases", entry


def numpy_log_prob(x, weights, means, covariances) -> np.ndarray:
    """Mixture log-density with scipy.stats.multivariate_normal and logsumexp."""
    weighted = np.stack(
        [np.log(w) + multivariate_normal(m, c).logpdf(x) for w, m, c in zip(weights, means, covariances)], axis=-1
    )
    return logsumexp(weighted, axis=-1)


def bench_kl_monte_carlo(sizes: dict, repeats: int) -> tuple[str, dict]:
    """Time the Monte Carlo KL estimate against a NumPy and SciPy reference."""
    n_samples = sizes["kl_samples"]
    _, p = reference_statistics()
    rng = np.random.default_rng(3)
    q = GMMParams(
        jnp.asarray(rng.dirichlet(np.ones(N_COMPONENTS) * 5.0)),
        p.means + jnp.asarray(rng.normal(scale=0.3, size=p.means.shape)),
        p.covariances * 1.2,
    )

    estimate = jax.jit(kl_monte_carlo, static_argnames="n_samples")
    key = jax.random.key(0)
    jax.block_until_ready(estimate(key, p, q, n_samples=n_samples))  # compile
    jax_seconds, (jax_kl, jax_se) = median_time(lambda: estimate(key, p, q, n_samples=n_samples), repeats=repeats)

    p_numpy = tuple(np.asarray(a) for a in p)
    q_numpy = tuple(np.asarray(a) for a in q)

    def numpy_estimate():
        sample_rng = np.random.default_rng(0)
        weights, means, covariances = p_numpy
        components = sample_rng.choice(N_COMPONENTS, size=n_samples, p=weights)
        cholesky = np.linalg.cholesky(covariances)
        standard = sample_rng.standard_normal((n_samples, N_FEATURES))
        x = means[components] + np.einsum("nij,nj->ni", cholesky[components], standard)
        log_ratio = numpy_log_prob(x, *p_numpy) - numpy_log_prob(x, *q_numpy)
        return log_ratio.mean(), log_ratio.std(ddof=1) / np.sqrt(n_samples)

    numpy_seconds, (numpy_kl, numpy_se) = median_time(numpy_estimate, repeats=repeats)
    extra = (
        f"; {n_samples} samples, K={N_COMPONENTS}, d={N_FEATURES}, float64, compile excluded; "
        f"KL jax {float(jax_kl):.4f} +- {float(jax_se):.4f}, numpy {numpy_kl:.4f} +- {numpy_se:.4f}"
    )
    entry = report("kl_monte_carlo", jax_seconds, numpy_seconds, "numpy+scipy", extra)
    entry.update(n_samples=n_samples, kl_jax=float(jax_kl), kl_numpy=float(numpy_kl), se_jax=float(jax_se), se_numpy=float(numpy_se))
    return "kl_monte_carlo", entry


# The subprocess reports VmHWM, the peak resident set size of its own address
# space, next to ru_maxrss. On Linux ru_maxrss survives execve, so a child
# started by vfork (as Python's subprocess does) reports at least the
# parent's peak (execve records the old address space's peak in the
# process's maxrss). VmHWM starts afresh with the new address space.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import jax
    import jax.numpy as jnp
    from dpgmm_jax.em import fit_em, initial_params_from_means

    def peak_rss_bytes():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    n_records, n_components, n_features = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    after_import = peak_rss_bytes()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_records, n_features), dtype=np.float32)
    init = initial_params_from_means(x[:10_000], x[:n_components])
    result = fit_em(jnp.asarray(x), init, max_iter=1, tol=0.0)
    jax.block_until_ready(result)
    print(json.dumps({
        "peak_bytes": peak_rss_bytes(), "after_import_bytes": after_import,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "data_bytes": x.nbytes, "dtype": str(result.params.means.dtype), "n_iter": int(result.n_iter),
    }))
    """
)


def bench_memory(sizes: dict, quick: bool) -> tuple[str, dict]:
    """Measure the peak resident memory of one float32 EM iteration in a fresh process."""
    n_records = sizes["memory_records"]
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(n_records), str(N_COMPONENTS), str(N_FEATURES)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory subprocess failed with exit code {completed.returncode}: {completed.stderr[-2000:]}")
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    if measured["peak_bytes"] is None:
        raise RuntimeError("VmHWM not found in /proc/self/status; the memory benchmark needs Linux")
    peak = measured["peak_bytes"]
    met = peak < MEMORY_LIMIT_BYTES
    note = f" (--quick: N={n_records}, not the 2,000,000 of the target)" if quick else ""
    print(
        f"memory: one EM iteration, N={n_records}, d={N_FEATURES}, K={N_COMPONENTS}, {measured['dtype']}, chunked: "
        f"peak RSS (VmHWM) {peak / 1e9:.3f} GB (after imports {measured['after_import_bytes'] / 1e9:.3f} GB, "
        f"data {measured['data_bytes'] / 1e9:.3f} GB, ru_maxrss {measured['ru_maxrss_bytes'] / 1e9:.3f} GB), limit {MEMORY_LIMIT_BYTES / 1e9:g} GB, "
        f"{'met' if met else 'NOT met'}{note}",
        flush=True,
    )
    measured.update(n_records=n_records, limit_bytes=MEMORY_LIMIT_BYTES, target_met=met, quick=quick)
    return "memory", measured


def bench_compilation(sizes: dict) -> tuple[str, dict]:
    """Show that a second fit with the same shapes reuses the compiled fit_em."""
    n_records = sizes["em_records"] // 10
    shape_tag = (n_records + 17, N_FEATURES)  # a shape no earlier benchmark compiled
    first_x = jnp.asarray(synthetic_records(shape_tag[0], np.float32, seed=4))
    second_x = jnp.asarray(synthetic_records(shape_tag[0], np.float32, seed=5))
    init = initial_params_from_means(np.asarray(first_x), np.asarray(first_x[:N_COMPONENTS]))

    cache_before = fit_em._cache_size()
    first_seconds, _ = timed(lambda: fit_em(first_x, init, max_iter=10, tol=0.0))
    cache_after_first = fit_em._cache_size()
    second_seconds, _ = timed(lambda: fit_em(second_x, init, max_iter=10, tol=0.0))
    cache_after_second = fit_em._cache_size()

    reused = cache_after_second == cache_after_first == cache_before + 1
    print(
        f"compilation: fit_em on {shape_tag[0]} x {N_FEATURES} float32, 10 iterations: first call {first_seconds:.3f} s "
        f"(compiles), second call with new data of the same shape {second_seconds:.3f} s; jit cache entries "
        f"{cache_before} -> {cache_after_first} -> {cache_after_second} ({'reused' if reused else 'NOT reused'})",
        flush=True,
    )
    return "compilation", {
        "first_call_seconds": first_seconds, "second_call_seconds": second_seconds,
        "cache_size_before": cache_before, "cache_size_after_first": cache_after_first,
        "cache_size_after_second": cache_after_second, "reused": reused,
    }


def machine_info() -> dict:
    """Describe the CPU, memory, load and library versions of this run."""
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(memory_bytes / 1e9, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_devices": [str(device) for device in jax.devices()],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=Path("bench_results.json"), help="JSON file for the results")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under two minutes on a 2-core CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each JAX function; the median is reported")
    parser.add_argument(
        "--only", nargs="+", choices=["em_float32", "em_float64", "releases", "kl_monte_carlo", "memory", "compilation"],
        help="run only these benchmarks",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    logging.basicConfig(level=logging.WARNING)

    sizes = QUICK if args.quick else FULL
    selected = set(args.only or ["em_float32", "em_float64", "releases", "kl_monte_carlo", "memory", "compilation"])
    info = machine_info()
    print(
        f"machine: {info['cpu_model']}, {info['cpu_count']} cores, {info['memory_gb']} GB; jax {info['jax']}, "
        f"numpy {info['numpy']}, sklearn {info['sklearn']}; load average before {info['load_average']}; "
        f"{'--quick sizes' if args.quick else 'full sizes'}",
        flush=True,
    )

    start = time.perf_counter()
    results = {}
    if "em_float32" in selected:
        name, entry = bench_em(np.float32, sizes, args.repeats)
        results[name] = entry
    if "em_float64" in selected:
        name, entry = bench_em(np.float64, sizes, args.repeats)
        results[name] = entry
    benches = [
        ("releases", lambda: bench_releases(sizes, args.repeats)),
        ("kl_monte_carlo", lambda: bench_kl_monte_carlo(sizes, args.repeats)),
        ("memory", lambda: bench_memory(sizes, args.quick)),
        ("compilation", lambda: bench_compilation(sizes)),
    ]
    for key, bench in benches:
        if key in selected:
            name, entry = bench()
            results[name] = entry

    info["load_average_after"] = os.getloadavg()
    info["max_rss_bytes_parent"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    elapsed = time.perf_counter() - start
    print(f"load average after {info['load_average_after']}; total {elapsed:.0f} s", flush=True)
    payload = {"command": " ".join(sys.argv), "quick": args.quick, "sizes": sizes, "machine": info, "results": results}
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
