"""The fusion classifier the node runs: 8 diagnoses from image, lesion mask, metadata and radiomics.

See :mod:`dermnode.models.classifier.net` for the network and :mod:`dermnode.models.classifier.train`
for training. A weights directory holds ``classifier.pt`` (half precision), the radiomic feature
selection ``radiomics_selection.json`` (names, normalisation), ``split.json`` and ``model_card.json``
(with the per-class Youden thresholds and the validation metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dermnode.contract import (
    CLASS_CODES,
    CLASSIFIER_MODEL,
    DEFAULT_VETO_THRESHOLD,
    ModelIdentity,
    PatientMetadata,
    malignancy_probability,
)
from dermnode.models.classifier.calibration import scale_malignancy
from dermnode.models.classifier.data import encode_metadata, prepare_pair
from dermnode.models.classifier.net import (
    ABLATION_VARIANTS,
    ClassifierConfig,
    FusionNet,
)
from dermnode.models.device import torch_device
from dermnode.models.input_gate.checks import FeatureGate, atypicality_problems
from dermnode.models.model_card import STARTER_DIR, ModelCard, sha256_file
from dermnode.models.radiomics import FeatureSelection

NAME = CLASSIFIER_MODEL  # as the model card and ModelIdentity carry it
#: predict_variants' variants beside "fused" (the shipped answer): the fused head on the image as it
#: is, and the fused and image-only heads over the image and its 3 flips (test-time augmentation).
FUSED_PLAIN = "fused, 1 view"
FUSED_TTA = "fused, 4 flips"
IMAGE_TTA = "image, 4 flips"
WEIGHTS_FILE = "classifier.pt"
SELECTION_FILE = "radiomics_selection.json"


def is_malignant(probabilities: dict[str, float], threshold: float = DEFAULT_VETO_THRESHOLD) -> bool:
    """The veto: malignant when P(MEL)+P(BCC)+P(AK)+P(SCC) is at or above ``threshold``,
    whatever the top class."""
    return malignancy_probability(probabilities) >= threshold


def metadata_missing(metadata: PatientMetadata) -> bool:
    """True when the classifier would see no metadata at all (every field missing or unknown)."""
    return bool(np.array_equal(encode_metadata(metadata), _NO_METADATA))


def radiomics_vector(selection: FeatureSelection, features: dict[str, float] | None) -> np.ndarray:
    """The selected, normalised features followed by the "missing" flag."""
    flag = np.array([1.0 if features is None else 0.0], dtype=np.float32)
    return np.concatenate([selection.transform(features), flag]).astype(np.float32)


_NO_METADATA = encode_metadata(PatientMetadata())


class FusionClassifier:
    """Predicts probabilities over CLASS_CODES; see :func:`is_malignant` for the veto.

    An ensemble when it holds several networks (members trained alike with other seeds): every
    answer is the mean of the members' probabilities. The members share the split, the radiomic
    feature selection and the preprocessing; the first member's configuration says how images are
    prepared, how many views are used and which head answers without metadata. The input gate holds
    one feature gate per member: an image is refused when it looks unlike the training images to any
    member (each network sees other features, so a picture typical to one may be atypical to another)."""

    def __init__(
        self, nets: FusionNet | Sequence[FusionNet], selection: FeatureSelection, card: ModelCard,
        device: str = "cpu", gates: Sequence[FeatureGate] = (),
    ) -> None:
        self.members = [net.to(device).eval() for net in ([nets] if isinstance(nets, FusionNet) else nets)]
        if not self.members:
            raise ValueError("a classifier needs at least one network")
        self.selection = selection
        self.card = card
        self.device = device
        if gates and len(gates) != len(self.members):
            raise ValueError(f"{len(gates)} feature gates for {len(self.members)} networks: give one per network")
        self.gates = list(gates)  # refuse images whose features are unlike the training images' (empty: no check)

    @property
    def net(self) -> FusionNet:
        """The first member (whose configuration every member shares)."""
        return self.members[0]

    @property
    def identity(self) -> ModelIdentity:
        return self.card.identity

    @property
    def selected_features(self) -> list[str]:
        return list(self.selection.names)

    @property
    def class_thresholds(self) -> dict[str, float]:
        """Per-class operating thresholds (Youden-optimal on the validation split)."""
        return dict(self.card.extra.get("class_thresholds", {}))

    @classmethod
    def load(cls, path: Path | None = None, device: str | None = None) -> FusionClassifier:
        """Weights from ``path`` (a directory with model_card.json), or the starter weights."""
        directory = Path(path) if path is not None else STARTER_DIR / "classifier"
        card = ModelCard.load(directory)
        selection_path = directory / SELECTION_FILE
        expected = card.extra.get("selection_sha256")
        if expected and sha256_file(selection_path) != expected:
            raise ValueError(f"{selection_path} does not match the sha256 in the model card")
        selection = FeatureSelection.load(selection_path)
        payload = torch.load(directory / card.weights_file, map_location="cpu", weights_only=True)
        nets = []
        for member in payload.get("members", [payload]):
            net = FusionNet(ClassifierConfig.from_dict(member["config"]))
            net.load_state_dict({key: value.float() for key, value in member["state"].items()})
            nets.append(net.float())
        gates = payload.get("gates", [payload["gate"]] if "gate" in payload else [])
        return cls(nets, selection, card, str(torch_device(device)), [FeatureGate.from_payload(g) for g in gates])

    def save(self, directory: Path, card: ModelCard) -> Path:
        """Write weights (half precision), feature selection and card into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        members = [{"config": net.config.as_dict(),
                    "state": {k: v.detach().cpu().half() for k, v in net.state_dict().items()}}
                   for net in self.members]
        payload: dict = members[0] if len(members) == 1 else {"members": members}
        if self.gates:
            payload["gates"] = [gate.as_payload() for gate in self.gates]
        torch.save(payload, directory / WEIGHTS_FILE)
        self.selection.save(directory / SELECTION_FILE)
        card.weights_file = WEIGHTS_FILE
        card.extra["selection_sha256"] = sha256_file(directory / SELECTION_FILE)
        card.extra["selected_features"] = self.selected_features
        self.card = card
        return card.save(directory)

    def _inputs(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        metadata: Sequence[PatientMetadata],
        radiomics: Sequence[dict[str, float] | None],
    ) -> tuple[torch.Tensor, ...]:
        n = len(images)
        if not (len(masks) == len(metadata) == len(radiomics) == n):
            raise ValueError(
                f"images ({n}), masks ({len(masks)}), metadata ({len(metadata)}) and radiomics "
                f"({len(radiomics)}) must be equally many"
            )
        config = self.net.config
        for image, mask in zip(images, masks):
            if mask is not None and np.shape(mask) != np.shape(image)[:2]:
                raise ValueError(f"mask shape {np.shape(mask)} does not match image shape {np.shape(image)[:2]}")
        pairs = [prepare_pair(image, mask, config.image_size, config.colour_constancy, config.crop_margin)
                 for image, mask in zip(images, masks)]
        rgb = np.stack([pair[0] for pair in pairs])
        mask_array = np.stack([pair[1] for pair in pairs])
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        return (
            to(rgb).permute(0, 3, 1, 2).float() / 255.0,
            to(mask_array).unsqueeze(1).float(),
            to(np.stack([encode_metadata(m) for m in metadata])),
            to(np.stack([radiomics_vector(self.selection, r) for r in radiomics])),
        )

    @staticmethod
    def _view_features(net: FusionNet, rgb: torch.Tensor, mask: torch.Tensor, views: int) -> list[torch.Tensor]:
        """A member's image-branch features of the first ``views`` of: the image, flipped left-right,
        flipped up-down, both."""
        flips = [(), (3,), (2,), (2, 3)][: max(1, views)]
        return [net.image(rgb.flip(dims) if dims else rgb, mask.flip(dims) if dims else mask) for dims in flips]

    @staticmethod
    def _fused(net: FusionNet, features: list[torch.Tensor], meta: torch.Tensor, rad: torch.Tensor) -> torch.Tensor:
        """A member's shipped head's calibrated probabilities, averaged over the views."""
        temperature = net.config.temperature
        return torch.stack([torch.softmax(net.head(f, meta, rad) / temperature, dim=1) for f in features]).mean(0)

    @staticmethod
    def _image_only(net: FusionNet, features: list[torch.Tensor], calibrated: bool = True) -> torch.Tensor:
        """A member's image-only head's probabilities, averaged over the views; ``calibrated``: by its
        ``image_temperature`` and then its ``malignancy_scaling``."""
        head = net.ablation_head("image")
        t = net.config.image_temperature if calibrated else 1.0
        empty = features[0].new_zeros((features[0].shape[0], 0))
        mean = torch.stack([torch.softmax(head(f, empty, empty) / t, dim=1) for f in features]).mean(0)
        return scale_malignancy(mean, net.config.malignancy_scaling) if calibrated else mean

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        metadata: Sequence[PatientMetadata],
        radiomics: Sequence[dict[str, float] | None],
    ) -> list[dict[str, float]]:
        """Probabilities keyed by CLASS_CODES for each image (RGB uint8, any size; mask bool at the
        image's size or None; radiomics: the full pyradiomics dict or None).

        With ``tta_views`` > 1 the probabilities are averaged over the image's flips; an image with
        every metadata field missing is answered by the ``no_metadata_head`` of the config."""
        if len(images) == 0:
            return []
        rgb, mask, meta, rad = self._inputs(images, masks, metadata, radiomics)
        views = max(1, self.net.config.tta_views)
        probabilities = torch.stack([
            self._shipped(net, self._view_features(net, rgb, mask, views), meta, rad, metadata) for net in self.members
        ]).mean(0)
        return [dict(zip(CLASS_CODES, map(float, row))) for row in probabilities.cpu()]

    def _shipped(self, net: FusionNet, views: list[torch.Tensor], meta: torch.Tensor, rad: torch.Tensor,
                 metadata: Sequence[PatientMetadata]) -> torch.Tensor:
        """A member's answer as configured: the fused head over the config's views, and the
        ``no_metadata_head`` for cases with every metadata field missing."""
        views = views[: max(1, self.net.config.tta_views)]
        probabilities = self._fused(net, views, meta, rad)
        if self.net.config.no_metadata_head == "image":
            missing = torch.from_numpy(np.array([metadata_missing(m) for m in metadata])).to(probabilities.device)
            if bool(missing.any()):
                probabilities = torch.where(missing[:, None], self._image_only(net, views), probabilities)
        return probabilities

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Each member's image-branch features (cases x F) of the classifier's view of each image, as
        that member's feature gate reads them (with the style statistics where it was fitted on them)."""
        rgb, mask, _, _ = self._inputs(images, masks, [PatientMetadata()] * len(images), [None] * len(images))
        styled = [gate.with_style for gate in self.gates] or [False] * len(self.members)
        return [(net.image.with_style if style else net.image)(rgb, mask).cpu().numpy()
                for net, style in zip(self.members, styled)]

    def atypicality(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> np.ndarray:
        """For each image, the largest over the members' feature gates of its distance / that gate's limit
        (above 1: refused); zeros when the model has no gates."""
        if not self.gates or len(images) == 0:
            return np.zeros(len(images))
        features = self.image_features(images, masks)
        return np.max([g.atypicality(f) for g, f in zip(self.gates, features)], axis=0)

    def atypical(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> list[str | None]:
        """For each image, why it does not look like dermoscopy to this model ("not analysable: ..."), or None:
        the largest atypicality over the members' gates decides."""
        return atypicality_problems(self.atypicality(images, masks))

    @torch.no_grad()
    def predict_variants(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        metadata: Sequence[PatientMetadata],
        radiomics: Sequence[dict[str, float] | None],
    ) -> dict[str, np.ndarray]:
        """Probability arrays (cases x classes), each the mean over the members: "fused" is what
        ``predict`` answers (the shipped configuration); FUSED_PLAIN the fused head on the image alone,
        FUSED_TTA over 4 flips (calibrated); each ablation head and IMAGE_TTA uncalibrated (they serve
        AUROCs)."""
        rgb, mask, meta, rad = self._inputs(images, masks, metadata, radiomics)
        each = []
        for net in self.members:
            views = self._view_features(net, rgb, mask, 4)
            out = {"fused": self._shipped(net, views, meta, rad, metadata),
                   FUSED_PLAIN: self._fused(net, views[:1], meta, rad),
                   FUSED_TTA: self._fused(net, views, meta, rad),
                   IMAGE_TTA: self._image_only(net, views, calibrated=False)}
            for name in ABLATION_VARIANTS:
                out[name] = torch.softmax(net.ablation_head(name)(views[0], meta, rad), dim=1)
            each.append(out)
        return {name: torch.stack([out[name] for out in each]).mean(0).cpu().numpy() for name in each[0]}
