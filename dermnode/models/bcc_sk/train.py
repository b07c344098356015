"""Training of the BCC-versus-SK model.

Stage A (``cpu`` profile only, since no pretrained encoder exists for it): image and text encoders
learn from scratch with the hand-written prompts ``"a dermoscopic image of <class>."``, by
cross-entropy over the scaled image-text cosine similarities. Stage B (every profile): both
encoders frozen, the CoOp context vectors and the linear probe learn by cross-entropy, on image
embeddings of augmented views computed once. Data: BCC against BKL (the benign-keratosis side
standing in for seborrheic keratosis, as the data README says). Stage A checkpoints every epoch
into a work directory and resumes there. Training runs where the network is (CUDA when
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

from dermnode.contract import CLASS_CODES
from dermnode.models.bcc_sk.predict import NAME, NEGATIVE, POSITIVE, BccSkModel
from dermnode.models.bcc_sk.evaluate import evaluate_bcc_sk, evaluation_records
from dermnode.models.bcc_sk.net import CPU_CLIP_CONFIG, PAPER_MODEL, BccSkNet, build_clip, pretrained_path
from dermnode.models.checkpoints import load_checkpoint, save_checkpoint
from dermnode.models.classifier.data import ClassifierCache, build_cache
from dermnode.models.classifier.train import augment, cosine_schedule, to_tensors
from dermnode.models.dataset_index import load_records, split_by_lesion, training_images
from dermnode.models.device import torch_device
from dermnode.models.model_card import ModelCard

log = logging.getLogger(__name__)


@dataclass
class BccSkSettings:
    encoder_epochs: int = 24
    coop_epochs: int = 40
    views: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def bcc_sk_subset(cache: ClassifierCache) -> tuple[ClassifierCache, np.ndarray]:
    """The BCC and BKL cases of a cache, and targets in the network's order (0 = BCC, 1 = SK)."""
    codes = np.array(CLASS_CODES)[cache.labels]
    index = np.flatnonzero(np.isin(codes, (POSITIVE, NEGATIVE)))
    subset = cache.subset(index)
    targets = np.where(np.array(CLASS_CODES)[subset.labels] == POSITIVE, 0, 1)
    return subset, targets


