"""The validation report's figures: hand-made cases against hand computation and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from dermnode.contract import CLASS_CODES, MALIGNANT_CODES
from dermnode.models.metrics.bootstrap import bootstrap_intervals
from dermnode.validation.cohort import Case
from dermnode.validation.html_report import render_html
from dermnode.validation.minimum import MinimumCounts
from dermnode.validation.report import ReportOptions, build_report

EVERY_COUNT = MinimumCounts(1, 1)  # these tests check the arithmetic on a few cases: no minimum count
QUICK = ReportOptions(resamples=200, seed=1, minimum=EVERY_COUNT)


def case(key: str, truth: str, veto_threshold: float = 0.3, **probabilities: float) -> Case:
    p = {code: probabilities.get(code, 0.0) for code in CLASS_CODES}
    meta = {k: probabilities.pop(k) for k in ("bcc", "age", "sex", "site") if k in probabilities}
    return Case(key, truth, p, veto_threshold=veto_threshold, bcc_probability=meta.get("bcc"), age=meta.get("age"),
                sex=meta.get("sex"), anatomic_site=meta.get("site"))  # fmt: skip


def hand_cases() -> list[Case]:
    return [
        case("1", "MEL", MEL=0.5, NV=0.5, age=25, sex="female", site="back"),
        case("2", "NV", NV=0.6, MEL=0.4, age=50, sex="male", site="back"),
        case("3", "NV", NV=0.5, MEL=0.5, age=50, sex="male"),  # ties with case 1 on P(MEL) and malignancy
        case("4", "BCC", BCC=0.7, NV=0.3, bcc=0.9, age=80, sex="female", site="face"),
        case("5", "BKL", BKL=0.8, NV=0.2, bcc=0.2),
    ]


def row(report: dict, group: str) -> dict:
    return next(r for r in report["table2"]["rows"] if r["group"] == group)


def test_hand_made_cases_match_hand_computation() -> None:
    report = build_report(hand_cases(), [], truth_rows=5, options=QUICK).data
    auroc = {g: e["auroc"] for g, e in report["discrimination"].items()}
    # malignant: positives 0.5, 0.7 vs negatives 0.4, 0.5 (tie: 1/2), 0 -> 5.5 of 6 pairs
    assert auroc["malignant"] == pytest.approx(5.5 / 6)
    assert auroc["MEL"] == pytest.approx(3.5 / 4)  # 0.5 vs 0.4, 0.5 (tie), 0, 0
    assert auroc["NV"] == pytest.approx(5.5 / 6)  # 0.6, 0.5 vs 0.5 (tie), 0.3, 0.2
    assert auroc["BCC"] == auroc["BKL"] == 1.0
    assert auroc["macro"] == pytest.approx((3.5 / 4 + 5.5 / 6 + 1 + 1) / 4)
    assert auroc["bcc_vs_sk"] == 1.0
    for code in ("AK", "SCC", "DF", "VASC"):
        assert auroc[code] is None and report["discrimination"][code]["note"] == f"only negative cases for {code}"

    malignant = row(report, "malignant")
    assert [malignant["at_veto"][k] for k in ("tp", "fp", "tn", "fn")] == [2, 2, 1, 0]
    assert (malignant["at_veto"]["sensitivity"], malignant["at_veto"]["specificity"]) == (1.0, pytest.approx(1 / 3))
    assert (malignant["at_veto"]["ppv"], malignant["at_veto"]["npv"]) == (0.5, 1.0)
    assert malignant["youden"]["threshold"] == 0.5
    assert (malignant["youden"]["sensitivity"], malignant["youden"]["specificity"]) == (1.0, pytest.approx(2 / 3))
    mel = row(report, "MEL")["at_veto"]  # P(MEL) >= 0.3 calls cases 1, 2, 3
    assert (mel["tp"], mel["fp"], mel["tn"], mel["fn"]) == (1, 2, 2, 0)
    assert (mel["sensitivity"], mel["specificity"], mel["ppv"], mel["npv"]) == (1.0, 0.5, pytest.approx(1 / 3), 1.0)
    assert row(report, "AK")["at_veto"] is None

    matrix = np.array(report["confusion_matrix"]["counts"])
    assert matrix[CLASS_CODES.index("MEL"), CLASS_CODES.index("NV")] == 1  # a tie goes to the first class
    assert np.trace(matrix) == 4 and report["confusion_matrix"]["accuracy"] == 0.8
    assert report["calibration"]["malignant"]["brier"] == pytest.approx((0.25 + 0.16 + 0.25 + 0.09 + 0) / 5)
    flagged = {r["truth"]: (r["n"], r["flagged"]) for r in report["veto_by_diagnosis"]}
    assert flagged == {"NV": (2, 2), "MEL": (1, 1), "BCC": (1, 1), "BKL": (1, 0)}


def test_subgroups_list_empty_groups_and_single_class_groups() -> None:
    report = build_report(hand_cases(), [], truth_rows=5, options=QUICK).data
    age = {r["group"]: r for r in report["subgroups"]["age"]}
    assert [r["group"] for r in report["subgroups"]["age"]] == ["<30", "30-44", "45-59", "60-74", ">=75", "unknown"]
    assert (age["30-44"]["n"], age["30-44"]["note"]) == (0, "no cases")
    assert age["30-44"]["auroc_malignant"] is None and age["30-44"]["sensitivity_veto"] is None
    assert (age["45-59"]["n"], age["45-59"]["n_malignant"]) == (2, 0)
    assert age["45-59"]["note"] == "AUROC undefined: only benign cases" and age["45-59"]["specificity_veto"] == 0.0
    assert (age[">=75"]["n"], age[">=75"]["sensitivity_veto"]) == (1, 1.0)
    sex = {r["group"]: r["n"] for r in report["subgroups"]["sex"]}
    assert sex == {"female": 2, "male": 2, "unknown": 1}
    sites = {r["group"]: r for r in report["subgroups"]["anatomic_site"]}
    assert list(sites) == ["back", "face", "unknown"]
    assert sites["back"]["auroc_malignant"] == 1.0  # MEL 0.5 vs NV 0.4


def test_one_class_only_and_no_cases_still_give_a_report() -> None:
    only_nevi = [case(str(i), "NV", NV=0.9 - i / 100, MEL=0.1 + i / 100) for i in range(6)]
    report = build_report(only_nevi, [], truth_rows=6, options=QUICK).data
    assert report["discrimination"]["NV"]["note"] == "only positive cases for NV"
    assert report["discrimination"]["malignant"]["note"] == "only negative cases for malignant"
    assert report["discrimination"]["macro"]["auroc"] is None
    assert row(report, "malignant")["at_veto"] is None and report["curves"]["roc"] == {}
    assert report["calibration"]["malignant"]["n"] == 6
    assert "only positive cases for NV" in render_html(report)

    empty = build_report([], [], truth_rows=0, options=QUICK).data
    assert empty["counts"]["cases"] == 0 and empty["calibration"]["malignant"] is None
    assert "No ROC curves" in render_html(empty)


def test_binary_truth_only_gives_malignancy_figures() -> None:
    cases = [case("a", "malignant", MEL=0.6, NV=0.4), case("b", "benign", NV=0.9, BCC=0.1),
             case("c", "malignant", SCC=0.2, NV=0.8), case("d", "benign", NV=0.7, AK=0.3)]  # fmt: skip
    report = build_report(cases, [], truth_rows=4, options=QUICK).data
    assert report["discrimination"]["malignant"]["auroc"] == pytest.approx(0.75)  # 0.6 beats both; 0.2 beats 0.1
    assert report["confusion_matrix"]["n"] == 0 and report["calibration"]["top_class"] is None
    assert report["discrimination"]["macro"]["note"] == "no class with both positive and negative cases"


def test_veto_uses_each_cases_own_threshold() -> None:
    cases = [case("a", "MEL", 0.4, MEL=0.35, NV=0.65), case("b", "MEL", 0.3, MEL=0.35, NV=0.65),
             case("c", "NV", 0.3, NV=1.0)]  # fmt: skip
    report = build_report(cases, [], truth_rows=3, options=QUICK).data
    veto = row(report, "malignant")["at_veto"]
    assert (veto["tp"], veto["fn"], veto["tn"]) == (1, 1, 1)
    assert report["table2"]["case_thresholds"] == [0.3, 0.4] and report["table2"]["veto_threshold"] == 0.3


def synthetic_cases(n: int = 400, seed: int = 7) -> list[Case]:
    """Seeded probabilities leaning towards the truth, rounded to two decimals so that ties abound."""
    rng = np.random.default_rng(seed)
    truths = rng.choice(CLASS_CODES, size=n, p=[0.4, 0.2, 0.12, 0.12, 0.04, 0.05, 0.03, 0.04])
    cases = []
    for i, truth in enumerate(truths):
        alpha = np.ones(len(CLASS_CODES))
        alpha[CLASS_CODES.index(truth)] += 2.5
        p = np.round(rng.dirichlet(alpha), 2)
        bcc = round(float(rng.random() * 0.6 + (0.35 if truth == "BCC" else 0.0)), 2)
        cases.append(Case(str(i), str(truth), dict(zip(CLASS_CODES, p.tolist())), bcc_probability=bcc,
                          age=float(rng.integers(15, 90)), sex=str(rng.choice(["male", "female"]))))  # fmt: skip
    return cases


def test_report_figures_equal_scikit_learn_on_the_same_arrays() -> None:
    cases = synthetic_cases()
    report = build_report(cases, [], truth_rows=len(cases), options=QUICK).data
    rows = report["cases"]
    truth = np.array([CLASS_CODES.index(r["truth"]) for r in rows])
    probs = np.array([[r[f"p_{c}"] for c in CLASS_CODES] for r in rows])
    malignant = np.isin([r["truth"] for r in rows], MALIGNANT_CODES).astype(int)
    malignancy = np.array([r["malignancy_probability"] for r in rows])

    def check_point(point: dict, y: np.ndarray, called: np.ndarray) -> None:
        tn, fp, fn, tp = sk.confusion_matrix(y, called, labels=[0, 1]).ravel()
        assert point["sensitivity"] == pytest.approx(sk.recall_score(y, called))
        assert point["specificity"] == pytest.approx(tn / (tn + fp))
        assert point["ppv"] == pytest.approx(sk.precision_score(y, called))
        assert point["npv"] == pytest.approx(tn / (tn + fn))

    for k, code in enumerate(CLASS_CODES):
        y = (truth == k).astype(int)
        assert report["discrimination"][code]["auroc"] == pytest.approx(sk.roc_auc_score(y, probs[:, k]))
        table_row = row(report, code)
        check_point(table_row["at_veto"], y, probs[:, k] >= report["table2"]["veto_threshold"])
        check_point(table_row["youden"], y, probs[:, k] >= table_row["youden"]["threshold"])
        fpr, tpr, _ = sk.roc_curve(y, probs[:, k])
        youden = table_row["youden"]
        assert youden["sensitivity"] + youden["specificity"] - 1 == pytest.approx(np.max(tpr - fpr))
        assert report["curves"]["precision_recall"][code]["average_precision"] == pytest.approx(
            sk.average_precision_score(y, probs[:, k]))  # fmt: skip
    assert all((truth == k).any() for k in range(len(CLASS_CODES)))  # every class present: macro over all 8
    assert report["discrimination"]["macro"]["auroc"] == pytest.approx(
        np.mean([sk.roc_auc_score(truth == k, probs[:, k]) for k in range(len(CLASS_CODES))]))  # fmt: skip
    assert report["discrimination"]["malignant"]["auroc"] == pytest.approx(sk.roc_auc_score(malignant, malignancy))
    check_point(row(report, "malignant")["at_veto"], malignant, malignancy >= 0.3)
    pair = np.isin(truth, [CLASS_CODES.index("BCC"), CLASS_CODES.index("BKL")])
    bcc = np.array([r["bcc_probability"] for r in rows])
    assert report["discrimination"]["bcc_vs_sk"]["auroc"] == pytest.approx(
        sk.roc_auc_score(truth[pair] == CLASS_CODES.index("BCC"), bcc[pair]))  # fmt: skip
    assert report["confusion_matrix"]["counts"] == sk.confusion_matrix(
        truth, probs.argmax(axis=1), labels=range(len(CLASS_CODES))).tolist()  # fmt: skip
    assert report["confusion_matrix"]["balanced_accuracy"] == pytest.approx(
        sk.balanced_accuracy_score(truth, probs.argmax(axis=1)))  # fmt: skip
    assert report["calibration"]["malignant"]["brier"] == pytest.approx(
        sk.brier_score_loss(malignant, np.clip(malignancy, 0, 1)))  # fmt: skip


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate() -> None:
    cases = synthetic_cases(200)
    first = build_report(cases, [], truth_rows=200, options=QUICK).data["discrimination"]
    again = build_report(cases, [], truth_rows=200, options=QUICK).data["discrimination"]
    assert first == again
    for group in ("malignant", "macro", "NV", "MEL"):
        entry = first[group]
        assert entry["ci_low"] < entry["auroc"] < entry["ci_high"]
    other_seed = build_report(cases, [], truth_rows=200, options=ReportOptions(resamples=200, seed=2, minimum=EVERY_COUNT)).data
    assert other_seed["discrimination"]["malignant"]["ci_low"] != first["malignant"]["ci_low"]


def test_bootstrap_of_a_statistic_that_is_mostly_undefined_gives_no_interval() -> None:
    rare = np.zeros(40, dtype=int)
    rare[:2] = 1  # defined only when a resample holds both of the first two cases (about 40% do)

    def statistic(index: np.ndarray) -> dict[str, float]:
        return {"share": float(rare[index].mean())} if {0, 1} <= set(index.tolist()) else {}

    interval = bootstrap_intervals(statistic, ["share"], 40, resamples=300, seed=0)["share"]
    assert interval.low is None and interval.resamples < 150 and "undefined" in interval.note
    nothing = bootstrap_intervals(statistic, ["share"], 40, resamples=0)["share"]
    assert nothing.low is None and nothing.note == "no resamples"
