"""Training of the lesion segmenter: cached resized tensors, augmentation, checkpoints and resume.

``train_segmentation`` is what ``dermnode train segmentation`` runs. The train/validation split is the
project's seeded split by lesion (``split_by_lesion``, the split every model of the folder shares), written beside the weights; only records
with an expert mask are used. After every epoch the output folder holds a usable model (half-precision
weights plus model card) and a full checkpoint for ``--resume``; at the end the validation split is
evaluated at the source images' size and the metrics go into the model card.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dermnode.contract import SEGMENTATION_MODEL
from dermnode.models.checkpoints import load_checkpoint, save_checkpoint
from dermnode.models.dataset_index import (
    ImageRecord,
    Split,
    load_records,
    source_weights,
    split_by_lesion,
)
from dermnode.models.device import torch_device
from dermnode.models.images import load_mask, load_rgb, resize_mask, resize_rgb
from dermnode.models.model_card import ModelCard
from dermnode.models.segmentation.net import (
    ARCHITECTURE_CHOICE,
    PROFILES,
    Profile,
    build_network,
    normalise,
)

WEIGHTS_FILE = "segmentation.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def load_tensors(records: list[ImageRecord], size: int, cache: Path | None = None) -> dict[str, torch.Tensor | list]:
    """Images (N,3,S,S) and masks (N,1,S,S) as uint8, resized once and cached in ``cache``."""
    ids = [r.image_id for r in records]
    if cache is not None and cache.is_file():
        stored = torch.load(cache, weights_only=False)
        if stored["ids"] == ids:
            return stored
    images = torch.empty((len(records), 3, size, size), dtype=torch.uint8)
    masks = torch.empty((len(records), 1, size, size), dtype=torch.uint8)
    for i, record in enumerate(tqdm(records, desc=f"resizing to {size}", unit="img")):
        images[i] = torch.from_numpy(resize_rgb(load_rgb(record.image_path), (size, size))).permute(2, 0, 1)
        masks[i, 0] = torch.from_numpy(resize_mask(load_mask(record.mask_path), (size, size)))
    tensors = {"ids": ids, "images": images, "masks": masks}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, cache)
    return tensors


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, rotation (any angle), scale 0.75-1.3, small shifts and colour jitter, per sample.

    ``images`` float 0..1 (N,3,S,S), ``masks`` float 0/1 (N,1,S,S); returns the same shapes.
    """
    n = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand((n, *shape), generator=generator)

    angle = uniform(-math.pi, math.pi)
    scale = torch.exp(uniform(math.log(0.75), math.log(1.3)))
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = uniform(-0.1, 0.1, 2)
    grid = nn.functional.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    images = nn.functional.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
    masks = nn.functional.grid_sample(masks, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    view = (n, 1, 1, 1)
    gray = images.mean(dim=1, keepdim=True)
    images = gray + (images - gray) * uniform(0.7, 1.3).view(view).to(images.device)  # saturation
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = mean + (images - mean) * uniform(0.75, 1.25).view(view).to(images.device)  # contrast
    images = images * uniform(0.75, 1.25).view(view).to(images.device)  # brightness
    images = images * uniform(0.9, 1.1, 3).view(n, 3, 1, 1).to(images.device)  # colour balance
    return images.clamp(0, 1), masks


def unet_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, masks)
    prob = torch.sigmoid(logits)
    inter = (prob * masks).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + masks.sum(dim=(1, 2, 3)) + 1)
    return bce + (1 - dice).mean()


