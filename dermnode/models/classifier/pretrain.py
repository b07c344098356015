"""Self-supervised pretraining of the classifier's image branch (SimCLR, Chen et al. 2020).

No pretrained weights can be downloaded, so the image branch may start from weights of our own instead
of at random: two views of each image (a random resized crop at any angle, then the training augmentations
of :func:`.train.augment` with stronger colour changes) are pulled together, and away from the other images
of the batch, by the NT-Xent loss on a small projection head. Labels are never read. The run checkpoints
after every epoch into its work directory and resumes there; what it keeps is the image branch's weights,
written with a model card (:func:`save_pretrained`) that `train classifier --init-from` reads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dermnode.models.checkpoints import load_checkpoint, save_checkpoint
from dermnode.models.classifier.data import ClassifierCache
from dermnode.models.classifier.fit import cached_images, data_summary, predicted_masks, split_cache, training_records
from dermnode.models.classifier.net import ARCHITECTURE_CHOICES, ClassifierConfig, ImageBranch
from dermnode.models.classifier.train import augment, cosine_schedule, to_tensors
from dermnode.models.dataset_index import split_by_lesion
from dermnode.models.device import torch_device
from dermnode.models.model_card import ModelCard

log = logging.getLogger(__name__)
NAME = "dermnode-classifier-image-pretraining"
VERSION = "0.1.0"
WEIGHTS_FILE = "image_branch.pt"
#: what the fine-tuned network must share with the pretrained branch for its weights to fit the same kind of
#: input; the image size may differ (the branch is convolutional and pools globally), so pretraining can run
#: at a smaller size than training, where each epoch costs less
MATCHING_FIELDS = ("profile", "widths", *ARCHITECTURE_CHOICES, "colour_constancy", "crop_margin")


@dataclass
class PretrainSettings:
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2  # of the NT-Xent loss
    colour_jitter: float = 0.3  # the views' colour changes (see augment): stronger than in supervised training
    min_scale: float = 0.35  # the random crop's side is this share of the image's side or more
    mask_dropout: float = 0.3
    seed: int = 0


class TooFewImages(ValueError):
    """Fewer images than two batches: no epoch would have a full batch to learn from."""


def check_enough_images(count: int, settings: PretrainSettings) -> None:
    """Raise `TooFewImages` unless ``count`` images give two full batches or more."""
    if count < 2 * settings.batch_size:
        raise TooFewImages(f"{count} images are too few for batches of {settings.batch_size} (need twice that)")


class ProjectionHead(nn.Sequential):
    """The MLP between the pooled features and the contrastive loss (dropped after pretraining)."""

    def __init__(self, features: int, width: int = 256, out: int = 128) -> None:
        super().__init__(nn.Linear(features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Linear(width, out))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """The normalised temperature-scaled cross-entropy of two views' projections (N x D each), and the
    share of images whose other view is the closest of the 2N - 1 others (how well the task is solved)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(z1)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    found = (similarity.argmax(dim=1) == partner).float().mean().item()
    return F.cross_entropy(similarity, partner), found


def random_resized_crops(rgb: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, min_scale: float):
    """Per image: a square crop of side ``min_scale``..1 of the image's at a random place and angle, resized
    back to the image's size (borders reflected)."""
    n = len(rgb)
    u = lambda: torch.rand(n, generator=generator)  # noqa: E731
    scale, angle = min_scale + (1 - min_scale) * u(), 2 * math.pi * u()
    shift_x, shift_y = (1 - scale) * (2 * u() - 1), (1 - scale) * (2 * u() - 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1).to(rgb.device)
    grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
    sample = lambda x, mode: F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)  # noqa: E731
    return sample(rgb, "bilinear"), sample(mask, "nearest")


def two_views(rgb: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, settings: PretrainSettings):
    """Two independently augmented views of a batch, each an (rgb, mask) pair."""
    return [augment(*random_resized_crops(rgb, mask, generator, settings.min_scale), generator,
                    settings.mask_dropout, settings.colour_jitter) for _ in range(2)]


