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
        available = [float(value) for value in sorted(results.epsilon.unique())]
        raise ValueError(f"results have no rows at epsilon={epsilon}; pass one of the run's epsilons {available}")
    rows = rows.assign(dataset=dataset_labels(rows))

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


def dataset_labels(results: pd.DataFrame) -> pd.Series:
    """Return one label per row, the dataset name, with d and N added where several datasets share the name.

    A grid sweep changes K or d with the grid value, so names are compared
    within one grid value.
    """
    if not {"d", "N"} <= set(results.columns):
        return results.dataset.astype(str)
    keys = ["dataset", "sweep_value"] if "sweep_value" in results.columns else ["dataset"]
    shapes = results.groupby(keys)[["d", "N"]].nunique()
    shared = set(shapes.index[(shapes.d > 1) | (shapes.N > 1)].get_level_values("dataset"))
    return pd.Series(
        [f"{name} (d = {d}, N = {n})" if name in shared else str(name)
         for name, d, n in zip(results.dataset, results.d, results.N)],
        index=results.index,
    )


def _column_labels(results: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """Return each row's column label and the ordered labels, keyed by epsilon, by grid value or by both."""
    epsilons = sorted(results.epsilon.unique())
    grid = "sweep_value" in results.columns and results.sweep_value.nunique() > 1
    if not grid:
        labels = results.epsilon.map(lambda e: f"eps {e:g}")
        return labels, [f"eps {e:g}" for e in epsilons]

    parameter = {"n_components": "K", "n_features": "d"}.get(str(results.sweep_parameter.iloc[0]), "value")
    values = sorted(results.sweep_value.unique())
    if len(epsilons) == 1:
        labels = results.sweep_value.map(lambda v: f"{parameter} = {v:g}")
        return labels, [f"{parameter} = {v:g}" for v in values]
    labels = [f"{parameter} = {v:g}, eps {e:g}" for v, e in zip(results.sweep_value, results.epsilon)]
    return pd.Series(labels, index=results.index), [f"{parameter} = {v:g}, eps {e:g}" for v in values for e in epsilons]


def summary_table(results: pd.DataFrame, metric: str = "kl_mc", style: str = "markdown") -> str:
    """Return the median of a metric per dataset and method, one column per epsilon or grid value.

    The layout is that of the README's main-job table. Cells are medians
    only, because KL across noise draws is heavy-tailed, and a last column
    marks the methods whose output carries a DP guarantee. Datasets and
    methods keep the run's order. Datasets that share a name (the
    synthetic variants of a sweep) are labelled with their d and N.

    Args:
        results: a run's tidy results (results.csv).
        metric: the column to summarise, for example kl_mc or heldout_loglik.
        style: "markdown" for a pipe table, or "latex" for a booktabs
            tabular (needs ``\\usepackage{booktabs}``).

    Returns:
        The table as text. A dataset and method pair without rows at a
        column's epsilon or grid value gets "-".

    Raises:
        ValueError: if ``metric`` is not a column, ``style`` is unknown or
            ``results`` is empty.
    """
    if style not in ("markdown", "latex"):
        raise ValueError(f"style must be 'markdown' or 'latex', got style={style!r}")
    if metric not in results.columns:
        raise ValueError(f"results have no column {metric!r}; choose one of {sorted(results.columns)}")
    if results.empty:
        raise ValueError("results are empty; run at least one method on one dataset")

    frame = results.assign(_dataset=dataset_labels(results))
    column_of_row, columns = _column_labels(frame)
    frame = frame.assign(_column=column_of_row.to_numpy())
    medians = frame.groupby(["_dataset", "method", "_column"])[metric].median()
    guarantees = frame.groupby("method").dp_guarantee.all() if "dp_guarantee" in frame else None

    body = []
    for dataset in dict.fromkeys(frame["_dataset"]):
        for method in dict.fromkeys(frame[frame["_dataset"] == dataset].method):
            cells = [_format(medians[dataset, method, column]) if (dataset, method, column) in medians.index else "-"
                     for column in columns]
            guarantee = ""
            if guarantees is not None:
                guarantee = "yes" if guarantees[method] else "no"
            body.append((dataset, method, cells, guarantee))

    if style == "markdown":
        lines = ["| dataset | method | " + " | ".join(columns) + " | DP |",
                 "|:--|:--|" + "--:|" * len(columns) + ":-:|"]
        lines += [f"| {dataset} | {method} | " + " | ".join(cells) + f" | {guarantee} |"
                  for dataset, method, cells, guarantee in body]
        return "\n".join(lines)

    def latex(text: str) -> str:
        return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

    def latex_column(label: str) -> str:
        parts = label.split(", ")
        return ", ".join(f"$\\varepsilon = {part[4:]}$" if part.startswith("eps ") else f"${part}$" for part in parts)

    lines = ["\\begin{tabular}{ll" + "r" * len(columns) + "c}", "\\toprule",
             "dataset & method & " + " & ".join(latex_column(c) for c in columns) + " & DP \\\\", "\\midrule"]
    previous = None
    for dataset, method, cells, guarantee in body:
        if previous is not None and dataset != previous:
            lines.append("\\midrule")
        # Only a dataset's first row names it.
        dataset_cell = latex(dataset) if dataset != previous else ""
        lines.append(f"{dataset_cell} & {latex(method)} & " + " & ".join(cells) + f" & {guarantee} \\\\")
        previous = dataset
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)
