"""Release a private Gaussian mixture of a CSV file and save it as JSON.

    python examples/release_csv.py OUTPUT_DIR [--epsilon 1.0]

Writes OUTPUT_DIR/records.csv (2,000 generated records, two features),
releases a two-component mixture of it under (epsilon, 1e-5)-DP with
DPGaussianMixture, and saves the released parameters and their privacy
metadata to OUTPUT_DIR/release.json.
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from dpgmm_jax import DPGaussianMixture
from dpgmm_jax.data import make_synthetic

logger = logging.getLogger("release_csv")

# Public knowledge about the data source, declared before seeing the records.
# The generator puts its means in [-1.5, 1.5] with standard deviations at most
# 0.5, so all but a negligible fraction of records lie in [-3, 3] per feature.
LOWER = [-3.0, -3.0]
UPPER = [3.0, 3.0]


def write_records(path: Path) -> None:
    """Write a small two-feature dataset to a CSV file with a header row."""
    records = make_synthetic(n_samples=2000, n_components=2, n_features=2, seed=0).x
    np.savetxt(path, records, delimiter=",", header="x0,x1", comments="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="directory for records.csv and release.json")
    parser.add_argument("--epsilon", type=float, default=1.0, help="privacy budget epsilon (default 1.0)")
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")
    for name in (logger.name, "dpgmm_jax"):
        logging.getLogger(name).setLevel(logging.INFO)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.output_dir / "records.csv"
    write_records(csv_path)

    records = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    # With two features the default mode="auto" runs histogram_em (one noisy histogram, then EM).
    model = DPGaussianMixture(n_components=2, epsilon=args.epsilon, delta=1e-5, bounds=(LOWER, UPPER))
    model.fit(records)

    release = {
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "covariances": model.covariances_.tolist(),
        "privacy": model.privacy_,
    }
    json_path = args.output_dir / "release.json"
    json_path.write_text(json.dumps(release, indent=1))
    logger.info("saved the release of %s under epsilon=%g to %s", csv_path, args.epsilon, json_path)
    print(json_path)


if __name__ == "__main__":
    main()
