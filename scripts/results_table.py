"""Print a Markdown table of median (mean) metric per method and dataset at one epsilon.

    python scripts/results_table.py RUN_DIR [--epsilon 1.0] [--metric kl_mc]
    python scripts/results_table.py RUN_DIR --summary [--latex] [--metric kl_mc]

reads RUN_DIR/results.csv, as written by ``python -m experiments.run``.
With ``--summary`` it prints the run's summary table instead, which has
the median per dataset and method at every epsilon (or grid value). That
is the table the run writes to summary.md, or with ``--latex`` to
summary.tex.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.tables import method_table, summary_table  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory that contains results.csv")
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon to tabulate")
    parser.add_argument("--metric", default="kl_mc", help="results column to summarise")
    parser.add_argument("--summary", action="store_true",
                        help="print the median per dataset and method at every epsilon or grid value")
    parser.add_argument("--latex", action="store_true", help="with --summary, print a booktabs LaTeX tabular")
    args = parser.parse_args(argv)
    if args.latex and not args.summary:
        parser.error("--latex needs --summary; pass both")
    results_path = args.run_dir / "results.csv"
    if not results_path.is_file():
        parser.error(f"{results_path} not found; pass the run directory that python -m experiments.run printed")
    try:
        results = pd.read_csv(results_path)
        if args.summary:
            print(summary_table(results, args.metric, "latex" if args.latex else "markdown"))
        else:
            print(method_table(results, args.epsilon, args.metric))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
