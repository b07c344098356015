"""The per-image analysis: segmentation, radiomics, fusion classifier and the BCC/SK model.

``Analyzer.load(settings)`` loads the four models once (from ``settings.models_dir``, or the starter
weights shipped in the package); ``Analyzer.analyze(images)`` runs them over a list of images in
batches and returns one :class:`~dermnode.contract.LesionAnalysis` per image, in order.

Choices worth knowing:

* **Not dermoscopy, no diagnosis.** The input gate comes first: pixel checks (greyscale, tiny,
  blank, dark, over-exposed, very blurred) before any model, then, after segmentation, the
  classifier's feature gate (a picture unlike any dermoscopy it was trained on). A refused image
  is ``NOT_ANALYSABLE`` with the reason ("not analysable: greyscale image ..."): no mask, no
  probabilities, no veto.
* **No lesion, no diagnosis.** When the segmenter finds no lesion the image is reported as
  ``NO_LESION``: no mask is invented and neither the classifier nor the BCC/SK model is run on it,
  so no probabilities (and no veto) are reported for an image in which no lesion was seen. The SR
  says "no lesion segmented" and a reader looks at the image.
* **Radiomics may fail on its own.** A tiny or degenerate mask gives no radiomic features; the
  classifier then takes its "radiomics missing" input, as it does in training.
* **One bad image does not sink the batch.** When a batched stage raises, that stage is retried
  image by image; the images that still fail come back ``FAILED`` with the reason in words.
* ``seconds`` holds the wall time per stage for each image; a batched stage's time is shared
  equally among the images of the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import numpy as np

from dermnode.contract import (
    DEFAULT_VETO_THRESHOLD,
    AnalysisStatus,
    LesionAnalysis,
    ModelIdentity,
    PatientMetadata,
)
from dermnode.models.input_gate import image_problem

STAGES: tuple[str, ...] = ("input_gate", "segmentation", "radiomics", "classifier", "bcc_sk")
DEFAULT_BATCH_SIZE = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class SourceImage:
    """One image to analyse: RGB pixels plus what the header (or a metadata CSV) says about it.

    ``dataset`` is the source DICOM dataset when there is one (the encoders reference it).
    """

    rgb: np.ndarray
    metadata: PatientMetadata = field(default_factory=PatientMetadata)
    pixel_spacing_mm: tuple[float, float] | None = None
    name: str = ""
    dataset: object | None = None


class _ImageFailed(Exception):
    """One image's stage failed; carries the reason for its FAILED analysis."""


def _run_batched(
    stage: str, func: Callable[[list[T]], Sequence[R]], items: list[T]
) -> tuple[list[R | _ImageFailed], float]:
    """``func`` over ``items`` in one call; if that raises, image by image.

    Returns one result (or an ``_ImageFailed``) per item and the seconds spent per item.
    """
    start = time.perf_counter()
    try:
        results: list[R | _ImageFailed] = list(func(items))
        if len(results) != len(items):
            raise RuntimeError(f"{stage} returned {len(results)} results for {len(items)} images")
    except Exception:  # noqa: BLE001 - find the image that broke the batch
        results = []
        for item in items:
            try:
                results.append(func([item])[0])
            except Exception as error:  # noqa: BLE001 - reported per image
                results.append(_ImageFailed(f"{stage} failed: {type(error).__name__}: {error}"))
    return results, (time.perf_counter() - start) / max(len(items), 1)


