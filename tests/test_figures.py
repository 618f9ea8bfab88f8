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
