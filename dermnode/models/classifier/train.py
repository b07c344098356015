"""Training of the fusion classifier, as in the seed paper: image branch first, then the fused model.

Stage 1 trains the image branch (RGB + mask) with an image-only head (optionally with mixup, MixStyle, an
extra malignant-vs-benign loss and an exponential moving average of the weights). Stage 2 trains, on frozen
image features, the three heads of the ablation (image, image+metadata, image+metadata+radiomics)
and the fused head, then fine-tunes the fused model end to end at a low learning rate. Class
imbalance: cross-entropy weighted by (1 / class frequency) ** 0.5. Every stage checkpoints into a
work directory and a restarted run resumes there. Each stage runs where the network is (CUDA when
:func:`dermnode.models.device.torch_device` finds it), augmentation included.
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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dermnode.contract import CLASS_CODES
from dermnode.models.checkpoints import load_checkpoint, save_checkpoint
from dermnode.models.classifier.calibration import MALIGNANT_COLUMNS
from dermnode.models.classifier.data import METADATA_FIELDS, ClassifierCache
from dermnode.models.classifier.net import (
    ABLATION_VARIANTS,
    ClassifierConfig,
    FusionHead,
    FusionNet,
)
from dermnode.models.classifier.style_mixing import beta_draws, style_mixing
from dermnode.models.dataset_index import source_weights
from dermnode.models.device import torch_device

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 24  # 12 -> 24: +0.02 (+0.04 without metadata) on the isic-8class left-out source, two seeds each
    # 24 -> 48: -0.02 to -0.07 there (both seeds), though higher on its own validation split
    finetune_epochs: int = 2
    head_epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    mask_dropout: float = 0.3  # share of training images whose mask channel is blanked
    radiomics_dropout: float = 0.15  # share of training cases whose radiomics are marked missing
    metadata_dropout: float = 0.3  # chance of hiding each metadata field (and of hiding all of them)
    mixup: float = 0.0  # stage 1: images (and their labels) mixed in pairs with a Beta(a, a) share; 0: off
    malignant_loss: float = 0.0  # stage 1: weight of a malignant-vs-benign loss on the summed class probabilities
    ema: float = 0.0  # stage 1 ends with an exponential moving average of its weights (this decay per step); 0: off
    mixstyle: float = 0.0  # stage 1: share of batches whose early feature styles are mixed (MixStyle); 0: off
    colour_jitter: float = 0.15  # training views: wider white-balance gains and saturation changes (see augment); 0: off;
    # 0 -> 0.15: +0.02 to +0.04 malignant AUROC (with and without metadata) on both left-out sources, two seeds each
    source_balance: float = 0.0  # stage 1: each epoch draws images with weights (their source's size) ** -this;
    # 1: every source the same share; 0: every image once (see dataset_index.source_weights);
    # 0 -> 1: -0.01 and -0.03 without metadata on the isic-8class left-out source (two seeds, model card)
    seed: int = 0


def class_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(CLASS_CODES)).astype(float)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def to_tensors(cache: ClassifierCache, index: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB 0..1 and mask 0/1 tensors of the cached images ``index`` at ``size`` px."""
    rgb = torch.from_numpy(cache.images[index]).permute(0, 3, 1, 2).float() / 255.0
    mask = torch.from_numpy(cache.masks[index]).unsqueeze(1).float()
    if rgb.shape[-1] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
        mask = (F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False) >= 0.5).float()
    return rgb, mask


