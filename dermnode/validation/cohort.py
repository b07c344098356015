"""The node's recorded outputs, joined with the truth into cases.

Every source of outputs (the audit store, a folder of SR files) becomes a list of
:class:`RecordedOutput`; :func:`join` pairs them with the truth rows into :class:`Case` records, the
only thing the metrics see. Tests build cases by hand.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermnode.contract import (
    CLASS_CODES,
    DEFAULT_VETO_THRESHOLD,
    MALIGNANT_CODES,
    ModelIdentity,
    malignancy_probability,
)
from dermnode.validation.truth import Exclusion, Truth, parse_age, parse_float, parse_sex

ANALYSED = "analysed"


@dataclass
class RecordedOutput:
    """What the node recorded for one image."""

    study_uid: str | None
    sop_instance_uid: str | None
    accession_number: str | None
    status: str
    probabilities: dict[str, float] = field(default_factory=dict)
    veto_threshold: float = DEFAULT_VETO_THRESHOLD
    bcc_probability: float | None = None
    failure_reason: str | None = None
    age: float | None = None
    sex: str | None = None
    anatomic_site: str | None = None
    recorded_at: str = ""  # ISO time; the latest of several outputs for one image wins
    predicted_mask: np.ndarray | Path | None = None  # an array, or the DICOM SEG file holding it
    patient_id: str | None = None
    models: tuple[ModelIdentity, ...] = ()  # the models that produced the result

    def key(self, column: str) -> str | None:
        """The value of a truth key column (sop_instance_uid, study_uid or accession_number)."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "study_uid": self.study_uid,
            "accession_number": self.accession_number,
        }[column]


@dataclass
class Case:
    """One image with both a truth label and the node's analysis."""

    key: str
    truth: str  # one of CLASS_CODES, "benign" or "malignant"
    probabilities: dict[str, float]
    veto_threshold: float = DEFAULT_VETO_THRESHOLD
    bcc_probability: float | None = None
    age: float | None = None
    sex: str | None = None
    anatomic_site: str | None = None
    truth_mask_path: Path | None = None
    predicted_mask: np.ndarray | Path | None = None
    ids: dict[str, str | None] = field(default_factory=dict)  # study_uid, sop_instance_uid, accession_number, patient_id
    models: tuple[ModelIdentity, ...] = ()

    @property
    def truth_class(self) -> str | None:
        return self.truth if self.truth in CLASS_CODES else None

    @property
    def truth_malignant(self) -> bool:
        return self.truth == "malignant" or self.truth in MALIGNANT_CODES

    @property
    def malignancy_probability(self) -> float:
        return malignancy_probability(self.probabilities)

    @property
    def veto(self) -> bool:
        return self.malignancy_probability >= self.veto_threshold

    @property
    def top_class(self) -> str:
        return max(CLASS_CODES, key=self.probabilities.__getitem__)


def output_from_audit_row(row: dict, result_dirs: tuple[Path, ...] = ()) -> RecordedOutput:
    """A row of ``AuditStore.analysed_rows()`` (the columns of ``dermnode audit export``).

    The node's SEG is looked for as ``<dir>/<study_uid>/<seg_sop_uid>.dcm`` in ``result_dirs``
    (the node's outbox keeps its result files that way).
    """
    probabilities = {code: p for code in CLASS_CODES if (p := parse_float(row.get(f"p_{code}"))) is not None}
    threshold = parse_float(row.get("veto_threshold"))
    seg_uid, study_uid = row.get("seg_sop_uid") or None, row.get("study_uid") or None
    seg_files = [d / study_uid / f"{seg_uid}.dcm" for d in result_dirs] if seg_uid and study_uid else []
    names = sorted({column[len("model_"):-len("_version")] for column in row
                    if column.startswith("model_") and column.endswith("_version")})  # fmt: skip
    models = tuple(ModelIdentity(name, str(row[f"model_{name}_version"]), str(row.get(f"model_{name}_sha256") or ""))
                   for name in names if row.get(f"model_{name}_version"))  # fmt: skip
    return RecordedOutput(
        study_uid=row.get("study_uid") or None,
        sop_instance_uid=row.get("sop_instance_uid") or None,
        accession_number=row.get("accession_number") or None,
        status=str(row.get("status") or ""),
        probabilities=probabilities,
        veto_threshold=DEFAULT_VETO_THRESHOLD if threshold is None else threshold,
        bcc_probability=parse_float(row.get("bcc_probability")),
        failure_reason=row.get("failure_reason") or None,
        age=parse_age(row.get("age")),
        sex=parse_sex(row.get("sex")),
        anatomic_site=row.get("anatomic_site") or None,
        recorded_at=str(row.get("analysed_at") or ""),
        predicted_mask=next((path for path in seg_files if path.is_file()), None),
        patient_id=row.get("patient_id") or None,
        models=models,
    )


