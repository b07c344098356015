"""`dermnode train classifier-ensemble`: several trained classifiers become one that averages them.

Networks trained alike with other seeds make different mistakes; the mean of their probabilities
takes out part of the seed-to-seed spread. Measured on the isic-8class left-out source (the
classifier's card, ``choices_on_the_left_out_source``), pairs scored above their members' mean:
between the two members with 12 epochs, a little above both with 24. The starter ships the pair of
24-epoch networks trained on every source.
The members must share the split, the radiomic feature selection, the preprocessing, the views and the
head that answers without metadata; each keeps its own calibration (temperature, malignancy scaling)
and its own feature gate (the ensemble refuses an image that any member finds atypical; the limits
are scaled together so that FALSE_REFUSAL_BUDGET of the validation images are refused). The
per-class Youden thresholds are chosen again on the ensemble's validation probabilities, and those
validation figures go to the card as its ``evaluation``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from dermnode.models.classifier.evaluate import classification_metrics, run_chain, youden_thresholds
from dermnode.models.classifier.net import PREPROCESSING_CHOICES
from dermnode.models.classifier.predict import FusionClassifier
from dermnode.models.dataset_index import SPLIT_FILE, ImageRecord, Split, load_records, one_row_per_image
from dermnode.models.images import load_rgb
from dermnode.models.input_gate.checks import FALSE_REFUSAL_BUDGET, budget_scale
from dermnode.models.input_gate.evaluate import gate_atypicality
from dermnode.models.model_card import ModelCard

#: what every member's configuration must share (the preprocessing, the views, the metadata-less head)
SHARED_CONFIG = (*PREPROCESSING_CHOICES, "image_size", "mask_size", "tta_views", "no_metadata_head")
#: what every member's card must share
SHARED_CARD_EXTRA = ("left_out_source", "selection_sha256")


def check_alike(members: Sequence[FusionClassifier], names: Sequence[str]) -> None:
    """Raise ValueError, naming the member and the field, unless the members may be averaged."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    first, first_name = members[0], names[0]
    seen = {first.card.weights_sha256: first_name}
    for member, name in zip(members[1:], names[1:]):
        if member.card.weights_sha256 in seen:
            raise ValueError(f"{name} holds the same weights as {seen[member.card.weights_sha256]}")
        seen[member.card.weights_sha256] = name
        if len(member.members) != 1:
            raise ValueError(f"{name} is an ensemble already: give its members one by one")
        if member.card.split_ids != first.card.split_ids:
            raise ValueError(f"{name} was trained on another split than {first_name}")
        for field in SHARED_CONFIG:
            if getattr(member.net.config, field) != getattr(first.net.config, field):
                raise ValueError(f"{name} has {field} {getattr(member.net.config, field)!r}, "
                                 f"{first_name} {getattr(first.net.config, field)!r}")
        for field in SHARED_CARD_EXTRA:
            if member.card.extra.get(field) != first.card.extra.get(field):
                raise ValueError(f"{name} differs from {first_name} in {field}")


def member_note(card: ModelCard) -> dict:
    """What the ensemble's card keeps of one member's card (the fields that member's recipe has)."""
    note = {"version": card.version, "weights_sha256": card.weights_sha256,
            "seed": card.extra.get("settings", {}).get("seed"),
            "temperature": card.extra.get("temperature"), "image_temperature": card.extra.get("image_temperature"),
            "malignancy_scaling": card.extra.get("malignancy_scaling"),
            "validation_from_cache": card.metrics.get("validation_from_cache")}
    return {key: value for key, value in note.items() if value is not None}


def load_members(member_dirs: Sequence[Path]) -> list[FusionClassifier]:
    """The classifiers of ``member_dirs``, checked to be alike (ValueError / FileNotFoundError otherwise)."""
    members = [FusionClassifier.load(d, device="cpu") for d in member_dirs]
    check_alike(members, [str(d) for d in member_dirs])
    return members


def gate_budget_scale(ensemble: FusionClassifier, records: Sequence[ImageRecord], progress: bool = True) -> float:
    """The factor for the members' gate limits under which the ensemble refuses FALSE_REFUSAL_BUDGET of
    ``records`` (validation dermoscopy). The members' own limits (a margin above a quantile of each
    network's validation distances) let through more, and more pictures that are not dermoscopy, once
    the largest over several networks decides and colour jitter makes the features less colour-bound."""
    views = gate_atypicality(ensemble, (load_rgb(r.image_path) for r in records), progress)
    return budget_scale(np.array([a for reason, a in views if reason is None]))


def scale_gates_to_budget(ensemble: FusionClassifier, records: Sequence[ImageRecord], notes: Sequence[str],
                          progress: bool = True) -> str:
    """Multiply every gate's limit by :func:`gate_budget_scale` on ``records``; the card's words for the
    ensemble's gate, given each member's (``notes``)."""
    scale = gate_budget_scale(ensemble, records, progress)
    ensemble.gates = [gate.scaled(scale) for gate in ensemble.gates]
    return ("refused when any member's feature gate refuses; each: " + "; ".join(notes)
            + f"; the ensemble multiplies every limit by {scale:.3f}, so that {FALSE_REFUSAL_BUDGET:.1%} of the "
            "validation images (as the node segments them) are refused")


def combine(members: Sequence[FusionClassifier], member_dirs: Sequence[Path], data_dir: Path, out_dir: Path,
            version: str, progress: bool = True) -> dict:
    """Write the ensemble of ``members`` (from :func:`load_members`) to ``out_dir``, with the split of the
    first member's directory; return the ensemble's validation metrics."""
    first = members[0].card
    card = replace(
        first,
        version=version,
        architecture=f"ensemble of {len(members)} networks trained alike with other seeds (the mean of their "
        f"probabilities); each: {first.architecture}",
        metrics={},
        extra={**first.extra, "members": [member_note(m.card) for m in members],
               "class_thresholds_note": "Youden-optimal one-vs-rest thresholds of the ensemble on the validation split"},
    )
    gates = [m.gates[0] for m in members] if all(m.gates for m in members) else []
    for per_member in ("settings", "temperature", "image_temperature", "malignancy_scaling"):
        card.extra.pop(per_member, None)
    ensemble = FusionClassifier([m.net for m in members], members[0].selection, card, gates=gates)
    split = Split.load(Path(member_dirs[0]) / SPLIT_FILE)
    records = split.validation(one_row_per_image(load_records(data_dir)))
    outputs = run_chain(ensemble, records, progress=progress)
    if gates:
        notes = [m.card.extra.get("input_gate", "") for m in members]
        card.extra["input_gate"] = scale_gates_to_budget(ensemble, records, notes, progress)
    card.extra["class_thresholds"] = youden_thresholds(outputs.labels, outputs.probabilities["fused"])
    metrics = classification_metrics(outputs, card.extra["class_thresholds"])
    summary = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
    card.metrics = {"evaluation": {"data": f"{Path(data_dir).name} (validation subset)", **summary}}
    out_dir = Path(out_dir)
    ensemble.save(out_dir, card)
    shutil.copyfile(Path(member_dirs[0]) / SPLIT_FILE, out_dir / SPLIT_FILE)
    return metrics