def augment(rgb: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, mask_dropout: float,
            colour: float = 0.0):
    """What other cameras and hands do to an image: flips, right-angle rotations, a random crop
    resized back (scale), per-channel gains (white balance, 1 ± (0.1 + ``colour``)), saturation
    (1 ± 2 x ``colour``, when ``colour`` > 0), brightness, contrast, gamma, blur and a lower resolution;
    plus mask dropout. Runs where the tensors are; the random draws come from the CPU ``generator``,
    so a seed gives the same augmentations on every device."""
    n, _, size, _ = rgb.shape
    u = lambda *shape: torch.rand(*shape, generator=generator).to(rgb.device)  # noqa: E731
    flip = u(n) < 0.5
    rgb[flip], mask[flip] = rgb[flip].flip(-1), mask[flip].flip(-1)
    flip = u(n) < 0.5
    rgb[flip], mask[flip] = rgb[flip].flip(-2), mask[flip].flip(-2)
    k = int(u(1).item() * 4)
    rgb, mask = torch.rot90(rgb, k, (2, 3)), torch.rot90(mask, k, (2, 3))
    crop = int(size * (0.7 + 0.3 * u(1).item()))
    if crop < size:
        top, left = int(u(1).item() * (size - crop)), int(u(1).item() * (size - crop))
        rgb = F.interpolate(rgb[..., top : top + crop, left : left + crop], size=(size, size), mode="bilinear")
        mask = (F.interpolate(mask[..., top : top + crop, left : left + crop], size=(size, size)) >= 0.5).float()
    spread = 0.1 + colour
    rgb = rgb * (1 - spread + 2 * spread * u(n, 3, 1, 1))
    if colour > 0:
        grey = rgb.mean(dim=1, keepdim=True)
        rgb = grey + (rgb - grey) * (1 + 2 * colour * (2 * u(n, 1, 1, 1) - 1))
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.75 + 0.5 * u(n, 1, 1, 1)
    brightness = 0.8 + 0.4 * u(n, 1, 1, 1)
    rgb = ((rgb - mean) * contrast + mean * brightness).clamp(0, 1)
    rgb = rgb ** torch.exp((u(n, 1, 1, 1) - 0.5) * 0.6)  # gamma 0.74..1.35
    if u(1).item() < 0.3:
        sigma = 0.4 + 0.8 * u(1).item()
        kernel = torch.exp(-torch.arange(-2, 3, dtype=torch.float32) ** 2 / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).view(1, 1, 1, 5).repeat(3, 1, 1, 1).to(rgb.device)
        rgb = _blur(rgb, kernel)
    if u(1).item() < 0.3:
        low = int(size * (0.4 + 0.4 * u(1).item()))
        rgb = F.interpolate(F.interpolate(rgb, size=(low, low), mode="area"), size=(size, size), mode="bilinear")
    mask = mask * (u(n, 1, 1, 1) >= mask_dropout).float()
    return rgb.clamp(0, 1), mask