def _latest_per_image(outputs: list[RecordedOutput]) -> list[RecordedOutput]:
    """One output per SOP instance: the latest recorded (an image sent twice is analysed twice)."""
    latest: dict[str, RecordedOutput] = {}
    anonymous: list[RecordedOutput] = []
    for output in outputs:
        uid = output.sop_instance_uid
        if uid is None:
            anonymous.append(output)
        elif uid not in latest or output.recorded_at >= latest[uid].recorded_at:
            latest[uid] = output
    return list(latest.values()) + anonymous


def join(truth: Truth, outputs: list[RecordedOutput]) -> tuple[list[Case], list[Exclusion], int]:
    """Pair truth rows with recorded outputs on the truth's key column.

    Returns the cases, the truth rows left out (with the reason), and the number of recorded
    outputs that no truth row refers to.
    """
    column = truth.key_column
    by_key: dict[str, list[RecordedOutput]] = defaultdict(list)
    for output in _latest_per_image(outputs):
        key = output.key(column)
        if key:
            by_key[key].append(output)

    cases: list[Case] = []
    excluded: list[Exclusion] = []
    used: set[str] = set()
    for row in truth.rows:
        matches = by_key.get(row.key, [])
        if not matches:
            excluded.append(Exclusion(row.row, row.key, f"no recorded output with this {column}"))
            continue
        used.add(row.key)
        if len(matches) > 1:
            excluded.append(
                Exclusion(
                    row.row,
                    row.key,
                    f"this {column} matches {len(matches)} analysed images: one diagnosis cannot be "
                    "attributed to one image; key the truth by sop_instance_uid",
                )
            )
            continue
        output = matches[0]
        if output.status != ANALYSED:
            reason = f"the node did not analyse the image (status {output.status or 'unknown'}"
            reason += f": {output.failure_reason})" if output.failure_reason else ")"
            excluded.append(Exclusion(row.row, row.key, reason))
            continue
        missing = [code for code in CLASS_CODES if code not in output.probabilities]
        if missing:
            excluded.append(Exclusion(row.row, row.key, f"recorded output lacks P({', '.join(missing)})"))
            continue
        cases.append(
            Case(
                key=row.key,
                truth=row.label,
                probabilities=dict(output.probabilities),
                veto_threshold=output.veto_threshold,
                bcc_probability=output.bcc_probability,
                age=output.age if output.age is not None else row.age,
                sex=output.sex or row.sex,
                anatomic_site=output.anatomic_site or row.anatomic_site,
                truth_mask_path=row.mask_path,
                predicted_mask=output.predicted_mask,
                ids={
                    "study_uid": output.study_uid,
                    "sop_instance_uid": output.sop_instance_uid,
                    "accession_number": output.accession_number,
                    "patient_id": output.patient_id,
                },
                models=output.models,
            )
        )
    unmatched = sum(len(v) for k, v in by_key.items() if k not in used)
    return cases, excluded, unmatched
