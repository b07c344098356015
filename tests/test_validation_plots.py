"""The validation report's curve plots on a cohort that lacks some curves."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt

from dermnode.validation.plots import _curve_axes, roc_plot

#: a cohort of nevi and melanomas only: no BCC-vs-SK curve (and here no malignant one either)
ROC = {"NV": {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.7, 1.0]}}


def test_a_panel_without_curves_says_why_instead_of_drawing_an_empty_legend() -> None:
    figure, (left, right) = plt.subplots(1, 2)
    _curve_axes(left, ROC, "fpr", "tpr", ["NV", "MEL"], {"NV": "AUROC 0.750"})
    _curve_axes(right, ROC, "fpr", "tpr", ["malignant", "bcc_vs_sk"], {})
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["NV (AUROC 0.750)"] and not left.texts
    assert right.get_legend() is None and "lacks" in right.texts[0].get_text()
    plt.close(figure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend without labelled curves
        assert roc_plot({"curves": {"roc": ROC}, "discrimination": {"NV": {"auroc": 0.75}}}).startswith(b"\x89PNG")
