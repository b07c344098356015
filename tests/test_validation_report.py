"""`dermnode validate` end to end on dicomized ISIC images, and the report in headless Chromium.

The audit store and the outbox are filled the way the node fills them (``record_analysis`` with the
source header of a dicomized image; SEG, SR and KOS from ``build_results`` in the outbox layout); the analyses carry seeded probabilities leaning
towards the real diagnosis (the models are tested elsewhere: here the subject is the validation).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.contract import CLASS_CODES, MALIGNANT_CODES, AnalysisStatus, LesionAnalysis
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.dicom_templates.results import build_results
from dermnode.models.dataset_index import load_records
from dermnode.models.model_card import STARTER_DIR, ModelCard
from dermnode.node.audit import AuditStore, source_header
from peers import shared_data

PER_CLASS = 5  # isic-8class images per diagnosis
WITH_MASKS = 8  # isic2018-task1 images with expert masks (their SEG gets a shifted copy of the mask)
#: The analyses name the starter models, as the node's results do (their cards list their training ids).
STARTER_MODELS = tuple(ModelCard.load(STARTER_DIR / name, verify=False).identity
                       for name in ("segmentation", "classifier", "bcc_sk"))


def seeded_analysis(rng: np.random.Generator, diagnosis: str, mask: np.ndarray,
                    lean: str | None = None) -> LesionAnalysis:
    """Probabilities leaning towards ``lean`` (the diagnosis unless given: a wrong lean makes a miss)."""
    alpha = np.ones(len(CLASS_CODES))
    alpha[CLASS_CODES.index(lean or diagnosis)] += 3 if lean is None else 12
    probabilities = dict(zip(CLASS_CODES, rng.dirichlet(alpha).tolist()))
    bcc = float(np.clip(rng.normal(0.7 if diagnosis == "BCC" else 0.35, 0.2), 0, 1))
    return LesionAnalysis(status=AnalysisStatus.ANALYSED, mask=mask, segmentation_confidence=0.9,
                          probabilities=probabilities, bcc_probability=bcc, models=STARTER_MODELS)  # fmt: skip


@pytest.fixture(scope="module")
def node_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A node home (audit database, spool with the source images, outbox SEG files) and the truth CSV for it."""
    data = shared_data()
    home = tmp_path_factory.mktemp("node")
    records = load_records(data)
    rng = np.random.default_rng(5)
    chosen = [r for code in CLASS_CODES for r in [x for x in records if x.collection == "isic-8class"
              and x.diagnosis == code][:PER_CLASS]]  # fmt: skip
    taken = {r.image_id for r in chosen}
    chosen += [r for r in records if r.mask_path and r.diagnosis and r.image_id not in taken][:WITH_MASKS]
    store = AuditStore(f"sqlite:///{home / 'dermnode.db'}")
    truth_rows = []
    for index, record in enumerate(chosen):
        ds = dicomize_image(record.image_path, record.image_id, record.metadata)
        spooled = home / "spool" / ds.StudyInstanceUID  # the node's spool layout: <study>/<sop uid>.dcm
        spooled.mkdir(parents=True, exist_ok=True)
        ds.save_as(spooled / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        if record.mask_path:
            mask = np.roll(np.asarray(Image.open(record.mask_path).convert("L")) > 0, 12, axis=1)
        else:
            mask = np.zeros((ds.Rows, ds.Columns), bool)
            mask[ds.Rows // 4 : 3 * ds.Rows // 4, ds.Columns // 4 : 3 * ds.Columns // 4] = True
        missed = record.diagnosis in MALIGNANT_CODES and index % 5 == 1  # the node calls a few malignant lesions nevi
        analysis = seeded_analysis(rng, record.diagnosis, mask, "NV" if missed else None)
        if index % 17 == 3:  # the node failed on a few images: their truth rows are excluded
            analysis = LesionAnalysis(status=AnalysisStatus.FAILED, failure_reason="pixel data cannot be decoded")
        results = build_results(ds, analysis)
        folder = home / "outbox" / ds.StudyInstanceUID  # the node's outbox layout: <study>/<sop uid>.dcm
        folder.mkdir(parents=True, exist_ok=True)
        for result in results.datasets():
            result.save_as(folder / f"{result.SOPInstanceUID}.dcm", enforce_file_format=True)
        uids = {"seg": results.seg and str(results.seg.SOPInstanceUID), "sr": str(results.sr.SOPInstanceUID),
                "kos": results.kos and str(results.kos.SOPInstanceUID)}  # fmt: skip
        store.record_analysis(source_header(ds, record.metadata), analysis, uids, idempotency_key="validation-test")
        truth_rows.append([str(ds.SOPInstanceUID), record.diagnosis, str(record.mask_path or "")])
    store.close()
    truth_rows += [["1.2.999.1", "MEL", ""], [truth_rows[0][0] + ".7", "wart", ""]]
    truth = home / "truth.csv"
    with truth.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sop_instance_uid", "diagnosis", "mask"])
        writer.writerows(truth_rows)
    return home, truth


#: The arithmetic checks below compare every class's figures with scikit-learn: no minimum count.
EVERY_COUNT = ("--min-positives", "1", "--min-negatives", "1")


def run_validate(truth: Path, out: Path, home: Path, *source: str) -> str:
    result = CliRunner().invoke(
        app, ["validate", "--truth", str(truth), *source, "--out", str(out), "--bootstrap", "200"],
        env={"DERMNODE_HOME": str(home), "DERMNODE_CONFIG": "", "DERMNODE_DATABASE_URL": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def report_dir(node_home: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    home, truth = node_home
    out = tmp_path_factory.mktemp("report")
    assert "cases joined on sop_instance_uid" in run_validate(truth, out, home, "--audit", *EVERY_COUNT)
    return out


def test_report_figures_equal_scikit_learn(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    with (report_dir / "cases.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    n_failed = len([i for i in range(PER_CLASS * len(CLASS_CODES) + WITH_MASKS) if i % 17 == 3])
    assert len(rows) == report["counts"]["cases"] == PER_CLASS * len(CLASS_CODES) + WITH_MASKS - n_failed
    reasons = [e["reason"] for e in report["excluded"]]
    assert reasons.count("the node did not analyse the image (status failed: pixel data cannot be decoded)") == n_failed
    assert "no recorded output with this sop_instance_uid" in reasons and "unknown diagnosis 'wart'" in reasons

    truth = np.array([CLASS_CODES.index(r["truth"]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_CODES] for r in rows])
    malignant = np.isin([r["truth"] for r in rows], MALIGNANT_CODES)
    malignancy = np.array([float(r["malignancy_probability"]) for r in rows])
    for k, code in enumerate(CLASS_CODES):
        assert report["discrimination"][code]["auroc"] == pytest.approx(sk.roc_auc_score(truth == k, probs[:, k]))
    assert report["discrimination"]["malignant"]["auroc"] == pytest.approx(sk.roc_auc_score(malignant, malignancy))
    veto = next(r for r in report["table2"]["rows"] if r["group"] == "malignant")["at_veto"]
    called = malignancy >= 0.3
    assert veto["sensitivity"] == pytest.approx(sk.recall_score(malignant, called))
    assert veto["specificity"] == pytest.approx(sk.recall_score(~malignant, ~called))
    assert veto["ppv"] == pytest.approx(sk.precision_score(malignant, called))
    assert [r["veto"] == "True" for r in rows] == called.tolist()


def test_dice_and_iou_from_the_nodes_seg_files(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    segmentation = report["segmentation"]
    assert segmentation["n_with_truth_mask"] >= WITH_MASKS - 1 and segmentation["n_scored"] == segmentation["n_with_truth_mask"]
    scored = [c for c in report["cases"] if c["dice"] is not None]
    assert all(0.5 < c["dice"] < 1.0 and c["iou"] < c["dice"] for c in scored)  # shifted by 12 pixels
    assert segmentation["dice"]["mean"] == pytest.approx(np.mean([c["dice"] for c in scored]))


def test_sr_files_give_the_same_figures_as_the_audit_log(node_home: tuple[Path, Path], report_dir: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    home, truth = node_home
    run_validate(truth, tmp_path, home, "--sr-dir", str(home / "outbox"), *EVERY_COUNT)
    from_sr = json.loads((tmp_path / "report.json").read_text())
    from_audit = json.loads((report_dir / "report.json").read_text())
    assert from_sr["source"]["mode"] == "sr-dir" and from_sr["source"]["seg_files_matched"] > 0
    assert from_sr["counts"]["cases"] == from_audit["counts"]["cases"]
    for section in ("discrimination", "table2", "confusion_matrix", "segmentation", "subgroups"):
        assert _close(from_sr[section], from_audit[section]), section


def _close(a: object, b: object) -> bool:
    """Equal up to float rounding (the SR stores probabilities as decimal strings)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, abs=1e-6)
    return a == b


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.images: dict[str, list[str]] = {"plot": [], "case": []}  # plots, and thumbnails (alt "case ...")
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "td":
            self._in_cell = True
            self.cells.append("")
        elif tag == "img":
            found = dict(attrs)
            self.images["case" if found["alt"].startswith("case ") else "plot"].append(found["src"])

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = self._in_cell and tag != "td"

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def test_html_is_self_contained_with_filled_tables(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    parsed = _Tables()
    parsed.feed(html)
    numbers = [c for c in parsed.cells if c.strip().replace(".", "", 1).isdigit()]
    assert len(numbers) > 200
    assert len(parsed.images["plot"]) == 5
    for source in parsed.images["plot"]:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.width > 400 and image.height > 300
    assert "http://" not in html and "https://" not in html
    assert "BCC-vs-SK CLIP/CoOp paper" in html and "PMC11347612" in html
    assert "fill it in" not in html and "98.8 &plusmn;0.02" in html  # the seed paper's Table 2, ISIC 2018 nevus
    assert "not from these cases" in html


def test_report_names_the_models_and_the_cases_they_were_trained_on(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    html = (report_dir / "report.html").read_text()
    for identity in STARTER_MODELS:
        entry = next(m for m in report["models"]["models"] if m["name"] == identity.name)
        assert (entry["version"], entry["sha256"], entry["results"]) == (identity.version, identity.sha256,
                                                                         report["counts"]["cases"])
        assert entry["card"]["profile"] == "cpu" and identity.sha256 in html
    classifier = ModelCard.load(STARTER_DIR / "classifier", verify=False)
    seen_ids = set(classifier.split_ids["train"]) | set(classifier.split_ids["validation"])
    expected = [c for c in report["cases"] if c["accession_number"] in seen_ids]  # dicomize: accession = ISIC id
    overlap = report["training_overlap"]
    assert overlap["n_seen"] == len(expected) > 0 and overlap["not_checked"] == 0
    assert report["warnings"][0].startswith(f"TRAINING OVERLAP: {len(expected)} of {report['counts']['cases']} cases")
    assert html.index("TRAINING OVERLAP") < html.index("<h2>")  # at the top, before the first section
    assert all("dermnode-fusion-classifier" in c["seen_in_training"] for c in expected)


def test_missed_malignancies_are_listed_with_thumbnails(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    missed = report["missed_malignancies"]
    expected = [c for c in report["cases"] if c["truth_malignant"] and not c["veto"]]
    assert len(missed) == len(expected) > 0
    assert [m["malignancy_probability"] for m in missed] == sorted(c["malignancy_probability"] for c in expected)
    parsed = _Tables()
    parsed.feed((report_dir / "report.html").read_text())
    assert len(parsed.images["case"]) == len(missed)  # every source image is in the spool
    first = base64.b64decode(parsed.images["case"][0].split(",", 1)[1])
    thumb = np.asarray(Image.open(io.BytesIO(first)).convert("RGB"))
    assert max(thumb.shape[:2]) == 112
    assert ((thumb == (0, 255, 64)).all(axis=2)).sum() > 20, "no mask outline drawn"


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs it: see .ci/run)")
    return chromium


def _headless(chromium: str, profile: Path, *args: str) -> None:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,9000",
              (report_dir / "report.html").as_uri())  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (9000, 1400)
    ink = (pixels < 200).any(axis=2).mean()
    assert ink > 0.03, f"only {ink:.1%} of the page is not white: the report did not render"
    colours = {tuple(c) for c in pixels[::4, ::4].reshape(-1, 3) // 32}
    assert len(colours) > 40, "too few colours for tables plus ROC, PR, confusion and calibration plots"
    plot_region = pixels[:, 60:1100]
    blue_rows = ((plot_region[..., 2] > 150) & (plot_region[..., 0] < 120)).any(axis=1).sum()
    assert blue_rows > 300, "no coloured curves or matrix cells visible"


PAPERS = {"Letter": (612, 792), "A4": (595, 842)}  # page sizes in PostScript points


class _LastHeaders(HTMLParser):
    """The text of each printed table's last header cell (tables inside a closed <details> do not print)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: list[str] = []
        self._details = 0
        self._header: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._details += tag == "details"
        if tag == "th" and not self._details:
            self._header = ""
        elif tag == "table" and not self._details:
            self.last.append("")

    def handle_endtag(self, tag: str) -> None:
        self._details -= tag == "details"
        if tag == "th" and self._header is not None:
            self.last[-1], self._header = self._header, None

    def handle_data(self, data: str) -> None:
        if self._header is not None:
            self._header += data


@pytest.mark.parametrize("paper", PAPERS)
def test_a_real_report_prints_on_letter_and_a4_without_cutting_tables(node_home: tuple[Path, Path], tmp_path: Path,
                                                                      paper: str) -> None:  # fmt: skip
    """The report with the default minimum count, printed by Chromium (Letter is its default paper; A4 as
    a reader's @page rule asks): no blank page, every table whole and legible. Chromium either clips
    what is wider than the page (the clipped text is then missing from the PDF) or shrinks the whole
    document to fit (the text then gets tiny)."""
    chromium = _chromium()
    if not all(shutil.which(tool) for tool in ("pdfinfo", "pdftoppm", "pdftotext")):
        pytest.skip("poppler-utils (pdfinfo, pdftoppm, pdftotext) are not installed (CI installs them: see .ci/run)")
    home, truth = node_home
    output = run_validate(truth, tmp_path / "report", home, "--audit")
    assert "macro AUROC: n too small" in output and "WARNING: TRAINING OVERLAP" in output
    html = tmp_path / "report" / "report.html"
    if paper != "Letter":
        html.write_text(html.read_text().replace("</head>", f"<style>@page {{ size: {paper}; }}</style></head>"))
    pdf = tmp_path / "report.pdf"
    _headless(chromium, tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri())
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    size = next(line for line in info.splitlines() if line.startswith("Page size:")).split()
    assert (round(float(size[2])), round(float(size[4]))) == PAPERS[paper] and 4 <= pages <= 30, info
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=120)
    for png in sorted(tmp_path.glob("page-*.png")):
        assert (np.asarray(Image.open(png).convert("L")) < 200).mean() > 0.005, f"{png.name} is blank"
    text = "".join(subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout.split())
    headers = _LastHeaders()
    headers.feed(html.read_text())
    assert len(headers.last) > 15
    for header in headers.last:
        assert "".join(header.split()) in text, f"the table ending in column {header!r} is cut off in print"
    assert "ntoosmall" in text and "TRAININGOVERLAP" in text
    boxes = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    heights = [float(y1) - float(y0) for y0, y1 in re.findall(r'yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)"', boxes)]
    # table text is 9 px (word boxes 7.8 pt high); shrunk to fit, the boxes are nearer 5 pt
    assert np.median(heights) > 7.0, "the print is shrunk to fit: something is wider than the page"
