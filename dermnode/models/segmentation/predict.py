"""Lesion segmentation: load a trained segmenter and predict one lesion mask per image.

``LesionSegmenter.predict`` takes RGB images of any size, resizes them to the network's input
(aspect ratio not kept, as in training), and returns the lesion mask at the source image's size:
the best instance (for the U-Net the connected component carrying the most lesion probability,
weighted towards the image centre; for Mask R-CNN the highest-scoring instance), holes filled,
with a confidence. When nothing passes the threshold the mask is None: the node then reports
"no lesion segmented" instead of inventing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from dermnode.contract import ModelIdentity
from dermnode.models.device import torch_device
from dermnode.models.images import as_rgb, resize_gray, resize_rgb
from dermnode.models.model_card import STARTER_DIR, ModelCard
from dermnode.models.segmentation.net import Profile, build_network, normalise

STARTER = STARTER_DIR / "segmentation"
#: A component smaller than this fraction of the image is not reported as a lesion.
MIN_AREA_FRACTION = 0.001
#: Spread (in image widths) of the centre weighting that picks the lesion among components.
CENTRE_SIGMA = 0.3


@dataclass
class SegmentationResult:
    mask: np.ndarray | None  # bool, at the source image's rows x cols; None = no lesion found
    confidence: float  # 0..1: mean lesion probability (U-Net) or instance score (Mask R-CNN) of the
    # returned mask; when no lesion is found, the highest lesion probability/score seen


def best_component(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray | None, float]:
    """The best connected component of ``prob >= threshold``, holes filled, and its mean probability;
    (None, max probability) when no component is big enough.

    "Best" is the largest summed probability, weighted by closeness to the image centre (a Gaussian
    of the centre-of-mass distance, in image widths, with sigma CENTRE_SIGMA): dermoscopy centres
    the lesion, while rulers, stickers and vignette corners sit at the edges.
    """
    labels, n = ndimage.label(prob >= threshold)
    peak = float(prob.max(initial=0.0))
    if n == 0:
        return None, peak
    index = np.arange(1, n + 1)
    mass = ndimage.sum_labels(prob, labels, index=index)
    centres = np.array(ndimage.center_of_mass(prob, labels, index=index)).reshape(n, 2)
    offset = (centres + 0.5) / np.array(prob.shape) - 0.5
    score = mass * np.exp(-np.sum(offset**2, axis=1) / CENTRE_SIGMA**2)
    mask = labels == (int(np.argmax(score)) + 1)
    if mask.sum() < MIN_AREA_FRACTION * prob.size:
        return None, peak
    mask = ndimage.binary_fill_holes(mask)
    return mask, float(prob[mask].mean())


class LesionSegmenter:
    """A trained segmenter (U-Net ``cpu`` profile or Mask R-CNN ``paper`` profile) and its card."""

    def __init__(self, model: torch.nn.Module, profile: Profile, card: ModelCard, device: torch.device,
                 batch_size: int = 8):
        self.model = model.eval()
        self.profile = profile
        self.card = card
        self.device = device
        self.batch_size = batch_size
        self.identity: ModelIdentity = card.identity

    @classmethod
    def load(cls, path: Path | None = None, device: str | None = None) -> LesionSegmenter:
        """Load weights and model card from ``path`` (None = the starter weights in the package)."""
        directory = Path(path) if path is not None else STARTER
        card = ModelCard.load(directory)
        profile = Profile(**{**card.extra["profile"], "widths": tuple(card.extra["profile"]["widths"])})
        dev = torch_device(device)
        model = build_network(profile)
        state = torch.load(directory / card.weights_file, map_location="cpu", weights_only=True)
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
        return cls(model.to(dev), profile, card, dev)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[SegmentationResult]:
        """One result per RGB uint8 image (rows x cols x 3, any size)."""
        images = [as_rgb(image) for image in images]
        results: list[SegmentationResult] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            size = (self.profile.input_size, self.profile.input_size)
            batch = torch.from_numpy(np.stack([resize_rgb(image, size) for image in chunk])).permute(0, 3, 1, 2)
            batch = batch.to(self.device)
            if self.profile.architecture == "unet":
                probs = torch.sigmoid(self.model(normalise(batch)))[:, 0].float().cpu().numpy()
                for image, prob in zip(chunk, probs):
                    mask, confidence = best_component(resize_gray(prob, image.shape[:2]))
                    results.append(SegmentationResult(mask, confidence))
            else:
                for image, output in zip(chunk, self.model(list(batch.float() / 255.0))):
                    results.append(self._best_instance(image, output))
        return results

    @staticmethod
    def _best_instance(image: np.ndarray, output: dict[str, torch.Tensor], threshold: float = 0.5) -> SegmentationResult:
        scores = output["scores"].cpu().numpy()
        if len(scores) == 0 or scores.max() < threshold:
            return SegmentationResult(None, float(scores.max(initial=0.0)))
        best = int(np.argmax(scores))
        prob = resize_gray(output["masks"][best, 0].float().cpu().numpy(), image.shape[:2])
        mask, _ = best_component(prob)
        return SegmentationResult(mask, float(scores[best]) if mask is not None else 0.0)
