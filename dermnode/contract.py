"""The hand-off between analysis (models/, workers/) and encoding (dicom_templates/).

Plain data only: numpy arrays, strings and numbers, never tensors, so that every room may import
this module without pulling in torch or pydicom.
"""

from __future__ import annotations

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
