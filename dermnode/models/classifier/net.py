"""The fusion classifier's network: image branch (RGB + lesion mask), quantitative branch, late fusion.

Profiles: ``paper`` = torchvision ResNet-50 on 224 px (GPU hosts); ``cpu`` = a small ResNet with
BasicBlocks on 128 px. Both take 4 input channels (RGB + the 128x128 lesion mask resized to the
image's input size). The quantitative branch early-fuses patient metadata (with missing flags) and
the selected radiomic features (with a missing flag); late fusion is a 1024-wide layer into 8 logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dermnode.contract import CLASS_CODES
from dermnode.models.classifier.data import METADATA_FIELDS

FUSION_WIDTH = 1024
QUANT_WIDTH = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: the preprocessing fields a training run may set apart from its profile (to measure each choice)
PREPROCESSING_CHOICES = ("colour_constancy", "crop_margin", "image_size")
#: the cpu profile's architecture fields a training run may set apart from it (the paper profile is ResNet-50)
ARCHITECTURE_CHOICES = ("blocks",)


@dataclass(frozen=True)
class ClassifierConfig:
    profile: str = "cpu"
    image_size: int = 128
    mask_size: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # (2, 2, 2, 2): -0.01 and -0.04 without metadata on the isic-8class
    # left-out source (two seeds, model card), so the cpu profile stays at one block per stage
    n_radiomics: int = 9
    dropout: float = 0.3
    colour_constancy: bool = False  # Shades of Gray before anything else (see classifier.data.prepare_pair)
    crop_margin: float = 0.0  # > 0: square crop around the lesion mask with this margin; 0: whole image
    temperature: float = 1.0  # the fused logits are divided by it (fitted on validation)
    head_radiomics: bool = True  # the shipped (fused) head sees the radiomic features; the ablation heads always may
    tta_views: int = 1  # 1: the image as it is; 2 or 4: probabilities averaged over its flips (test-time augmentation)
    no_metadata_head: str = "fused"  # the head that answers when every metadata field is missing: "fused" or "image"
    image_temperature: float = 1.0  # the image-only head's logits are divided by it (fitted on validation up to 0.6.0; 1 since)
    # the image-only head's P(malignant) -> sigmoid(slope * logit + offset), rank-keeping (classifier.calibration)
    malignancy_scaling: tuple[float, float] = (1.0, 0.0)

    @classmethod
    def for_profile(cls, profile: str, n_radiomics: int = 9, **choices: Any) -> ClassifierConfig:
        """The profile's configuration; ``choices`` may override the :data:`PREPROCESSING_CHOICES`
        (``colour_constancy``, ``crop_margin``, ``image_size``) and, on the cpu profile, the
        :data:`ARCHITECTURE_CHOICES` (``blocks``: BasicBlocks per stage)."""
        # Radiomic features depend on each camera's resolution and did not transfer to a left-out source
        # (model card, leave_one_source_out): they stay measured and reported, but out of the fused head.
        unknown = set(choices) - set(PREPROCESSING_CHOICES) - set(ARCHITECTURE_CHOICES)
        if unknown:
            raise ValueError(f"not a preprocessing or architecture choice: {', '.join(sorted(unknown))}")
        if "blocks" in choices and profile == "paper":
            raise ValueError("the paper profile is a ResNet-50: its blocks are not a choice")
        if "blocks" in choices and len(choices["blocks"]) != len(cls.widths):
            raise ValueError(f"blocks needs one count per stage ({len(cls.widths)}), not {choices['blocks']!r}")
        robust = {"colour_constancy": True, "crop_margin": 0.2, "head_radiomics": False, **choices}
        if profile == "cpu":
            return cls(profile="cpu", n_radiomics=n_radiomics, **robust)
        if profile == "paper":
            return cls(**{"profile": "paper", "image_size": 224, "widths": (), "blocks": (), "n_radiomics": n_radiomics,
                          **robust})
        raise ValueError(f"unknown classifier profile {profile!r}: use 'cpu' or 'paper'")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ClassifierConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A narrow ResNet of BasicBlocks for 4-channel 128 px input; outputs a pooled feature vector."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], in_channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, c_in, self.stage_ends = [], widths[0], []
        for stage, (width, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(BasicBlock(c_in, width, 2 if (b == 0 and stage > 0) else 1))
                c_in = width
            self.stage_ends.append(len(layers) - 1)
        self.layers = nn.Sequential(*layers)
        self.out_features = c_in

    def stages(self) -> list[nn.Module]:
        """The last block of each stage (whose output is the stage's)."""
        return [self.layers[i] for i in self.stage_ends]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


def _resnet50_4ch() -> tuple[nn.Module, int]:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.conv1 = nn.Conv2d(4, 64, 7, 2, 3, bias=False)
    out = net.fc.in_features
    net.fc = nn.Identity()
    return net, out


class ImageBranch(nn.Module):
    """Backbone on RGB + mask, normalising RGB inside so callers pass 0..1 tensors."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if config.profile == "paper":
            self.backbone, self.out_features = _resnet50_4ch()
        else:
            self.backbone = SmallResNet(config.widths, config.blocks)
            self.out_features = self.backbone.out_features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def style_stages(self) -> list[nn.Module]:
        """The backbone's first two stages, whose outputs carry the image's style (see :mod:`.style_mixing`)."""
        if isinstance(self.backbone, SmallResNet):
            return self.backbone.stages()[:2]
        return [self.backbone.layer1, self.backbone.layer2]

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``rgb`` N x 3 x S x S in 0..1, ``mask`` N x 1 x S x S in {0, 1}."""
        x = torch.cat([(rgb - self.mean) / self.std, mask * 2.0 - 1.0], dim=1)
        return self.backbone(x)

    def with_style(self, rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled features followed by each style stage's channel means and standard deviations:
        what the image shows and how it looks (the input gate reads both)."""
        outputs: list[torch.Tensor] = []
        handles = [stage.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for stage in self.style_stages()]
        try:
            pooled = self(rgb, mask)
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat([pooled, *(torch.cat([o.mean(dim=(2, 3)), o.std(dim=(2, 3))], dim=1) for o in outputs)], dim=1)


class FusionHead(nn.Module):
    """Quantitative branch (early fusion of metadata and radiomics) + late fusion into 8 logits.

    ``n_metadata`` or ``n_radiomics`` may be 0: the ablation's image-only and image+metadata heads.
    The radiomics input carries one extra "missing" flag.
    """

    def __init__(self, image_features: int, n_metadata: int, n_radiomics: int, dropout: float) -> None:
        super().__init__()
        self.n_metadata, self.n_radiomics = n_metadata, n_radiomics
        n_quant = n_metadata + (n_radiomics + 1 if n_radiomics else 0)
        self.quant = nn.Sequential(nn.Linear(n_quant, QUANT_WIDTH), nn.ReLU()) if n_quant else None
        fused = image_features + (QUANT_WIDTH if n_quant else 0)
        self.fusion = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(fused, FUSION_WIDTH),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(FUSION_WIDTH, len(CLASS_CODES)),
        )

    def forward(self, features: torch.Tensor, metadata: torch.Tensor, radiomics: torch.Tensor) -> torch.Tensor:
        """``radiomics`` is N x (n_radiomics + 1): normalised features then the missing flag."""
        parts = []
        if self.n_metadata:
            parts.append(metadata)
        if self.n_radiomics:
            parts.append(radiomics)
        if parts:
            features = torch.cat([features, self.quant(torch.cat(parts, dim=1))], dim=1)
        return self.fusion(features)


#: The ablation's variants (Figure 7 of the seed paper), by the inputs their heads see.
ABLATION_VARIANTS: dict[str, tuple[bool, bool]] = {
    "image": (False, False),
    "image+metadata": (True, False),
    "image+metadata+radiomics": (True, True),
}


class FusionNet(nn.Module):
    """Image branch, a stage-1 image-only head, the fused head, and the ablation heads."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.image = ImageBranch(config)
        f = self.image.out_features
        n_meta = len(METADATA_FIELDS)
        self.image_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(f, len(CLASS_CODES)))
        self.head = FusionHead(f, n_meta, config.n_radiomics if config.head_radiomics else 0, config.dropout)
        self.ablation = nn.ModuleDict(
            {
                name.replace("+", "_"): FusionHead(
                    f, n_meta if use_meta else 0, config.n_radiomics if use_rad else 0, config.dropout
                )
                for name, (use_meta, use_rad) in ABLATION_VARIANTS.items()
            }
        )

    def forward(
        self, rgb: torch.Tensor, mask: torch.Tensor, metadata: torch.Tensor, radiomics: torch.Tensor
    ) -> torch.Tensor:
        return self.head(self.image(rgb, mask), metadata, radiomics)

    def ablation_head(self, variant: str) -> FusionHead:
        return self.ablation[variant.replace("+", "_")]
