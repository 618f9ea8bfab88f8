"""Fit a private Gaussian mixture and draw synthetic records from the release.

    python examples/sample_synthetic.py OUTPUT_DIR [--epsilon 3.0] [--n-samples 1000]

Sampling reads only the released mixture, so the synthetic records carry the
same (epsilon, delta) guarantee as the release and cost no further budget.
Writes OUTPUT_DIR/synthetic.csv with one row per synthetic record and the
column "component" naming the component it was drawn from.
"""

import argparse
import logging
from pathlib import Path

import numpy as np

from dpgmm_jax import DPGaussianMixture
from dpgmm_jax.data import make_synthetic

logger = logging.getLogger("sample_synthetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="directory for synthetic.csv")
    parser.add_argument("--epsilon", type=float, default=3.0, help="privacy budget epsilon (default 3.0)")
    parser.add_argument("--n-samples", type=int, default=1000, help="number of synthetic records (default 1000)")
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")
    for name in (logger.name, "dpgmm_jax"):
        logging.getLogger(name).setLevel(logging.INFO)

    # The generating mixture's means lie in [-1.5, 1.5]^2 with standard
    # deviations at most 0.5, so the ball of radius 4 around 0 is a public domain.
    records = make_synthetic(n_samples=5000, n_components=3, n_features=2, seed=1).x
    # With two features the default mode="auto" runs histogram_em (one noisy histogram, then EM).
    model = DPGaussianMixture(n_components=3, epsilon=args.epsilon, delta=1e-5, centre=[0.0, 0.0], radius=4.0)
    model.fit(records)

    synthetic, components = model.sample(args.n_samples)
    table = np.column_stack([synthetic, components])
    csv_path = args.output_dir / "synthetic.csv"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(csv_path, table, delimiter=",", header="x0,x1,component", comments="", fmt=["%.6g", "%.6g", "%d"])

    # Only released values and samples of them are logged, never statistics of the private records.
    logger.info("released weights %s, synthetic mean %s", model.weights_.round(3), synthetic.mean(axis=0).round(3))
    print(csv_path)


if __name__ == "__main__":
    main()
