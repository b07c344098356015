"""The hand-off between analysis (models/, workers/) and encoding (dicom_templates/).

Plain data only: numpy arrays, strings and numbers, never tensors, so that every room may import
this module without pulling in torch or pydicom.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

#: The eight diagnoses, in the order of the classifier's softmax.
CLASS_CODES: tuple[str, ...] = ("NV", "MEL", "BCC", "BKL", "AK", "SCC", "DF", "VASC")
#: Classes whose probabilities add up to the malignancy probability.
MALIGNANT_CODES: tuple[str, ...] = ("MEL", "BCC", "AK", "SCC")
CLASS_NAMES: dict[str, str] = {
    "NV": "melanocytic nevus",
    "MEL": "melanoma",
    "BCC": "basal cell carcinoma",
    "BKL": "benign keratosis",
    "AK": "actinic keratosis",
    "SCC": "squamous cell carcinoma",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}
DEFAULT_VETO_THRESHOLD = 0.3

#: The names of the node's three models, as their model cards and ModelIdentity carry them; the
#: encoders use them to attach each result to the model that produced it.
SEGMENTATION_MODEL = "dermnode-lesion-segmentation"
CLASSIFIER_MODEL = "dermnode-fusion-classifier"
BCC_SK_MODEL = "dermnode-bcc-sk-clip"


def malignancy_probability(probabilities: dict[str, float]) -> float:
    """P(MEL) + P(BCC) + P(AK) + P(SCC)."""
    return float(sum(probabilities[code] for code in MALIGNANT_CODES))


@dataclass(frozen=True)
class PatientMetadata:
    """What the classifier's quantitative branch knows about the patient; None where unknown.

    ``sex`` is ``"male"`` or ``"female"``; ``anatomic_site`` uses the ISIC ``anatom_site_general``
    vocabulary (e.g. ``"anterior torso"``, ``"head/neck"``, ``"lower extremity"``).
    """

    age: float | None = None
    sex: str | None = None
    anatomic_site: str | None = None


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced a result: name, version and the sha256 of its weights file."""

    name: str
    version: str
    sha256: str


class AnalysisStatus(str, Enum):
    ANALYSED = "analysed"
    NO_LESION = "no_lesion"  # the segmentation found nothing; no mask is invented
    FAILED = "failed"  # the analysis could not run; ``failure_reason`` says why
    NOT_ANALYSABLE = "not_analysable"  # the input gate refused the image (not dermoscopy, greyscale, blurred, ...); ``failure_reason`` says why


@dataclass
class LesionAnalysis:
    """Everything the node concluded about one image.

    ``mask`` is a boolean array at the source image's rows x columns (None unless ANALYSED).
    ``probabilities`` maps every code of CLASS_CODES to a probability (empty unless ANALYSED).
    ``bcc_probability`` is P(BCC) from the BCC-versus-seborrheic-keratosis model.
    ``radiomics`` holds the selected radiomic features, named as pyradiomics names them.
    ``lesion_area`` is in mm² when ``pixel_spacing_mm`` is known, otherwise in pixels.
    ``seconds`` is the wall time per stage (segmentation, radiomics, classifier, bcc_sk).
    """

    status: AnalysisStatus
    veto_threshold: float = DEFAULT_VETO_THRESHOLD
    mask: np.ndarray | None = None
    segmentation_confidence: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    bcc_probability: float | None = None
    radiomics: dict[str, float] = field(default_factory=dict)
    pixel_spacing_mm: tuple[float, float] | None = None
    models: tuple[ModelIdentity, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    failure_reason: str | None = None

    @property
    def top_class(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def malignancy_probability(self) -> float | None:
        return malignancy_probability(self.probabilities) if self.probabilities else None

    @property
    def veto(self) -> bool | None:
        """True when the malignancy probability is at or above the threshold, whatever the top class."""
        p = self.malignancy_probability
        return None if p is None else p >= self.veto_threshold

    @property
    def bcc_sk_call(self) -> str | None:
        """"BCC" or "SK" from the BCC/SK model (SK is the benign-keratosis side)."""
        if self.bcc_probability is None:
            return None
        return "BCC" if self.bcc_probability >= 0.5 else "SK"

    @property
    def lesion_area(self) -> float | None:
        if self.mask is None:
            return None
        pixels = float(np.count_nonzero(self.mask))
        if self.pixel_spacing_mm is None:
            return pixels
        return pixels * self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1]

    @property
    def lesion_area_unit(self) -> str:
        return "mm2" if self.pixel_spacing_mm is not None else "pixels"


# ------------------------------------------------------------------------------ the wire format
def analysis_to_wire(analysis: LesionAnalysis) -> dict:
    """A LesionAnalysis as JSON-ready data, for a worker on another host to hand back to the node.

    The mask travels bit-packed (``np.packbits``) and base64-encoded with its shape."""
    mask = None
    if analysis.mask is not None:
        bits = np.packbits(np.asarray(analysis.mask, dtype=bool), axis=None)
        mask = {"shape": list(analysis.mask.shape), "bits": base64.b64encode(bits.tobytes()).decode("ascii")}
    return {
        "status": analysis.status.value,
        "veto_threshold": analysis.veto_threshold,
        "mask": mask,
        "segmentation_confidence": analysis.segmentation_confidence,
        "probabilities": {code: float(p) for code, p in analysis.probabilities.items()},
        "bcc_probability": analysis.bcc_probability,
        "radiomics": {name: float(value) for name, value in analysis.radiomics.items()},
        "pixel_spacing_mm": list(analysis.pixel_spacing_mm) if analysis.pixel_spacing_mm else None,
        "models": [[m.name, m.version, m.sha256] for m in analysis.models],
        "seconds": {stage: float(value) for stage, value in analysis.seconds.items()},
        "failure_reason": analysis.failure_reason,
    }


def analysis_from_wire(data: dict) -> LesionAnalysis:
    """The inverse of ``analysis_to_wire``; ValueError (in words) for data of another shape."""
    try:
        mask = None
        if data.get("mask") is not None:
            rows, columns = (int(n) for n in data["mask"]["shape"])
            bits = np.frombuffer(base64.b64decode(data["mask"]["bits"], validate=True), dtype=np.uint8)
            if bits.size != (rows * columns + 7) // 8:
                raise ValueError(f"a {rows}x{columns} mask needs {(rows * columns + 7) // 8} bytes, not {bits.size}")
            mask = np.unpackbits(bits, count=rows * columns).reshape(rows, columns).astype(bool)
        spacing = data.get("pixel_spacing_mm")
        return LesionAnalysis(
            status=AnalysisStatus(data["status"]),
            veto_threshold=float(data["veto_threshold"]),
            mask=mask,
            segmentation_confidence=data.get("segmentation_confidence"),
            probabilities={str(code): float(p) for code, p in data.get("probabilities", {}).items()},
            bcc_probability=data.get("bcc_probability"),
            radiomics={str(name): float(value) for name, value in data.get("radiomics", {}).items()},
            pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
            models=tuple(ModelIdentity(str(name), str(version), str(sha)) for name, version, sha in data.get("models", [])),
            seconds={str(stage): float(value) for stage, value in data.get("seconds", {}).items()},
            failure_reason=data.get("failure_reason"),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise ValueError(f"not an analysis in dermnode's wire format: {type(error).__name__}: {error}") from None
