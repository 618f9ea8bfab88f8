"""Figures drawn from the tidy results table alone.

KL divergence across noise draws is heavy-tailed, so every figure shows the
median with the interquartile band; the results table keeps every trial.
"""

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

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


def plot_kl_vs_epsilon(results: pd.DataFrame, out_dir: Path, value: str = "kl_mc",
                       stem: str = "kl_vs_epsilon") -> list[Path]:
    """Draw KL against epsilon, one panel per dataset, median and IQR per method.

    Returns:
        The paths of the PNG and PDF files written.
    """
    summary = summarise(results, value)
    datasets = list(dict.fromkeys(results["dataset"]))
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)

    for axis, dataset in zip(axes[0], datasets):
        panel = summary[summary["dataset"] == dataset]
        for method in dict.fromkeys(results["method"]):
            line = panel[panel["method"] == method].sort_values("epsilon")
            if line.empty:
                continue
            median = np.maximum(line["median"], KL_DISPLAY_FLOOR)
            axis.plot(line["epsilon"], median, marker="o", label=method)
            axis.fill_between(line["epsilon"], np.maximum(line["q25"], KL_DISPLAY_FLOOR),
                              np.maximum(line["q75"], KL_DISPLAY_FLOOR), alpha=0.2)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(dataset)
        axis.set_xlabel("epsilon")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("KL(non-private || released), median and IQR")
    axes[0][-1].legend(fontsize="small")
    figure.tight_layout()

    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150)
    plt.close(figure)
    return paths