def maskrcnn_targets(masks: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """One lesion instance per image: its box, label 1 and mask (empty masks get no instance)."""
    targets = []
    for mask in masks[:, 0] > 0.5:
        rows, cols = torch.where(mask)
        if len(rows) == 0:
            boxes = torch.zeros((0, 4), device=mask.device)
            targets.append({"boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64, device=mask.device),
                            "masks": torch.zeros((0, *mask.shape), dtype=torch.uint8, device=mask.device)})
            continue
        box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()
        targets.append({"boxes": box[None], "labels": torch.ones(1, dtype=torch.int64, device=mask.device),
                        "masks": mask[None].to(torch.uint8)})
    return targets


def training_step(model: nn.Module, profile: Profile, images: torch.Tensor, masks: torch.Tensor,
                  optimizer: torch.optim.Optimizer, generator: torch.Generator, device: torch.device) -> float:
    """One augmented optimisation step on uint8 ``images`` (N,3,S,S) and ``masks`` (N,1,S,S)."""
    model.train()
    x, y = augment(images.to(device).float() / 255.0, masks.to(device).float(), generator)
    if profile.architecture == "unet":
        loss = unet_loss(model(normalise(x)), y)
    else:
        loss = sum(model(list(x), maskrcnn_targets(y)).values())
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return float(loss.detach())


def set_learning_rate(optimizer: torch.optim.Optimizer, peak: float, step: int, total: int) -> None:
    """Linear warm-up over the first 5% of steps, then cosine decay to zero at ``total``
    (a function of the step alone, so a resumed run may also extend the number of epochs)."""
    warmup = max(1, total // 20)
    if step < warmup:
        lr = peak * (step + 1) / warmup
    else:
        lr = peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: nn.Module, profile: Profile) -> torch.optim.Optimizer:
    if profile.architecture == "unet":
        return torch.optim.AdamW(model.parameters(), lr=profile.learning_rate, weight_decay=1e-4)
    return torch.optim.SGD(model.parameters(), lr=profile.learning_rate, momentum=0.9, weight_decay=1e-4)


def save_model(model: nn.Module, profile: Profile, out: Path, card_metrics: dict, training: dict,
               split_ids: dict[str, list[str]]) -> ModelCard:
    """Half-precision weights plus model card: a usable model directory."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    card = ModelCard(
        name=SEGMENTATION_MODEL,
        version=training["version"],
        architecture=profile.architecture,
        profile=profile.name,
        weights_file=WEIGHTS_FILE,
        training_data=training["data"],
        split=training["split"],
        split_ids=split_ids,
        metrics=card_metrics,
        extra={"profile": asdict(profile), "training": training, "architecture_choice": ARCHITECTURE_CHOICE},
    )
    card.save(out)
    return card


def _identity_text(card: ModelCard) -> str:
    return f"{card.name} {card.version} (sha256 {card.weights_sha256[:12]})"


def train_segmentation(data_dir: Path, profile_name: str, out: Path, *, resume: bool = False,
                       epochs: int | None = None, device: str | None = None, cache_dir: Path | None = None,
                       max_images: int | None = None, input_size: int | None = None, seed: int = 0,
                       threads: int | None = None, evaluate_at_end: bool = True, init: Path | None = None,
                       learning_rate: float | None = None, balance_sources: bool = False) -> ModelCard:
    """Train (or resume) a segmenter of ``profile_name`` on the folder ``data_dir`` into ``out``.

    ``threads`` sets torch's CPU threads: on a CPU shared with other jobs one thread is several
    times faster than two competing ones. ``init`` starts from the weights of one of our own model
    folders (fine-tuning; nothing is downloaded), usually with a lower ``learning_rate``.
    ``balance_sources`` draws each epoch's images so that every source has the same share (HAM10000's
    many small images would otherwise dominate).
    """
    if threads:
        torch.set_num_threads(threads)
    profile = PROFILES[profile_name]
    profile = replace(profile, epochs=epochs or profile.epochs, input_size=input_size or profile.input_size,
                      learning_rate=learning_rate or profile.learning_rate)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch_device(device)
    split = Split.load(out) if resume and (out / "split.json").is_file() else split_by_lesion(data_dir)
    split.save(out)
    records = [r for r in load_records(data_dir) if r.mask_path is not None]
    train_records = split.train(records)[:max_images]
    val_records = split.validation(records)[:max_images]
    if not train_records:
        raise ValueError(f"no training images with masks under {data_dir}")
    cache_dir = Path(cache_dir) if cache_dir else out / "cache"
    tag = f"{profile.input_size}_{len(train_records)}"
    train_data = load_tensors(train_records, profile.input_size, cache_dir / f"train_{tag}.pt")

    torch.manual_seed(seed)
    model = build_network(profile).to(dev)
    if init is not None and not resume:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in torch.load(Path(init) / WEIGHTS_FILE, map_location=dev).items()})
    optimizer = make_optimizer(model, profile)
    steps_per_epoch = math.ceil(len(train_records) / profile.batch_size)
    total_steps = profile.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        start_epoch, extra = load_checkpoint(out / CHECKPOINT_FILE, model, optimizer, generator, map_location=dev)
        history = extra.get("history", [])
    split_ids = {"train": sorted({r.image_id for r in train_records}), "validation": sorted({r.image_id for r in val_records})}
    training = {
        "version": time.strftime("%Y.%m.%d"),
        "data": f"{len(train_records)} training images with expert masks from "
                f"{', '.join(sorted({r.collection for r in train_records}))} (ISIC archive)",
        "initialised_from": None if init is None else _identity_text(ModelCard.load(Path(init))),
        "split": f"split_by_lesion seed {split.seed}, validation fraction {split.validation_fraction}"
                 f" ({len(train_records)} train / {len(val_records)} validation images with masks); split.json",
        "epochs": profile.epochs,
        "device": str(dev),
        "augmentation": "flips, rotation any angle, scale 0.75-1.3, shifts, brightness/contrast/saturation/colour jitter",
        "sampling": "every source the same share of each epoch" if balance_sources else "every image once per epoch",
        "history": history,
    }
    weights = torch.from_numpy(source_weights([r.source for r in train_records]))
    for epoch in range(start_epoch, profile.epochs):
        order = (torch.multinomial(weights, len(train_records), replacement=True, generator=generator)
                 if balance_sources else torch.randperm(len(train_records), generator=generator))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{profile.epochs}", unit="batch")
        for step in bar:
            set_learning_rate(optimizer, profile.learning_rate, epoch * steps_per_epoch + step, total_steps)
            index = order[step * profile.batch_size:(step + 1) * profile.batch_size]
            losses.append(training_step(model, profile, train_data["images"][index], train_data["masks"][index],
                                        optimizer, generator, dev))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "time": time.time()})
        save_checkpoint(out / CHECKPOINT_FILE, epoch + 1, model, optimizer, generator, history=history)
        save_model(model, profile, out, {"epochs_done": epoch + 1, "train_loss": history[-1]["loss"]}, training, split_ids)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    metrics: dict = {"epochs_done": len(history), "train_loss": history[-1]["loss"] if history else None}
    if evaluate_at_end and val_records:
        from dermnode.models.segmentation.predict import LesionSegmenter
        from dermnode.models.segmentation.evaluate import evaluate_records

        segmenter = LesionSegmenter.load(out, device=str(dev))
        metrics.update(evaluate_records(segmenter, val_records, out / "validation"))
    return save_model(model, profile, out, metrics, training, split_ids)
