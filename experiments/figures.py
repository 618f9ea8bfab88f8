"""Figures drawn from the tidy results table alone.

KL divergence across noise draws is heavy-tailed, so every figure shows the
median with the interquartile band; the results table keeps every trial.
"""

import logging
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.tables import dataset_labels  # noqa: E402

logger = logging.getLogger(__name__)

# Monte Carlo estimates of a KL near zero can be negative; log axes show them at this floor.
KL_DISPLAY_FLOOR = 1e-5


def summarise(results: pd.DataFrame, value: str = "kl_mc", by=("dataset", "method", "epsilon")) -> pd.DataFrame:
    """Return the median, quartiles and mean of ``value`` per group."""
    grouped = results.groupby(list(by))[value]
    summary = grouped.agg(
        median="median",
        q25=lambda v: v.quantile(0.25),
        q75=lambda v: v.quantile(0.75),
        mean="mean",
        trials="count",
    )
    return summary.reset_index()


METRIC_LABELS = {
    "kl_mc": "KL(non-private || released)",
    "kl_generating": "KL(generating model || released)",
    "heldout_loglik": "held-out mean log-likelihood",
}
# kl_mc's label when the run set kl.direction=reverse.
REVERSE_KL_LABEL = "KL(released || non-private)"


def metric_label(results: pd.DataFrame, value: str) -> str:
    """Return the axis label of a metric, with the KL direction that the run measured."""
    if value == "kl_mc" and "kl_direction" in results and (results["kl_direction"] == "reverse").all():
        return REVERSE_KL_LABEL
    return METRIC_LABELS.get(value, value)


# Metrics that are positive and span decades, so they get a log axis.
LOG_METRICS = ("kl_mc", "kl_generating")


MAX_COLUMNS = 4


def panel_grid(n_panels: int, max_columns: int = MAX_COLUMNS):
    """Create one panel per dataset, wrapped into rows of at most ``max_columns``.

    Returns:
        ``(figure, axes, first_in_row)``: the figure, the ``n_panels`` axes in
        reading order (unused grid cells are hidden), and the axes that start
        a row, which carry the vertical axis label.
    """
    n_columns = min(n_panels, max_columns)
    n_rows = -(-n_panels // n_columns)
    figure, grid = plt.subplots(n_rows, n_columns, figsize=(4.2 * n_columns, 3.6 * n_rows), squeeze=False)
    cells = list(grid.flat)
    for unused in cells[n_panels:]:
        unused.set_visible(False)
    return figure, cells[:n_panels], [row[0] for row in grid]


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """Return a fixed colour for each method: the default cycle up to 10 methods, tab20 beyond."""
    palette = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {method: palette(index % palette.N) for index, method in enumerate(methods)}


def plot_metric(results: pd.DataFrame, out_dir: Path, x: str = "epsilon", value: str = "kl_mc",
                stem: str | None = None, log_x: bool = True, x_label: str | None = None) -> list[Path]:
    """Draw ``value`` against ``x``, one panel per dataset, median and IQR per method.

    Args:
        results: the tidy results table, one row per trial.
        out_dir: folder for the figure files.
        x: the column on the horizontal axis, e.g. "epsilon" or "sweep_value".
        value: the metric column; KL metrics get a log axis, floored at
            ``KL_DISPLAY_FLOOR``.
        stem: file name without suffix; defaults to ``{value}_vs_{x}``.
        log_x: whether the horizontal axis is logarithmic.
        x_label: label of the horizontal axis; defaults to ``x``.

    Returns:
        The paths of the PNG and PDF files written.
    """
    results = results[results[value].notna()]
    summary = summarise(results, value, by=("dataset", "method", x))
    datasets = list(dict.fromkeys(results["dataset"]))
    figure, axes, first_in_row = panel_grid(len(datasets))
    log_y = value in LOG_METRICS
    floor = KL_DISPLAY_FLOOR if log_y else -np.inf

    # One colour per method in every panel, because a method may be missing from some datasets.
    methods = list(dict.fromkeys(results["method"]))
    colours = method_colours(methods)
    handles = {}

    for axis, dataset in zip(axes, datasets):
        panel = summary[summary["dataset"] == dataset]
        for method in methods:
            line = panel[panel["method"] == method].sort_values(x)
            if line.empty:
                continue
            (handles[method],) = axis.plot(line[x], np.maximum(line["median"], floor), marker="o", label=method,
                                           color=colours[method])
            axis.fill_between(line[x], np.maximum(line["q25"], floor), np.maximum(line["q75"], floor), alpha=0.2,
                              color=colours[method])
        if log_x:
            axis.set_xscale("log")
            # Grid values such as K = 2, 4, 8, 16 read better as plain ticks.
            ticks = sorted(panel[x].unique())
            axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
            axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if log_y:
            axis.set_yscale("log")
        axis.set_title(dataset)
        axis.set_xlabel(x_label or x)
        axis.grid(True, which="both", alpha=0.3)
    for axis in first_in_row:
        axis.set_ylabel(f"{metric_label(results, value)}, median and IQR")
    ordered = [method for method in methods if method in handles]
    axes[-1].legend([handles[method] for method in ordered], ordered, fontsize="small")
    figure.tight_layout()

    stem = stem or f"{value}_vs_{x}"
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150)
    plt.close(figure)
    return paths


