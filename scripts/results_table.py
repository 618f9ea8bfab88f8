"""Print a Markdown table of median (mean) metric per method and dataset at one epsilon.

    python scripts/results_table.py RUN_DIR [--epsilon 1.0] [--metric kl_mc]

reads RUN_DIR/results.csv, as written by ``python -m experiments.run``.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.tables import method_table  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory that contains results.csv")
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon to tabulate")
    parser.add_argument("--metric", default="kl_mc", help="results column to summarise")
    args = parser.parse_args(argv)
    results_path = args.run_dir / "results.csv"
    if not results_path.is_file():
        parser.error(f"{results_path} not found; pass the run directory that python -m experiments.run printed")
    try:
        print(method_table(pd.read_csv(results_path), args.epsilon, args.metric))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