class Analyzer:
    """The four models of the node, ready to analyse images."""

    def __init__(
        self,
        segmenter,
        radiomics,
        classifier,
        bcc_sk,
        veto_threshold: float = DEFAULT_VETO_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pixel_gate: Callable[[np.ndarray], str | None] = image_problem,
    ) -> None:
        """``classifier`` also answers ``atypical(images, masks)`` (its feature gate); ``pixel_gate``
        says why an image is not analysable from its pixels alone, or None."""
        self.segmenter = segmenter
        self.radiomics = radiomics
        self.classifier = classifier
        self.bcc_sk = bcc_sk
        self.veto_threshold = veto_threshold
        self.batch_size = batch_size
        self.pixel_gate = pixel_gate

    @classmethod
    def load(cls, settings, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Analyzer:
        """Load the models named by ``settings`` (``models_dir``; None = the starter weights)."""
        from dermnode.models.bcc_sk import BccSkModel
        from dermnode.models.classifier import FusionClassifier
        from dermnode.models.model_card import model_dir
        from dermnode.models.radiomics import RadiomicsExtractor
        from dermnode.models.segmentation import LesionSegmenter

        models_dir = settings.models_dir
        return cls(
            segmenter=LesionSegmenter.load(model_dir(models_dir, "segmentation"), device=device),
            radiomics=RadiomicsExtractor(),
            classifier=FusionClassifier.load(model_dir(models_dir, "classifier"), device=device),
            bcc_sk=BccSkModel.load(model_dir(models_dir, "bcc_sk"), device=device),
            veto_threshold=settings.veto_threshold,
            batch_size=batch_size,
        )

    @property
    def identities(self) -> tuple[ModelIdentity, ...]:
        return (self.segmenter.identity, self.classifier.identity, self.bcc_sk.identity)

    def failed(self, reason: str, pixel_spacing_mm: tuple[float, float] | None = None) -> LesionAnalysis:
        """A FAILED analysis that names these models (e.g. for an image that could not be decoded)."""
        return self._without_result(AnalysisStatus.FAILED, reason, pixel_spacing_mm)

    def not_analysable(self, reason: str, pixel_spacing_mm: tuple[float, float] | None = None) -> LesionAnalysis:
        """The input gate's answer for an image that is not analysable dermoscopy."""
        return self._without_result(AnalysisStatus.NOT_ANALYSABLE, reason, pixel_spacing_mm)

    def _without_result(
        self, status: AnalysisStatus, reason: str, pixel_spacing_mm: tuple[float, float] | None
    ) -> LesionAnalysis:
        return LesionAnalysis(
            status=status,
            veto_threshold=self.veto_threshold,
            pixel_spacing_mm=pixel_spacing_mm,
            models=self.identities,
            failure_reason=reason,
        )

    def analyze(self, images: Sequence[SourceImage]) -> list[LesionAnalysis]:
        """One LesionAnalysis per image, in order, analysing ``batch_size`` images at a time."""
        refusals, gate_seconds = [], []
        for image in images:
            start = time.perf_counter()
            try:
                refusals.append(self.pixel_gate(image.rgb))
            except ValueError as error:  # not an image at all (shape): say so, as the gate would
                refusals.append(f"not analysable: {error}")
            gate_seconds.append(time.perf_counter() - start)
        kept = [i for i, refusal in enumerate(refusals) if refusal is None]
        results: list[LesionAnalysis] = []
        for start in range(0, len(kept), self.batch_size):
            batch = kept[start : start + self.batch_size]
            results.extend(self._analyze_batch([images[i] for i in batch], [gate_seconds[i] for i in batch]))
        analysed = iter(results)
        return [next(analysed) if refusal is None else self.not_analysable(refusal, image.pixel_spacing_mm)
                for image, refusal in zip(images, refusals)]

    # ------------------------------------------------------------------------------- internals
    def _analyze_batch(self, images: list[SourceImage], gate_seconds: list[float]) -> list[LesionAnalysis]:
        seconds = [dict.fromkeys(STAGES, 0.0) | {"input_gate": spent} for spent in gate_seconds]
        failures: list[str | None] = [None] * len(images)

        segmentations, per_image = _run_batched("segmentation", self.segmenter.predict, [im.rgb for im in images])
        masks: list[np.ndarray | None] = []
        confidences: list[float | None] = []
        for i, (image, result) in enumerate(zip(images, segmentations)):
            seconds[i]["segmentation"] = per_image
            if isinstance(result, _ImageFailed):
                failures[i] = str(result)
                masks.append(None)
                confidences.append(None)
                continue
            mask = None if result.mask is None else np.asarray(result.mask, dtype=bool)
            if mask is not None and mask.shape != image.rgb.shape[:2]:
                failures[i] = f"segmentation returned a {mask.shape} mask for a {image.rgb.shape[:2]} image"
            masks.append(mask if mask is not None and mask.any() else None)
            confidences.append(None if result.confidence is None else float(result.confidence))

        # The classifier's feature gate, on what it would see (the lesion crop, or the whole image).
        refusals: list[str | None] = [None] * len(images)
        segmented = [i for i in range(len(images)) if failures[i] is None]
        if segmented:
            verdicts, per_image = _run_batched(
                "input gate",
                lambda index: self.classifier.atypical([images[i].rgb for i in index], [masks[i] for i in index]),
                segmented,
            )
            for i, verdict in zip(segmented, verdicts):
                seconds[i]["input_gate"] += per_image
                if isinstance(verdict, _ImageFailed):
                    failures[i] = str(verdict)
                else:
                    refusals[i] = verdict

        # The images that go on: segmented, with a lesion, accepted by the gate, not failed.
        lesion = [i for i in range(len(images)) if failures[i] is None and refusals[i] is None and masks[i] is not None]
        features: dict[int, dict[str, float] | None] = {}
        for i in lesion:
            start = time.perf_counter()
            try:
                features[i] = self.radiomics.extract(images[i].rgb, masks[i], images[i].pixel_spacing_mm).features
            except Exception:  # noqa: BLE001 - the classifier takes "radiomics missing" instead
                features[i] = None
            seconds[i]["radiomics"] = time.perf_counter() - start

        probabilities: dict[int, dict[str, float]] = {}
        bcc: dict[int, float] = {}
        if lesion:
            batch = [(images[i], masks[i], features[i]) for i in lesion]
            predicted, per_image = _run_batched(
                "classifier",
                lambda items: self.classifier.predict(
                    [im.rgb for im, _, _ in items], [m for _, m, _ in items],
                    [im.metadata for im, _, _ in items], [f for _, _, f in items],
                ),
                batch,
            )
            for i, result in zip(lesion, predicted):
                seconds[i]["classifier"] = per_image
                if isinstance(result, _ImageFailed):
                    failures[i] = str(result)
                else:
                    probabilities[i] = {code: float(p) for code, p in result.items()}
            predicted, per_image = _run_batched("bcc_sk", self.bcc_sk.predict, [images[i].rgb for i in lesion])
            for i, result in zip(lesion, predicted):
                seconds[i]["bcc_sk"] = per_image
                if isinstance(result, _ImageFailed):
                    failures[i] = failures[i] or str(result)
                else:
                    bcc[i] = float(result)

        selected = tuple(getattr(self.classifier, "selected_features", ()))
        analyses = []
        for i, image in enumerate(images):
            if failures[i] is not None:
                analysis = self.failed(failures[i], image.pixel_spacing_mm)
            elif refusals[i] is not None:
                analysis = self.not_analysable(refusals[i], image.pixel_spacing_mm)
            elif masks[i] is None:
                analysis = LesionAnalysis(
                    status=AnalysisStatus.NO_LESION,
                    veto_threshold=self.veto_threshold,
                    segmentation_confidence=confidences[i],
                    pixel_spacing_mm=image.pixel_spacing_mm,
                    models=self.identities,
                )
            else:
                analysis = LesionAnalysis(
                    status=AnalysisStatus.ANALYSED,
                    veto_threshold=self.veto_threshold,
                    mask=masks[i],
                    segmentation_confidence=confidences[i],
                    probabilities=probabilities[i],
                    bcc_probability=bcc[i],
                    radiomics={name: float(features[i][name]) for name in selected if features[i] and name in features[i]},
                    pixel_spacing_mm=image.pixel_spacing_mm,
                    models=self.identities,
                )
            analysis.seconds = {stage: round(value, 4) for stage, value in seconds[i].items()}
            analyses.append(analysis)
        return analyses
