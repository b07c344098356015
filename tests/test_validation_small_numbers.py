"""The small-numbers rule: below the minimum count a figure is "n too small", in report.json, the HTML
and the console; subgroups that reach it get bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.contract import CLASS_CODES, AnalysisStatus, LesionAnalysis
from dermnode.node.audit import AuditStore, source_header
from dermnode.validation.cli import summary_lines
from dermnode.validation.cohort import Case
from dermnode.validation.html_report import render_html
from dermnode.validation.minimum import TOO_SMALL, MinimumCounts
from dermnode.validation.report import ReportOptions, build_report

DEFAULT = ReportOptions(resamples=200, seed=4)  # the default minimum: 10 positives and 10 negatives


def cases(counts: dict[str, int], seed: int = 0, **metadata) -> list[Case]:
    rng = np.random.default_rng(seed)
    made = []
    for code, n in counts.items():
        for _ in range(n):
            alpha = np.ones(len(CLASS_CODES))
            alpha[CLASS_CODES.index(code)] += 2
            made.append(Case(f"c{len(made)}", code, dict(zip(CLASS_CODES, rng.dirichlet(alpha).tolist())), **metadata))
    return made


def test_classes_below_the_minimum_show_n_too_small() -> None:
    cohort = cases({"NV": 20, "MEL": 14, "AK": 1, "BCC": 3})
    report = build_report(cohort, [], truth_rows=len(cohort), options=DEFAULT).data
    figures = report["discrimination"]
    assert figures["NV"]["auroc"] is not None and figures["MEL"]["ci_low"] is not None
    assert figures["AK"]["auroc"] is None and figures["AK"]["ci_low"] is None
    assert figures["AK"]["note"] == f"{TOO_SMALL}: 1 positive, 37 negative (minimum 10 and 10)"
    assert figures["macro"]["auroc"] is None and figures["macro"]["note"] == f"{TOO_SMALL}: BCC, AK below the minimum count"
    assert figures["malignant"]["auroc"] is not None  # 18 malignant, 20 benign

    ak = next(r for r in report["table2"]["rows"] if r["group"] == "AK")
    assert ak["at_veto"]["sensitivity"] is None and ak["at_veto"]["ppv"] is None and ak["youden"] is None
    assert ak["at_veto"]["specificity"] is not None  # 37 negatives are enough for a specificity
    assert "AK" not in report["curves"]["roc"] and "NV" in report["curves"]["roc"]
    veto = {r["truth"]: r for r in report["veto_by_diagnosis"]}
    assert veto["AK"]["share_flagged"] is None and veto["AK"]["note"] == TOO_SMALL
    assert veto["MEL"]["share_flagged"] is not None
    assert render_html(report).count(TOO_SMALL) > 10

    smaller = ReportOptions(resamples=200, seed=4, minimum=MinimumCounts(1, 1))
    assert build_report(cohort, [], truth_rows=len(cohort), options=smaller).data["discrimination"]["AK"]["auroc"] is not None


def test_subgroups_get_intervals_or_n_too_small() -> None:
    old = cases({"NV": 15, "MEL": 15}, seed=1, age=70.0, sex="female")
    young = cases({"NV": 2, "MEL": 1}, seed=2, age=20.0, sex="male")
    for i, case in enumerate(young):
        case.key = f"y{i}"
    report = build_report(old + young, [], truth_rows=33, options=DEFAULT).data
    age = {r["group"]: r for r in report["subgroups"]["age"]}
    assert age["60-74"]["ci_low"] <= age["60-74"]["auroc_malignant"] <= age["60-74"]["ci_high"]
    assert age["60-74"]["ci_high"] - age["60-74"]["ci_low"] > 0.05
    assert age["<30"]["n"] == 3 and age["<30"]["auroc_malignant"] is None
    assert age["<30"]["note"] == f"{TOO_SMALL}: 1 positive, 2 negative (minimum 10 and 10)"
    assert age["<30"]["sensitivity_veto"] is None and age["<30"]["specificity_veto"] is None


def test_the_console_follows_the_same_rule(tmp_path: Path) -> None:
    two = cases({"NV": 1, "MEL": 1})
    lines = summary_lines(build_report(two, [], truth_rows=2, options=DEFAULT).data)
    assert lines[-2:] == [f"macro AUROC: {TOO_SMALL}: NV, MEL below the minimum count",
                          f"malignant-vs-benign AUROC: {TOO_SMALL}: 1 positive, 1 negative (minimum 10 and 10)"]

    store = AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}")  # the same two cases through `dermnode validate`
    rows = ["sop_instance_uid,diagnosis"]
    for i, case in enumerate(two):
        ds = Dataset()
        ds.StudyInstanceUID, ds.SOPInstanceUID = f"1.2.3.{i}", f"1.2.3.{i}.1"
        analysis = LesionAnalysis(AnalysisStatus.ANALYSED, probabilities=case.probabilities)
        store.record_analysis(source_header(ds), analysis, {}, idempotency_key=f"k{i}")
        rows.append(f"{ds.SOPInstanceUID},{case.truth}")
    store.close()
    (tmp_path / "truth.csv").write_text("\n".join(rows) + "\n")
    env = {"DERMNODE_HOME": str(tmp_path), "DERMNODE_CONFIG": "", "DERMNODE_DATABASE_URL": ""}
    result = CliRunner().invoke(app, ["validate", "--truth", str(tmp_path / "truth.csv"), "--audit", "--out",
                                      str(tmp_path / "out"), "--bootstrap", "50"], env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"macro AUROC: {TOO_SMALL}" in result.output and "1.000" not in result.output
