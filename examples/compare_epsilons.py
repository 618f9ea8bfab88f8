"""Plot the utility of private releases of one dataset against epsilon.

    python examples/compare_epsilons.py OUTPUT_DIR

Releases a three-component mixture of a seeded two-dimensional synthetic
dataset at several epsilons, with DP-EM (``mode="dp_em"``, which in two
dimensions starts from a histogram_em release with a tenth of the budget)
and with EM on one noisy histogram (``mode="histogram_em"``), and measures each release two
ways: the Monte Carlo estimate of KL(generating mixture || release) from
``dpgmm_jax.kl``, and the mean log-likelihood of held-out records. Writes
OUTPUT_DIR/compare_epsilons.csv and OUTPUT_DIR/compare_epsilons.png.
"""

import argparse
import csv
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

from dpgmm_jax import DPGaussianMixture, GMMParams, kl_monte_carlo, log_prob
from dpgmm_jax.data import make_synthetic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

logger = logging.getLogger("compare_epsilons")

EPSILONS = (0.3, 1.0, 3.0, 10.0)
MODES = ("dp_em", "histogram_em")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="directory for compare_epsilons.csv and .png")
    parser.add_argument("--seed", type=int, default=0, help="seed of the privacy noise and the KL samples")
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")
    for name in (logger.name, "dpgmm_jax"):
        logging.getLogger(name).setLevel(logging.INFO)

    dataset = make_synthetic(n_samples=6000, n_components=3, n_features=2, seed=2)
    train, held_out = dataset.x[:5000], dataset.x[5000:]
    truth = GMMParams(*(jnp.asarray(leaf) for leaf in dataset.generating_model))

    rows = []
    for mode in MODES:
        for index, epsilon in enumerate(EPSILONS):
            # Seeded noise keeps this example reproducible. Omit random_state for a real release.
            model = DPGaussianMixture(n_components=3, epsilon=epsilon, delta=1e-5, centre=[0.0, 0.0], radius=4.0,
                                      mode=mode, random_state=args.seed + index)
            model.fit(train)
            release = GMMParams(jnp.asarray(model.weights_), jnp.asarray(model.means_),
                                jnp.asarray(model.covariances_))
            kl, kl_error = kl_monte_carlo(jax.random.key(args.seed), truth, release, 5000)
            rows.append({"mode": mode, "epsilon": epsilon, "kl_mc": float(kl), "kl_mc_se": float(kl_error),
                         "heldout_log_likelihood": model.score(held_out)})
            logger.info("%s, epsilon=%g: KL %.4f +- %.4f, held-out log-likelihood %.4f", *rows[-1].values())

    args.output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.output_dir / "compare_epsilons.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    figure, (kl_axis, likelihood_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in MODES:
        mode_rows = [row for row in rows if row["mode"] == mode]
        epsilons = [row["epsilon"] for row in mode_rows]
        kl_axis.errorbar(epsilons, [row["kl_mc"] for row in mode_rows], yerr=[row["kl_mc_se"] for row in mode_rows],
                         marker="o", label=mode)
        likelihood_axis.plot(epsilons, [row["heldout_log_likelihood"] for row in mode_rows], marker="o", label=mode)
    kl_axis.set(xscale="log", yscale="log", xlabel="epsilon", ylabel="KL(generating || release)")
    kl_axis.legend()
    truth_log_likelihood = float(jnp.mean(log_prob(jnp.asarray(held_out), truth)))
    likelihood_axis.axhline(truth_log_likelihood, color="grey", linestyle="--", label="generating mixture")
    likelihood_axis.set(xscale="log", xlabel="epsilon", ylabel="held-out mean log-likelihood")
    likelihood_axis.legend()
    figure.tight_layout()
    png_path = args.output_dir / "compare_epsilons.png"
    figure.savefig(png_path, dpi=120)
    print(png_path)


if __name__ == "__main__":
    main()