def _weights(targets: np.ndarray) -> torch.Tensor:
    counts = np.bincount(targets, minlength=2).astype(float)
    weights = counts.sum() / (2 * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def train_encoders(
    net: BccSkNet, train: ClassifierCache, targets: np.ndarray, settings: BccSkSettings, work_dir: Path, progress=True
) -> None:
    """Stage A: both encoders from scratch with the fixed hand-written context."""
    from tqdm import tqdm

    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(net.clip.parameters(), lr=settings.lr, weight_decay=0.05)
    steps = math.ceil(len(targets) / settings.batch_size)
    total_steps = settings.encoder_epochs * steps
    scheduler = cosine_schedule(optimizer, total_steps, warmup_steps=steps)  # one epoch of warm-up
    checkpoint = work_dir / "bcc_sk_stage_a.pt"
    device = net.mean.device
    start, _ = load_checkpoint(checkpoint, net, optimizer, generator, scheduler, map_location=device)
    y, weights = torch.from_numpy(targets).to(device), _weights(targets).to(device)
    for epoch in range(start, settings.encoder_epochs):
        net.train()
        order, total = torch.randperm(len(y), generator=generator).numpy(), 0.0
        for step in tqdm(range(steps), desc=f"encoders epoch {epoch + 1}/{settings.encoder_epochs}", disable=not progress):
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            rgb, mask = (t.to(device) for t in to_tensors(train, index, net.image_size))
            rgb, _ = augment(rgb, mask, generator, mask_dropout=1.0)
            text = F.normalize(net.encode_prompts(None), dim=-1)
            image = F.normalize(net.encode_image(rgb), dim=-1)
            logits = net.clip.logit_scale.exp() * image @ text.T
            loss = F.cross_entropy(logits, y[index], weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                net.clip.logit_scale.clamp_(0, math.log(100))
            total += loss.item() * len(index)
        log.info("encoders epoch %d loss %.4f", epoch + 1, total / len(y))
        save_checkpoint(checkpoint, epoch + 1, net, optimizer, generator, scheduler)


@torch.no_grad()
def image_embeddings(net: BccSkNet, cache: ClassifierCache, views: int = 1, seed: int = 0) -> torch.Tensor:
    """views x N x D embeddings (on the CPU): view 0 plain, further views augmented."""
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for view in range(views):
        chunks = []
        for start in range(0, len(cache.labels), 128):
            index = np.arange(start, min(start + 128, len(cache.labels)))
            rgb, mask = (t.to(net.mean.device) for t in to_tensors(cache, index, net.image_size))
            if view:
                rgb, _ = augment(rgb, mask, generator, mask_dropout=1.0)
            chunks.append(net.encode_image(rgb).cpu())
        out.append(torch.cat(chunks))
    return torch.stack(out)


def coop_step(net: BccSkNet, embeddings: torch.Tensor, targets: torch.Tensor, optimizer, weights=None) -> float:
    """One CoOp + probe optimisation step on frozen image embeddings; returns the loss."""
    device = net.mean.device
    embeddings, targets = embeddings.to(device), targets.to(device)
    weights = None if weights is None else weights.to(device)
    loss = F.cross_entropy(net.coop_logits(embeddings), targets, weight=weights) + F.cross_entropy(
        net.probe_logits(embeddings), targets, weight=weights
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item())


def coop_optimizer(net: BccSkNet, lr: float = 2e-3) -> torch.optim.Optimizer:
    net.freeze_encoders()
    return torch.optim.AdamW([net.ctx, *net.probe.parameters()], lr=lr, weight_decay=1e-4)


def train_prompts(net: BccSkNet, train: ClassifierCache, targets: np.ndarray, settings: BccSkSettings) -> float:
    """Stage B: CoOp context vectors and the probe, encoders frozen."""
    embeddings = image_embeddings(net, train, views=settings.views, seed=settings.seed)
    optimizer = coop_optimizer(net)
    generator = torch.Generator().manual_seed(settings.seed)
    y, weights = torch.from_numpy(targets), _weights(targets)
    views, n, _ = embeddings.shape
    loss = float("nan")
    net.eval()  # dropout / batch norm of the frozen encoders stay in inference mode
    for _ in range(settings.coop_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            index = order[start : start + settings.batch_size]
            view = torch.randint(views, (len(index),), generator=generator)
            loss = coop_step(net, embeddings[view, index], y[index], optimizer, weights)
    return loss


def train_bcc_sk(
    data_dir: Path, out_dir: Path, profile: str, work_dir: Path, settings: BccSkSettings, leave_out: str | None = None
) -> dict:
    """Train on the lesion split's training part of every BCC and BKL image (without the ``leave_out``
    source and its lesions), evaluate on its validation part, write weights + card."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    records = training_images([r for r in load_records(Path(data_dir)) if r.diagnosis in (POSITIVE, NEGATIVE)], leave_out)
    split = split_by_lesion(records=records)
    net = BccSkNet(build_clip(profile)).to(torch_device())
    cache_path = work_dir / f"bcc_bkl_{net.image_size}{'_without_' + leave_out if leave_out else ''}.npz"
    if cache_path.is_file():
        cache = ClassifierCache.load(cache_path)
    else:
        cache = build_cache(records, net.image_size)
        cache.save(cache_path)
    train, targets = bcc_sk_subset(cache.subset(np.flatnonzero(np.isin(cache.image_ids, split.train_ids))))
    if profile == "cpu":
        train_encoders(net, train, targets, settings, work_dir)
    loss = train_prompts(net, train, targets, settings)
    log.info("CoOp + probe final loss %.4f", loss)
    net.cpu()
    encoders = (
        "Image and text encoders trained from scratch here (no pretrained CLIP exists for this "
        "configuration): stage A with the hand-written prompt 'a dermoscopic image of <class>.', then "
        "frozen for CoOp."
        if profile == "cpu"
        else f"Frozen pretrained {PAPER_MODEL} CLIP encoders from {pretrained_path().name}."
    )
    card = ModelCard(
        name=NAME,
        version="0.3.0",
        architecture=(
            f"open_clip CLIP ({'custom: ' + str(CPU_CLIP_CONFIG) if profile == 'cpu' else PAPER_MODEL}) with CoOp "
            f"({net.n_ctx} shared context vectors before the class names 'basal cell carcinoma', 'seborrheic "
            "keratosis') and a linear probe on the normalised image embedding; P(BCC) = mean of the CoOp and "
            "probe softmax probabilities; Grad-CAM attention on the image tower"
        ),
        profile=profile,
        weights_file="bcc_sk.pt",
        training_data=(
            f"{len(targets)} training images ({int((targets == 0).sum())} BCC, {int((targets == 1).sum())} BKL) "
            "of the data folder's collections (each image once)"
            + (f", source {leave_out!r} and its lesions left out" if leave_out else "")
            + "; BKL (benign keratosis) stands in for seborrheic keratosis since the data has no separate SK label"
        ),
        split=split.describe(),
        split_ids=split.card_ids(),
        extra={"encoders": encoders, "settings": settings.__dict__, "input_size": net.image_size},
    )
    model = BccSkModel(net, card)
    model.save(out_dir, card)
    split.save(out_dir)
    metrics = evaluate_bcc_sk(BccSkModel.load(out_dir), evaluation_records(Path(data_dir), split), work_dir / "eval")
    card.metrics = {"validation": {k: v for k, v in metrics.items() if k != "model"}}
    card.save(out_dir)
    return metrics
