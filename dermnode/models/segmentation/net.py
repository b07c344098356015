"""The segmentation networks of the two profiles.

* ``paper``: torchvision Mask R-CNN (ResNet-50-FPN), two classes (background, lesion), 512x512 input,
  as in the seed paper. No COCO weights can be downloaded here, so it trains from scratch or from the
  project's own weights.
* ``cpu``: a small U-Net (plain torch.nn) at 192x192 input with a stride-2 stem (the U-Net works at
  96x96). Measured on this 2-core CPU (training step, seconds per image, shared with other jobs):
  Mask R-CNN ResNet-18-FPN at 256 1.16 s, Mask R-CNN MobileNetV3-FPN at 256 2.85 s, a full-resolution
  U-Net at 192 0.2-0.45 s, this U-Net 0.02-0.04 s (one thread). Only the last gets through enough
  epochs from scratch in about an hour of CPU training, so it is the ``cpu`` profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Profile:
    name: str
    architecture: str
    input_size: int
    batch_size: int
    epochs: int
    learning_rate: float
    widths: tuple[int, ...] = ()
    stem_stride: int = 1


#: The measurements that chose the ``cpu`` architecture (training step, seconds per image, on the
#: project's 2-core CPU while other training jobs shared it; recorded in the model card).
ARCHITECTURE_CHOICE = {
    "maskrcnn_resnet18_fpn_256_2threads": 1.16,
    "maskrcnn_mobilenet_v3_fpn_256_2threads": 2.85,
    "unet_full_resolution_192_1thread": 0.20,
    "unet_stride2_stem_192_1thread": 0.03,
    "decision": "Mask R-CNN from scratch would get 2-3 epochs in an hour of this CPU; the U-Net with a "
                "stride-2 stem gets about 40, so it is the cpu profile (paper profile: Mask R-CNN R50-FPN).",
}

PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", "unet", 192, 16, 40, 2e-3, (16, 32, 64, 128, 256), stem_stride=2),
    "paper": Profile("paper", "maskrcnn_resnet50_fpn", 512, 4, 40, 0.01),
}


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A U-Net: ``widths`` channels per level, max-pool down, transposed-conv up, one logit out.

    With ``stem_stride`` 2 a strided convolution first halves the resolution, the U-Net works at half
    size and its logits are upsampled bilinearly: a quarter of the compute for smooth lesion outlines.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 256), stem_stride: int = 1):
        super().__init__()
        self.stem_stride = stem_stride
        self.stem = nn.Identity()
        channels = 3
        if stem_stride > 1:
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 3, stride=stem_stride, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
            )
            channels = widths[0]
        self.encoder = nn.ModuleList()
        for width in widths:
            self.encoder.append(_DoubleConv(channels, width))
            channels = width
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoder.append(_DoubleConv(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.stem(x)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        logits = self.head(x)
        if self.stem_stride > 1:
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def build_network(profile: Profile) -> nn.Module:
    if profile.architecture == "unet":
        return UNet(profile.widths, profile.stem_stride)
    if profile.architecture == "maskrcnn_resnet50_fpn":
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        return maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=2,  # from scratch every backbone layer trains, with ordinary BatchNorm
            min_size=profile.input_size,
            max_size=profile.input_size,
        )
    raise ValueError(f"unknown architecture {profile.architecture!r}")


#: Per-channel normalisation of RGB in 0..1 for the U-Net (Mask R-CNN normalises internally).
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..1 float NCHW RGB to the U-Net's normalised input."""
    if batch.dtype == torch.uint8:
        batch = batch.float() / 255.0
    mean = torch.tensor(RGB_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std
