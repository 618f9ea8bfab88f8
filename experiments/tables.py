"""Markdown tables of a run's results, for READMEs and papers.

Each cell is the median of a metric over trials, with the mean in
parentheses: the median is robust to the heavy right tail that small
epsilon gives KL, and the mean shows how heavy that tail is.
"""

import numpy as np
import pandas as pd


def _format(value: float) -> str:
    """Return a number with four significant digits, in scientific notation when it is tiny or huge."""
    if not np.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}"


def method_table(results: pd.DataFrame, epsilon: float, metric: str = "kl_mc") -> str:
    """Return a Markdown table of one metric at one epsilon, methods by datasets.

    Args:
        results: a run's tidy results (results.csv).
        epsilon: the epsilon to tabulate; rows at other epsilons are dropped.
        metric: the column to summarise, for example kl_mc or heldout_loglik.

    Returns:
        The table, one row per method in the run's order, one column per
        dataset, each cell "median (mean)", and a last column that marks
        the methods whose output carries a DP guarantee.

    Raises:
        ValueError: if the run has no row at ``epsilon`` or no ``metric`` column.
    """
    if metric not in results.columns:
        raise ValueError(f"results have no column {metric!r}; choose one of {sorted(results.columns)}")
    rows = results[np.isclose(results.epsilon, epsilon)]
    if rows.empty:
        raise ValueError(f"results have no rows at epsilon={epsilon}; the run has {sorted(results.epsilon.unique())}")

    datasets = list(dict.fromkeys(rows.dataset))
    methods = list(dict.fromkeys(rows.method))
    grouped = rows.groupby(["method", "dataset"])[metric]
    medians, means = grouped.median(), grouped.mean()
    guarantees = rows.groupby("method").dp_guarantee.all()

    lines = ["| method | " + " | ".join(datasets) + " | DP |", "|:--|" + "--:|" * len(datasets) + ":-:|"]
    for method in methods:
        cells = []
        for dataset in datasets:
            if (method, dataset) in medians.index:
                cells.append(f"{_format(medians[method, dataset])} ({_format(means[method, dataset])})")
            else:
                cells.append("")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {'yes' if guarantees[method] else 'no'} |")
    return "\n".join(lines)