def _blur(rgb: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of N x 3 x S x S with a 3 x 1 x 1 x K kernel (edges replicated)."""
    pad = kernel.shape[-1] // 2
    rgb = F.conv2d(F.pad(rgb, (pad, pad, 0, 0), mode="replicate"), kernel, groups=3)
    return F.conv2d(F.pad(rgb, (0, 0, pad, pad), mode="replicate"), kernel.transpose(2, 3), groups=3)


#: Index ranges of the metadata vector's fields (value entries then their "missing" flag).
_FIELDS = {"age": (slice(0, 1), 1), "sex": (slice(2, 4), 4), "site": (slice(5, len(METADATA_FIELDS) - 1), len(METADATA_FIELDS) - 1)}


def drop_metadata(metadata: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Hide metadata at random, as a hospital's DICOM does: all fields for ``share`` of the cases,
    and each field on its own for ``share`` of the others (values zeroed, missing flag set)."""
    if share <= 0:
        return metadata
    metadata = metadata.clone()
    everything = torch.rand(len(metadata), generator=generator) < share
    for values, flag in _FIELDS.values():
        hide = everything | (torch.rand(len(metadata), generator=generator) < share)
        metadata[hide, values] = 0.0
        metadata[hide, flag] = 1.0
    return metadata


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` (default: the first 5 % of ``total_steps``) times a cosine decay
    to zero at ``total_steps`` (stepped once per batch)."""
    total_steps = max(1, total_steps)  # 0: a stage of no epochs (stage 1 may be skipped after pretraining)
    warmup = max(1, total_steps // 20 if warmup_steps is None else warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps)))
    )


@torch.no_grad()
def image_features(net: FusionNet, cache: ClassifierCache, batch_size: int = 128, views: int = 1, seed: int = 0,
                   with_style: bool = False):
    """Image-branch features of every cached image: ``views`` = 1 is the plain image; more views add
    augmented copies (used to train heads on frozen features without them memorising the training set).
    ``with_style``: followed by the early stages' style statistics (the input gate's features)."""
    net.eval()
    size, device = net.config.image_size, _device(net)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for view in range(views):
        chunks = []
        for start in range(0, len(cache.labels), batch_size):
            index = np.arange(start, min(start + batch_size, len(cache.labels)))
            rgb, mask = (t.to(device) for t in to_tensors(cache, index, size))
            if view:
                rgb, mask = augment(rgb, mask, generator, mask_dropout=0.0)
            chunks.append((net.image.with_style if with_style else net.image)(rgb, mask).cpu())
        out.append(torch.cat(chunks))
    return torch.stack(out)  # views x N x F, on the CPU


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def train_image_branch(
    net: FusionNet, train: ClassifierCache, settings: TrainSettings, work_dir: Path, progress: bool = True
) -> None:
    """Stage 1, checkpointing after every epoch into ``work_dir/stage1.pt`` (resumed when present)."""
    from tqdm import tqdm

    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = _device(net)
    params = list(net.image.parameters()) + list(net.image_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train.labels) / settings.batch_size)
    scheduler = cosine_schedule(optimizer, settings.epochs * steps_per_epoch)
    weights = class_weights(train.labels).to(device)
    checkpoint = work_dir / "stage1.pt"
    trained = nn.ModuleDict({"image": net.image, "image_head": net.image_head})  # what stage 1 trains and keeps
    ema = AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True) if settings.ema else None
    saved = nn.ModuleDict({"trained": trained, "ema": ema}) if ema is not None else trained
    start_epoch, _ = load_checkpoint(checkpoint, saved, optimizer, generator, scheduler, map_location=device)
    labels = torch.from_numpy(train.labels)
    draw = torch.from_numpy(source_weights(train.sources, settings.source_balance))
    with style_mixing(net.image.style_stages(), settings.mixstyle, generator):
        for epoch in range(start_epoch, settings.epochs):
            net.train()
            order = (torch.multinomial(draw, len(labels), replacement=True, generator=generator) if settings.source_balance
                     else torch.randperm(len(labels), generator=generator)).numpy()
            total, seen = 0.0, 0
            description = f"stage 1 epoch {epoch + 1}/{settings.epochs}"
            bar = tqdm(range(steps_per_epoch), desc=description, disable=not progress)
            for step in bar:
                index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
                rgb, mask = (t.to(device) for t in to_tensors(train, index, net.config.image_size))
                rgb, mask = augment(rgb, mask, generator, settings.mask_dropout, settings.colour_jitter)
                targets = F.one_hot(labels[index], len(CLASS_CODES)).float().to(device)
                if settings.mixup > 0:
                    rgb, mask, targets = mix_pairs(rgb, mask, targets, settings.mixup, generator)
                loss = stage1_loss(net.image_head(net.image(rgb, mask)), targets, weights, settings.malignant_loss)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(trained)
                total, seen = total + loss.item() * len(index), seen + len(index)
                bar.set_postfix(loss=f"{total / seen:.3f}")
            log.info("stage 1 epoch %d loss %.4f", epoch + 1, total / seen)
            save_checkpoint(checkpoint, epoch + 1, saved, optimizer, generator, scheduler)
    if ema is not None:
        trained.load_state_dict(ema.module.state_dict())


def mix_pairs(rgb: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mixup (Zhang et al. 2018): each image blended with another of the batch, one Beta(a, a) share per batch."""
    share = float(beta_draws(alpha, generator))
    partner = torch.randperm(len(rgb), generator=generator).to(rgb.device)
    mix = lambda x: share * x + (1 - share) * x[partner]  # noqa: E731
    return mix(rgb), mix(mask), mix(targets)


def stage1_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, malignant_weight: float) -> torch.Tensor:
    """Class-weighted cross-entropy on (soft) targets with label smoothing 0.05, plus ``malignant_weight`` x the
    binary cross-entropy of P(malignant) = the summed probability of the malignant classes."""
    smoothed = targets * 0.95 + 0.05 / len(CLASS_CODES)
    log_p, malignant_class = F.log_softmax(logits, dim=1), MALIGNANT_COLUMNS.to(logits.device)
    loss = -(smoothed * log_p * weights).sum() / (targets * weights).sum()  # as F.cross_entropy(weight=...) normalises
    if malignant_weight > 0:
        malignant = targets[:, malignant_class].sum(dim=1)
        log_malignant = torch.logsumexp(log_p[:, malignant_class], dim=1)
        log_benign = torch.logsumexp(log_p[:, ~malignant_class], dim=1)
        loss = loss - malignant_weight * (malignant * log_malignant + (1 - malignant) * log_benign).mean()
    return loss


def train_head(
    head: FusionHead,
    features: torch.Tensor,
    metadata: torch.Tensor,
    radiomics: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
) -> float:
    """Fit a fusion head on frozen image features (views x N x F); returns the last epoch's loss."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-3)
    device = _device(head)
    weights = class_weights(labels.numpy()).to(device)
    views, n, _ = features.shape
    steps = math.ceil(n / 128)
    scheduler = cosine_schedule(optimizer, settings.head_epochs * steps)
    head.train()
    for _ in range(settings.head_epochs):
        order, total = torch.randperm(n, generator=generator), 0.0
        for step in range(steps):
            index = order[step * 128 : (step + 1) * 128]
            view = torch.randint(views, (len(index),), generator=generator)
            rad = _drop_radiomics(radiomics[index], settings.radiomics_dropout, generator)
            meta = drop_metadata(metadata[index], settings.metadata_dropout, generator)
            logits = head(features[view, index].to(device), meta.to(device), rad.to(device))
            loss = F.cross_entropy(logits, labels[index].to(device), weight=weights, label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
    head.eval()
    return total / n


def _drop_radiomics(radiomics: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Mark a random share of cases as having no radiomics (features zero, flag one)."""
    drop = torch.rand(len(radiomics), generator=generator) < share
    if not drop.any():
        return radiomics
    radiomics = radiomics.clone()
    radiomics[drop, :-1] = 0.0
    radiomics[drop, -1] = 1.0
    return radiomics


def finetune_fused(
    net: FusionNet,
    train: ClassifierCache,
    radiomics: torch.Tensor,
    settings: TrainSettings,
    progress: bool = True,
) -> None:
    """Stage 2b: the fused model end to end, low learning rate, BatchNorm statistics kept frozen."""
    from tqdm import tqdm

    if settings.finetune_epochs <= 0:
        return
    generator = torch.Generator().manual_seed(settings.seed + 1)
    params = list(net.image.parameters()) + list(net.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr / 10, weight_decay=settings.weight_decay)
    steps = math.ceil(len(train.labels) / settings.batch_size)
    scheduler = cosine_schedule(optimizer, settings.finetune_epochs * steps)
    device = _device(net)
    weights = class_weights(train.labels).to(device)
    labels, metadata = torch.from_numpy(train.labels), torch.from_numpy(train.metadata)
    for epoch in range(settings.finetune_epochs):
        net.train()
        for module in net.image.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        order = torch.randperm(len(labels), generator=generator).numpy()
        for step in tqdm(range(steps), desc=f"fine-tune epoch {epoch + 1}", disable=not progress):
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            rgb, mask = (t.to(device) for t in to_tensors(train, index, net.config.image_size))
            rgb, mask = augment(rgb, mask, generator, settings.mask_dropout, settings.colour_jitter)
            rad = _drop_radiomics(radiomics[index], settings.radiomics_dropout, generator)
            meta = drop_metadata(metadata[index], settings.metadata_dropout, generator)
            logits = net(rgb, mask, meta.to(device), rad.to(device))
            loss = F.cross_entropy(logits, labels[index].to(device), weight=weights, label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    net.eval()


@torch.no_grad()
def head_probabilities(head: FusionHead, features: torch.Tensor, metadata: torch.Tensor, radiomics: torch.Tensor):
    head.eval()
    device = _device(head)
    return torch.softmax(head(features.to(device), metadata.to(device), radiomics.to(device)), dim=1).cpu().numpy()


def train_all_heads(
    net: FusionNet,
    features: torch.Tensor,
    metadata: torch.Tensor,
    radiomics: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
) -> None:
    """The ablation heads and the fused head, on frozen features (the fused head starts from the
    ablation head with its inputs and is then fine-tuned end to end by :func:`finetune_fused`)."""
    for name in ABLATION_VARIANTS:
        loss = train_head(net.ablation_head(name), features, metadata, radiomics, labels, settings)
        log.info("ablation head %s: final loss %.4f", name, loss)
    start = "image+metadata+radiomics" if net.config.head_radiomics else "image+metadata"
    net.head.load_state_dict(net.ablation_head(start).state_dict())


def new_network(config: ClassifierConfig, device: str | None = None) -> FusionNet:
    """A fresh network of ``config``, on ``device`` (default: CUDA when present, else the CPU)."""
    return FusionNet(config).to(torch_device(device))
