"""The BCC-versus-seborrheic-keratosis model the node runs: load weights, predict P(BCC), attention map.

See :mod:`dermnode.models.bcc_sk.net` for the network (open_clip CLIP + CoOp + linear probe) and
:mod:`dermnode.models.bcc_sk.train` for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dermnode.contract import BCC_SK_MODEL, ModelIdentity
from dermnode.models.bcc_sk.net import (
    CPU_CLIP_CONFIG,
    PAPER_MODEL,
    BccSkNet,
    build_clip,
)
from dermnode.models.classifier.data import square_image
from dermnode.models.device import torch_device
from dermnode.models.images import as_rgb
from dermnode.models.model_card import STARTER_DIR, ModelCard

NAME = BCC_SK_MODEL  # as the model card and ModelIdentity carry it
WEIGHTS_FILE = "bcc_sk.pt"
#: The data's diagnoses on each side: BKL (benign keratosis) stands in for seborrheic keratosis.
POSITIVE, NEGATIVE = "BCC", "BKL"


class BccSkModel:
    """P(BCC) against seborrheic keratosis for dermoscopic images, with a Grad-CAM attention map."""

    def __init__(self, net: BccSkNet, card: ModelCard, device: str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.card = card
        self.device = device

    @property
    def identity(self) -> ModelIdentity:
        return self.card.identity

    @classmethod
    def load(cls, path: Path | None = None, device: str | None = None) -> BccSkModel:
        """Weights from ``path`` (a directory with model_card.json), or the starter weights."""
        directory = Path(path) if path is not None else STARTER_DIR / "bcc_sk"
        card = ModelCard.load(directory)
        payload = torch.load(directory / card.weights_file, map_location="cpu", weights_only=True)
        profile = payload["profile"]
        net = BccSkNet(build_clip(profile, pretrained=profile == "paper"), n_ctx=int(payload["n_ctx"]))
        state = {key: value.float() for key, value in payload["state"].items()}
        net.load_state_dict(state, strict=profile == "cpu")
        return cls(net.float(), card, str(torch_device(device)))

    def save(self, directory: Path, card: ModelCard) -> Path:
        """Write the weights (half precision; for ``paper`` only the context vectors and the probe,
        since the encoders are the pretrained file's) and the card."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        profile = card.profile
        state = self.net.state_dict()
        if profile == "paper":
            state = {k: v for k, v in state.items() if k == "ctx" or k.startswith("probe.")}
        payload = {
            "profile": profile,
            "n_ctx": self.net.n_ctx,
            "clip_config": CPU_CLIP_CONFIG if profile == "cpu" else PAPER_MODEL,
            "state": {k: v.detach().cpu().half() for k, v in state.items()},
        }
        card.weights_file = WEIGHTS_FILE
        torch.save(payload, directory / WEIGHTS_FILE)
        self.card = card
        return card.save(directory)

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        size = self.net.image_size
        stacked = np.stack([square_image(image, size) for image in images])
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div(255.0).to(self.device)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> list[float]:
        """P(BCC) for each RGB uint8 image (any size)."""
        if len(images) == 0:
            return []
        return [float(p) for p in self.net.bcc_probability(self._batch(images)).cpu()]

    def attention_map(self, image: np.ndarray) -> np.ndarray:
        """Grad-CAM of P(BCC): float32 rows x cols in [0, 1] at the image's own size."""
        rows, cols = as_rgb(image).shape[:2]
        cam = self.net.grad_cam(self._batch([image]))
        cam = F.interpolate(cam[None, None], size=(rows, cols), mode="bilinear", align_corners=False)[0, 0]
        return cam.clamp(0, 1).cpu().numpy().astype(np.float32)
