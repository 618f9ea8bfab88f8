"""Redraw every figure of a run from its results.csv alone.

    python scripts/make_figures.py RUN_DIR

writes the figures into RUN_DIR, next to results.csv, with the same names
the run itself uses (see ``experiments.figures.draw_all_figures``).
"""

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.figures import draw_all_figures  # noqa: E402

logger = logging.getLogger(__name__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory that contains results.csv")
    args = parser.parse_args(argv)
    results_path = args.run_dir / "results.csv"
    if not results_path.is_file():
        parser.error(f"{results_path} not found; pass the run directory that python -m experiments.run printed")
    logging.basicConfig(level=logging.INFO)
    paths = draw_all_figures(pd.read_csv(results_path), args.run_dir)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
