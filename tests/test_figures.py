"""Figures of a run: one colour per method across panels."""

import matplotlib.colors
import pandas as pd

from experiments import figures


def test_colour_stable_across_panels(tmp_path, monkeypatch):
    rows = []
    for dataset, methods in (("low_d", ("a", "b", "c")), ("high_d", ("a", "c"))):
        for method in methods:
            for epsilon in (1.0, 10.0):
                rows.append({"dataset": dataset, "method": method, "epsilon": epsilon, "kl_mc": 1.0 / epsilon})
    captured = []
    monkeypatch.setattr(figures.plt, "close", captured.append)

    figures.plot_metric(pd.DataFrame(rows), tmp_path, stem="colours")

    axes = [axis for axis in captured[0].axes if axis.get_visible()]
    colours = [{line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in axis.lines} for axis in axes]
    assert colours[0]["c"] == colours[1]["c"]
    assert colours[0]["a"] == colours[1]["a"]
    assert len(set(colours[0].values())) == 3
    legend_labels = [text.get_text() for text in axes[-1].get_legend().get_texts()]
    assert legend_labels == ["a", "b", "c"]


def test_figures_panels_and_reverse_label(tmp_path, monkeypatch):
    rows = []
    for d in (2, 3):
        for epsilon in (1.0, 10.0):
            rows.append({"dataset": "synthetic", "d": d, "N": 100, "method": "a", "epsilon": epsilon,
                         "kl_mc": d / epsilon, "kl_direction": "reverse"})
    captured = []
    monkeypatch.setattr(figures.plt, "close", captured.append)

    figures.draw_all_figures(pd.DataFrame(rows), tmp_path)

    axes = [axis for axis in captured[0].axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["synthetic (d = 2, N = 100)", "synthetic (d = 3, N = 100)"]
    assert axes[0].get_ylabel() == "KL(released || non-private), median and IQR"


def test_forward_label_by_default():
    results = pd.DataFrame({"kl_mc": [1.0], "kl_direction": ["forward"]})
    assert figures.metric_label(results, "kl_mc") == "KL(non-private || released)"
    assert figures.metric_label(results.drop(columns="kl_direction"), "kl_mc") == "KL(non-private || released)"


def test_allocation_figure_skips_equal_split(tmp_path, monkeypatch):
    rows = []
    for method, allocation, weights in (("planned", "optax", 0.1), ("equal", "equal", 1 / 3), ("histogram", "none", None)):
        for epsilon in (1.0, 10.0):
            shares = {} if weights is None else {"share_weights": weights, "share_means": 0.3,
                                                 "share_covariances": 0.7 - weights}
            rows.append({"dataset": "synthetic", "method": method, "allocation": allocation, "epsilon": epsilon,
                         "share_weights": None, **shares})
    results = pd.DataFrame(rows)
    captured = []
    monkeypatch.setattr(figures.plt, "close", captured.append)

    medians = figures.allocation_medians(results)
    paths = figures.plot_allocation_vs_epsilon(results, tmp_path)

    assert list(medians.index.get_level_values("method").unique()) == ["planned"]
    assert medians.loc[("synthetic", "planned", 10.0), "share_weights"] == 0.1
    axis = [axis for axis in captured[0].axes if axis.get_visible()][0]
    assert len(axis.lines) == 3
    legend_labels = [text.get_text() for text in captured[0].legends[0].get_texts()]
    assert legend_labels == ["planned", "weights", "means", "covariances"]
    assert all(path.stat().st_size > 1000 for path in paths)