def plot_kl_vs_epsilon(results: pd.DataFrame, out_dir: Path, value: str = "kl_mc",
                       stem: str = "kl_vs_epsilon") -> list[Path]:
    """Draw KL against epsilon, one panel per dataset, median and IQR per method.

    Returns:
        The paths of the PNG and PDF files written.
    """
    return plot_metric(results, out_dir, "epsilon", value, stem)


def draw_all_figures(results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw every figure the results table supports; reads nothing but ``results``.

    Without a sweep grid: KL against epsilon (kl_vs_epsilon), plus the
    generating-model KL and held-out log-likelihood where those columns
    exist. With a grid (a ``sweep_value`` column): the same metrics against
    the swept value, one file per metric, named ``{metric}_vs_{parameter}``.

    Returns:
        The paths of every file written.
    """
    metrics = [value for value in ("kl_mc", "kl_generating", "heldout_loglik")
               if value in results and results[value].notna().any()]
    # Datasets that share a name (synthetic variants in d = 2 and 3, say) get a panel each.
    results = results.assign(dataset=dataset_labels(results))
    paths = []
    if "sweep_value" in results and results["sweep_value"].notna().any():
        parameter = str(results["sweep_parameter"].dropna().iloc[0])
        for value in metrics:
            stem = f"{'kl' if value == 'kl_mc' else value}_vs_{parameter}"
            paths += plot_metric(results, out_dir, "sweep_value", value, stem, log_x=True, x_label=parameter)
        return paths
    paths += plot_kl_vs_epsilon(results, out_dir)
    for value in metrics[1:]:
        paths += plot_metric(results, out_dir, "epsilon", value, f"{value}_vs_epsilon")
    if SHARE_COLUMNS[0] in results and results[SHARE_COLUMNS[0]].notna().any():
        paths += plot_allocation_vs_epsilon(results, out_dir)
    logger.info("wrote %d figure files to %s", len(paths), out_dir)
    return paths


SHARE_COLUMNS = ("share_weights", "share_means", "share_covariances")


def allocation_medians(results: pd.DataFrame) -> pd.DataFrame:
    """Return the median shares per dataset, method and epsilon of the DP-EM methods that plan their split.

    Rows of the equal split are left out: their shares are 1/3 by
    construction. Rows without shares (methods other than DP-EM) are left
    out too.
    """
    traced = results.dropna(subset=[SHARE_COLUMNS[0]])
    if "allocation" in traced.columns:
        traced = traced[traced["allocation"] != "equal"]
    return traced.groupby(["dataset", "method", "epsilon"], sort=False)[list(SHARE_COLUMNS)].median()


def plot_allocation_vs_epsilon(results: pd.DataFrame, out_dir: Path, stem: str = "allocation_vs_epsilon") -> list[Path]:
    """Draw the median share of mu^2 that weights, means and covariances get, against epsilon.

    One panel per dataset. Colours are the DP-EM methods that plan their
    split, and line styles the groups; the equal split, 1/3 per group, is
    not drawn. Shares are those of DP-EM's last iteration, averaged over
    components with the released weights.

    Returns:
        The paths of the PNG and PDF files written.
    """
    medians = allocation_medians(results)
    datasets = list(dict.fromkeys(medians.index.get_level_values("dataset")))
    methods = list(dict.fromkeys(medians.index.get_level_values("method")))
    colours = method_colours(methods)
    styles = {"share_weights": ":", "share_means": "--", "share_covariances": "-"}
    figure, axes, first_in_row = panel_grid(max(len(datasets), 1))

    for axis, dataset in zip(axes, datasets):
        for method in methods:
            if (dataset, method) not in medians.index.droplevel("epsilon"):
                continue
            rows = medians.loc[(dataset, method)].sort_index()
            for column, style in styles.items():
                axis.plot(rows.index, rows[column], style, color=colours[method], marker="o", markersize=3)
        axis.set_xscale("log")
        axis.set_ylim(0.0, 1.0)
        axis.set_title(dataset)
        axis.set_xlabel("epsilon")
        axis.grid(True, alpha=0.3)
    for axis in first_in_row:
        axis.set_ylabel("share of the last iteration's mu^2 (median)")

    # One legend entry per method (colour) and per group (line style), outside the panels.
    handles = [Line2D([], [], color=colours[method], label=method) for method in methods]
    handles += [Line2D([], [], color="black", linestyle=style, label=column.removeprefix("share_"))
                for column, style in styles.items()]
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    figure.tight_layout()

    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths
