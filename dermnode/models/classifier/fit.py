"""`dermnode train classifier`: from a data folder to a weights directory with its model card.

Data: every labelled image once (an image filed in two collections counts once), split by lesion
(:func:`split_by_lesion`); with ``leave_out`` the images of that source (and of its lesions) are
kept out entirely, for the leave-one-source-out evaluation. Masks (``masks="expert"``): the data
folder's expert masks where present (isic2018-task1, ham10000), otherwise masks predicted by the
starter segmenter (computed once and kept in the work directory); without a starter segmenter those
images get no mask (an all-zero mask channel, no radiomics, no lesion crop). ``masks="predicted"``
uses the segmenter's mask for every image, as the node sees them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dermnode.contract import CLASS_CODES, PatientMetadata
from dermnode.models.classifier.calibration import fit_malignancy_scaling, fit_temperature, scale_malignancy
from dermnode.models.classifier.predict import NAME, FusionClassifier
from dermnode.models.classifier.data import ClassifierCache, build_cache, encode_metadata, expert_mask
from dermnode.models.classifier.evaluate import aurocs, youden_thresholds
from dermnode.models.classifier.net import (
    ABLATION_VARIANTS,
    ARCHITECTURE_CHOICES,
    PREPROCESSING_CHOICES,
    ClassifierConfig,
)
from dermnode.models.classifier.radiomics_cache import extend_cache, read_cache, record_key
from dermnode.models.classifier.train import (
    TrainSettings,
    finetune_fused,
    head_probabilities,
    image_features,
    new_network,
    train_all_heads,
    train_image_branch,
)
from dermnode.models.dataset_index import (
    ImageRecord,
    Split,
    load_records,
    split_by_lesion,
    training_images,
)
from dermnode.models.classifier.gates import fit_feature_gate, gate_note
from dermnode.models.model_card import ModelCard
from dermnode.models.radiomics import FeatureSelection

log = logging.getLogger(__name__)
SEGMENTER_KEY = "segmenter_sha256"
VERSION = "0.7.1"  # 0.7.1: the feature gate also reads the early stages' style statistics


def stage1_recipe(settings: TrainSettings) -> str:
    """The optional parts of stage 1, as the model card names them ("" when none is used)."""
    parts = [f"mixup (Beta {settings.mixup:g})" if settings.mixup else "",
             f"MixStyle on a share {settings.mixstyle:g} of batches" if settings.mixstyle else "",
             f"colour jitter {settings.colour_jitter:g}" if settings.colour_jitter else "",
             f"images drawn with weights (their source's size)^-{settings.source_balance:g}" if settings.source_balance
             else "",
             f"a malignant-vs-benign loss (weight {settings.malignant_loss:g})" if settings.malignant_loss else "",
             f"an exponential moving average of the weights (decay {settings.ema:g}/step)" if settings.ema else ""]
    used = [part for part in parts if part]
    return f"; stage 1 with {', '.join(used)}" if used else ""


def predicted_masks(records: list[ImageRecord], work_dir: Path, every: bool = False) -> dict[str, np.ndarray | None]:
    """Starter-segmenter masks (source size) for records without an expert mask (``every``: for all
    records), cached on disk in the work directory."""
    from tqdm import tqdm

    from dermnode.models.images import load_rgb
    from dermnode.models.segmentation.predict import LesionSegmenter

    path = Path(work_dir) / "predicted_masks.npz"
    todo = [r for r in records if every or r.mask_path is None]
    try:
        segmenter = LesionSegmenter.load()
    except (FileNotFoundError, KeyError) as error:
        log.warning("no starter segmenter (%s): images without expert masks get no mask", error)
        return {}
    version = np.frombuffer(segmenter.identity.sha256.encode(), dtype=np.uint8).astype(np.int64)
    masks: dict[str, np.ndarray | None] = {}
    if path.is_file():
        with np.load(path) as data:
            if SEGMENTER_KEY in data.files and np.array_equal(data[SEGMENTER_KEY], version):
                for key in (k for k in data.files if k != SEGMENTER_KEY):
                    shape, bits = tuple(data[key][:2]), data[key][2:].astype(np.uint8)
                    masks[key] = None if shape == (0, 0) else np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)
            else:
                log.warning("%s was made by another segmenter: segmenting again", path)
    todo = [r for r in todo if record_key(r).replace("/", ":") not in masks]
    if todo:
        for start in tqdm(range(0, len(todo), 16), desc="segmenting"):
            chunk = todo[start : start + 16]
            for record, result in zip(chunk, segmenter.predict([load_rgb(r.image_path) for r in chunk])):
                masks[record_key(record).replace("/", ":")] = result.mask
        packed = {}
        for key, mask in masks.items():
            shape = np.array((0, 0) if mask is None else mask.shape, dtype=np.int64)
            bits = np.zeros(0, np.int64) if mask is None else np.packbits(mask.ravel()).astype(np.int64)
            packed[key] = np.concatenate([shape, bits])
        np.savez(path, **packed, **{SEGMENTER_KEY: version})
    return {key.replace(":", "/"): mask for key, mask in masks.items()}


def _segmenter_identity() -> str:
    from dermnode.models.model_card import STARTER_DIR

    card = ModelCard.load(STARTER_DIR / "segmentation", verify=False)
    return f"{card.name} {card.version} sha256 {card.weights_sha256[:12]}"


def radiomics_rows(
    cache: ClassifierCache, entries: dict[str, dict], selection: FeatureSelection
) -> tuple[torch.Tensor, list[dict | None]]:
    """Per cache row: the radiomics input (normalised selected features + missing flag) and the raw dict."""
    from dermnode.models.classifier.predict import radiomics_vector

    raw = [entries.get(f"{c}/{i}", {}).get("features") for c, i in zip(cache.collections, cache.image_ids)]
    return torch.from_numpy(np.stack([radiomics_vector(selection, r) for r in raw])), raw


def validation_summary(labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> dict:
    """AUROCs of each variant (malignant-vs-benign by summed probability, and macro one-vs-rest)."""
    return {name: aurocs(labels, probs) for name, probs in probabilities.items()}


def fit(
    train: ClassifierCache,
    val: ClassifierCache,
    rad_train: torch.Tensor,
    rad_val: torch.Tensor,
    config: ClassifierConfig,
    settings: TrainSettings,
    work_dir: Path,
    no_metadata_head: str = "fused",
    init: dict | None = None,
) -> tuple:
    """Both stages on ``train``, the image branch starting from ``init`` (its weights) when given, else at
    random; returns the network and the validation probabilities of each variant. The fused head's
    temperature and the image-only head's malignancy scaling are fitted on ``val``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    net = new_network(config)
    if init is not None:
        net.image.load_state_dict(init)
    train_image_branch(net, train, settings, work_dir)
    features = image_features(net, train, views=3, seed=settings.seed)
    meta, labels = torch.from_numpy(train.metadata), torch.from_numpy(train.labels)
    train_all_heads(net, features, meta, rad_train, labels, settings)
    finetune_fused(net, train, rad_train, settings)
    net.cpu()  # calibration, the gate and the saved weights are on the CPU
    val_features = image_features(net, val)[0]
    val_meta = torch.from_numpy(val.metadata)
    no_meta = torch.from_numpy(np.stack([encode_metadata(PatientMetadata())] * len(val.labels)))
    with torch.no_grad():
        net.head.eval()
        logits = net.head(val_features, val_meta, rad_val)
        image_head = net.ablation_head("image").eval()
        empty = val_features.new_zeros((len(val_features), 0))
        image_logits = image_head(val_features, empty, empty)
    labels = torch.from_numpy(val.labels)
    temperature = fit_temperature(logits, labels)
    image_probabilities = torch.softmax(image_logits, dim=1)
    scaling = fit_malignancy_scaling(image_probabilities, labels)
    net.config = replace(net.config, temperature=temperature, image_temperature=1.0, malignancy_scaling=scaling,
                         no_metadata_head=no_metadata_head)
    probabilities = {
        name: head_probabilities(net.ablation_head(name), val_features, val_meta, rad_val) for name in ABLATION_VARIANTS
    }
    probabilities["fused"] = torch.softmax(logits / temperature, dim=1).numpy()
    with torch.no_grad():
        bare = (scale_malignancy(image_probabilities, scaling) if no_metadata_head == "image"
                else torch.softmax(net.head(val_features, no_meta, rad_val) / temperature, 1))
        probabilities["fused, no metadata"] = bare.numpy()
    return net, probabilities


def cache_file(config: ClassifierConfig, masks: str, work_dir: Path) -> Path:
    """Where the work directory keeps the images prepared as ``config`` says, with ``masks`` masks."""
    return Path(work_dir) / f"images_{config.image_size}_cc{int(config.colour_constancy)}_m{config.crop_margin}_{masks}.npz"


def cached_images(records: list[ImageRecord], config: ClassifierConfig, masks: str, work_dir: Path,
                  predicted: dict[str, np.ndarray | None]) -> ClassifierCache:
    """The ``records``' images prepared as ``config`` says, from the work directory's cache, else built and
    kept there: with the expert mask where present (``masks="expert"``), else the segmenter's from ``predicted``."""
    path = cache_file(config, masks, work_dir)
    if path.is_file():
        return ClassifierCache.load(path)

    def mask_for(record: ImageRecord) -> tuple[np.ndarray | None, str]:
        if masks == "expert" and record.mask_path is not None:
            return expert_mask(record)
        mask = predicted.get(record_key(record))
        return mask, "none" if mask is None else "predicted"

    cache = build_cache(records, config.image_size, mask_for=mask_for, colour_constancy=config.colour_constancy,
                        crop_margin=config.crop_margin)
    cache.save(path)
    return cache


def split_cache(cache: ClassifierCache, split: Split) -> tuple[ClassifierCache, ClassifierCache]:
    """The cached images of the split's training side and of its validation side."""
    return tuple(cache.subset(np.flatnonzero(np.isin(cache.image_ids, ids)))
                 for ids in (split.train_ids, split.validation_ids))


def training_records(data_dir: Path, leave_out: str | None = None) -> list[ImageRecord]:
    """Every labelled image of the data folder once, without the ``leave_out`` source and its lesions."""
    return training_images([r for r in load_records(data_dir) if r.diagnosis is not None], leave_out)


def data_summary(records: list[ImageRecord]) -> str:
    by_source: dict[str, int] = {}
    for record in records:
        by_source[record.source] = by_source.get(record.source, 0) + 1
    return ", ".join(f"{source} {n}" for source, n in sorted(by_source.items()))


def train_classifier(
    data_dir: Path,
    out_dir: Path,
    profile: str,
    work_dir: Path,
    settings: TrainSettings,
    folds: int = 1,
    masks: str = "expert",
    leave_out: str | None = None,
    no_metadata_head: str = "fused",
    choices: dict | None = None,
    init: tuple[dict, ModelCard] | None = None,
) -> dict:
    """Train on the lesion split's training part (optionally with k-fold cross-validation inside it),
    fit the temperature and choose per-class Youden thresholds on its validation part, and write
    weights + card to ``out_dir``. ``choices`` override the profile's preprocessing and architecture
    (``ClassifierConfig.for_profile``), to measure each choice on a left-out source. ``init``: the image
    branch's starting weights and their card (:func:`.pretrain.load_pretrained`)."""
    data_dir, out_dir, work_dir = Path(data_dir), Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if masks not in ("expert", "predicted"):
        raise ValueError(f"masks must be 'expert' or 'predicted', not {masks!r}")
    records = training_records(data_dir, leave_out)
    split = split_by_lesion(records=records)
    every = masks == "predicted"
    config = ClassifierConfig.for_profile(profile, **(choices or {}))
    radiomics_path = work_dir / "radiomics.jsonl"
    entries = read_cache(radiomics_path)
    warm = cache_file(config, masks, work_dir).is_file() and set(map(record_key, records)) <= set(entries)
    predicted = {} if warm else predicted_masks(records, work_dir, every=every)  # a warm work directory needs none
    cache = cached_images(records, config, masks, work_dir, predicted)
    if not warm:
        entries = extend_cache(
            radiomics_path,
            records,
            (lambda r, _image: predicted.get(record_key(r))) if predicted else None,
            use_expert=not every,
        )
    train, val = split_cache(cache, split)
    train_raw = [entries.get(f"{c}/{i}", {}).get("features") for c, i in zip(train.collections, train.image_ids)]
    selection = FeatureSelection.fit(train_raw, [CLASS_CODES[y] for y in train.labels], k=9)
    rad_train, _ = radiomics_rows(train, entries, selection)
    rad_val, _ = radiomics_rows(val, entries, selection)
    config = replace(config, n_radiomics=len(selection.names))

    weights, init_card = init if init is not None else (None, None)
    started = f"{init_card.name} {init_card.version} sha256 {init_card.weights_sha256[:12]}" if init_card else "random"
    cross_validation = (cross_validate(train, rad_train, config, settings, work_dir, folds, weights) if folds > 1
                        else None)
    net, probabilities = fit(train, val, rad_train, rad_val, config, settings, work_dir, no_metadata_head, weights)
    thresholds = youden_thresholds(val.labels, probabilities["fused"])
    summary = validation_summary(val.labels, probabilities)
    sources = {s: int((cache.mask_source == s).sum()) for s in ("expert", "predicted", "none")}
    segmenter = _segmenter_identity() if sources["predicted"] else "none"
    left_out = f"; source {leave_out!r} and its lesions left out (leave-one-source-out run)" if leave_out else ""
    card = ModelCard(
        name=NAME,
        version=VERSION,
        architecture=(
            f"fusion classifier, profile {profile}: "
            + ("ResNet-50" if profile == "paper" else "small ResNet (BasicBlocks, widths "
               + "-".join(map(str, config.widths)) + ", blocks per stage " + "-".join(map(str, config.blocks)) + ")")
            + f" on RGB + lesion mask at {config.image_size} px"
            + (", after Shades of Gray colour constancy" if config.colour_constancy else "")
            + (f", cropped to the lesion with a {config.crop_margin:.0%} margin" if config.crop_margin else "")
            + "; quantitative branch = metadata (age, sex, site with missing flags; sites of other vocabularies "
            "mapped onto ISIC's, unknown = missing)"
            + (f" early-fused with {len(selection.names)} selected radiomic features (+ missing flag)" if config.head_radiomics
               else f" ({len(selection.names)} selected radiomic features are measured and reported, and train an "
               "ablation head, but stay out of the shipped head: they did not transfer to a left-out source)")
            + " into 64 units; late fusion through a 1024-wide layer into an 8-way softmax "
            "(NV MEL BCC BKL AK SCC DF VASC), temperature-scaled (the image-only head: P(malignant) Platt-scaled, "
            "rank-keeping); stage 1 image branch, stage 2 fused head on frozen "
            "features then end-to-end fine-tune, metadata hidden at random (field-wise and all at once) so the "
            "image stands alone; cross-entropy weighted by (1/class frequency)^0.5"
            + stage1_recipe(settings)
            + (f"; image branch initialised from {started}" if init_card else "")
        ),
        profile=profile,
        weights_file="classifier.pt",
        training_data=(
            f"{len(train.labels)} labelled training images of the data folder ({data_summary(records)} images in "
            f"all{left_out}). Masks: expert masks where present ({sources['expert']}), otherwise predicted by the "
            f"starter segmenter ({sources['predicted']}, {segmenter}); no lesion found ({sources['none']}: empty "
            "mask channel, no radiomics, whole image)"
        ),
        split=split.describe(),
        split_ids=split.card_ids(),
        metrics={"validation_from_cache": summary, "cross_validation": cross_validation},
        extra={
            "class_thresholds": thresholds,
            "class_thresholds_note": "Youden-optimal one-vs-rest thresholds of the fused model on the validation split",
            "veto": "malignant when P(MEL)+P(BCC)+P(AK)+P(SCC) >= the node's veto threshold (default 0.3)",
            "temperature": net.config.temperature,
            "malignancy_scaling": list(net.config.malignancy_scaling),
            "no_metadata_head": no_metadata_head,
            "left_out_source": leave_out,
            "settings": settings.__dict__,
            "preprocessing": {name: getattr(config, name) for name in PREPROCESSING_CHOICES},
            "architecture": {name: list(getattr(config, name)) for name in ARCHITECTURE_CHOICES},
            "image_branch_init": started,
        },
    )
    gate = fit_feature_gate(net, train, val)
    card.extra["input_gate"] = gate_note(gate)
    FusionClassifier(net, selection, card, gates=[gate]).save(out_dir, card)
    split.save(out_dir)
    (work_dir / "validation_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cross_validate(
    train: ClassifierCache,
    rad_train: torch.Tensor,
    config: ClassifierConfig,
    settings: TrainSettings,
    work_dir: Path,
    folds: int,
    init: dict | None = None,
) -> dict:
    """k-fold cross-validation over the training part, grouped by image_id; mean and spread per variant."""
    ids = np.unique(train.image_ids)
    fold_of = dict(zip(ids, np.random.default_rng(settings.seed).permutation(len(ids)) % folds))
    assignment = np.array([fold_of[i] for i in train.image_ids])
    per_fold = []
    for k in range(folds):
        inner, outer = np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)
        _, probabilities = fit(
            train.subset(inner), train.subset(outer), rad_train[inner], rad_train[outer],
            config, settings, work_dir / f"fold{k + 1}", init=init,
        )
        per_fold.append(validation_summary(train.labels[outer], probabilities))
        log.info("fold %d: %s", k + 1, per_fold[-1])
    result: dict = {"folds": folds, "per_fold": per_fold}
    for variant in per_fold[0]:
        for metric in ("auroc_malignant", "auroc_macro"):
            values = [f[variant][metric] for f in per_fold if f[variant][metric] is not None]
            result.setdefault(variant, {})[metric] = {"mean": float(np.mean(values)), "sd": float(np.std(values))}
    return result