def pretrain_image_branch(config: ClassifierConfig, images: ClassifierCache, settings: PretrainSettings,
                          work_dir: Path, progress: bool = True) -> tuple[ImageBranch, dict]:
    """SimCLR on ``images`` (their labels unread), checkpointing after every epoch into
    ``work_dir/pretrain.pt`` (resumed when present); returns the branch on the CPU and the last epoch's figures."""
    from tqdm import tqdm

    check_enough_images(len(images.labels), settings)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch_device()
    branch = ImageBranch(config).to(device)
    model = nn.ModuleDict({"image": branch, "projection": ProjectionHead(branch.out_features).to(device)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = len(images.labels) // settings.batch_size  # full batches only: every step has as many negatives
    scheduler = cosine_schedule(optimizer, settings.epochs * steps)
    checkpoint = Path(work_dir) / "pretrain.pt"
    start, figures = load_checkpoint(checkpoint, model, optimizer, generator, scheduler, map_location=device)
    figures = figures.get("figures", {})
    for epoch in range(start, settings.epochs):
        model.train()
        order = torch.randperm(len(images.labels), generator=generator).numpy()
        total, found = 0.0, 0.0
        bar = tqdm(range(steps), desc=f"pretraining epoch {epoch + 1}/{settings.epochs}", disable=not progress)
        for step in bar:
            index = np.sort(order[step * settings.batch_size : (step + 1) * settings.batch_size])
            rgb, mask = (t.to(device) for t in to_tensors(images, index, config.image_size))
            (rgb1, mask1), (rgb2, mask2) = two_views(rgb, mask, generator, settings)
            projections = model["projection"](branch(torch.cat([rgb1, rgb2]), torch.cat([mask1, mask2])))
            loss, share = nt_xent(*projections.chunk(2), settings.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, found = total + loss.item(), found + share
            bar.set_postfix(loss=f"{total / (step + 1):.3f}", found=f"{found / (step + 1):.2f}")
        figures = {"epochs": epoch + 1, "loss": total / steps, "partner_found": found / steps}
        log.info("pretraining epoch %d: loss %.4f, other view found for %.0f%% of images", epoch + 1,
                 figures["loss"], 100 * figures["partner_found"])
        save_checkpoint(checkpoint, epoch + 1, model, optimizer, generator, scheduler, figures=figures)
    return branch.cpu().eval(), figures


def save_pretrained(directory: Path, branch: ImageBranch, config: ClassifierConfig, card: ModelCard) -> Path:
    """Write the branch's weights with ``card`` (whose ``extra["config"]`` records ``config``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(branch.state_dict(), directory / WEIGHTS_FILE)
    card.extra["config"] = config.as_dict()
    return card.save(directory)


def load_pretrained(directory: Path, config: ClassifierConfig) -> tuple[dict, ModelCard]:
    """The pretrained branch's weights (checked against its card) and card, if they fit ``config``'s
    image branch; a ValueError naming the difference otherwise."""
    card = ModelCard.load(directory)
    if card.name != NAME:
        raise ValueError(f"{directory} holds {card.name}, not a pretrained image branch ({NAME})")
    trained = ClassifierConfig.from_dict(card.extra["config"])
    differ = [f"{name} {getattr(trained, name)!r} (not {getattr(config, name)!r})" for name in MATCHING_FIELDS
              if getattr(trained, name) != getattr(config, name)]
    if differ:
        raise ValueError(f"{directory}: the pretrained image branch has {', '.join(differ)}")
    return torch.load(Path(directory) / card.weights_file, map_location="cpu", weights_only=True), card


def pretrain_classifier(data_dir: Path, out_dir: Path, profile: str, work_dir: Path, settings: PretrainSettings,
                        leave_out: str | None = None, choices: dict | None = None) -> dict:
    """Pretrain the image branch on the training side of `train classifier`'s lesion split (the same
    images, prepared the same way, without ``leave_out``) and write it to ``out_dir``; returns the last
    epoch's figures. A classifier trained in the same work directory reuses the prepared images.
    `TooFewImages` when the training side cannot fill two batches."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config = ClassifierConfig.for_profile(profile, **(choices or {}))
    records = training_records(Path(data_dir), leave_out)
    split = split_by_lesion(records=records)
    check_enough_images(len(split.train_ids), settings)  # before any image is read
    cache = cached_images(records, config, "expert", work_dir, predicted_masks(records, work_dir))
    train, _ = split_cache(cache, split)
    branch, figures = pretrain_image_branch(config, train, settings, work_dir)
    left_out = f"; source {leave_out!r} and its lesions left out" if leave_out else ""
    card = ModelCard(
        name=NAME,
        version=VERSION,
        architecture=(f"the fusion classifier's image branch (profile {profile}, RGB + lesion mask at "
                      f"{config.image_size} px), pretrained by SimCLR: NT-Xent (temperature {settings.temperature:g}) "
                      "between two augmented views of each image through a 256-128 projection head, which is dropped"),
        profile=profile,
        weights_file=WEIGHTS_FILE,
        training_data=(f"{len(train.labels)} images of the training side of the classifier's lesion split, labels "
                       f"unread ({data_summary(records)} images in all{left_out})"),
        split=split.describe(),
        split_ids=split.card_ids(),
        metrics={"last_epoch": figures},
        extra={"settings": settings.__dict__, "left_out_source": leave_out},
    )
    save_pretrained(out_dir, branch, config, card)
    return figures
