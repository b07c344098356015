"""Cases the models have already seen: included images that were in a model's training or validation split.

Method: the ISIC image id. A model card lists the ISIC ids of both sides of its split
(``split_ids``); an ISIC image converted to DICOM keeps its id in the header's identifiers (dermnode's
``dicomize`` writes it as Patient ID and Accession Number, and archives converted by other tools
usually keep it in one of these or in the truth list's key). UIDs cannot serve: training reads JPEG
files, so no UID exists at training time, and a conversion mints new ones. A perceptual hash of the
pixels would survive renaming, but needs the source pixels at report time, which the audit log does
not keep; cases that carry no ISIC id are counted as "not checked" rather than assumed unseen.
"""

from __future__ import annotations

import re

from dermnode.models.model_card import ModelCard
from dermnode.validation.cohort import Case

ISIC_ID = re.compile(r"ISIC_\d{7}")
SIDES: tuple[str, ...] = ("train", "validation")


def isic_ids(case: Case) -> set[str]:
    """The ISIC image ids in a case's identifiers (truth key, Patient ID, Accession Number)."""
    texts = [case.key, *(v for k, v in case.ids.items() if k in ("patient_id", "accession_number") and v)]
    return {found for text in texts for found in ISIC_ID.findall(text)}


def training_overlap(cases: list[Case], cards: dict[str, ModelCard]) -> dict:
    """Which cases each model saw in training or validation, with the counts the report shows.

    ``seen`` maps a case key to "model: side" entries; a case is seen when any model that produced
    its result had its image on either side of the split.
    """
    sides = {sha: {side: set(card.split_ids.get(side, [])) for side in SIDES} for sha, card in cards.items()}
    seen: dict[str, list[str]] = {}
    by_model: dict[str, dict[str, int]] = {}
    unchecked_models: set[str] = set()
    not_checked = 0
    for case in cases:
        ids = isic_ids(case)
        if not ids:
            not_checked += 1
            continue
        for model in case.models:
            split = sides.get(model.sha256)
            if split is None or not any(split.values()):
                unchecked_models.add(f"{model.name} {model.version}")
                continue
            label = f"{model.name} {model.version}"
            counts = by_model.setdefault(label, {side: 0 for side in SIDES})
            for side in SIDES:
                if ids & split[side]:
                    counts[side] += 1
                    seen.setdefault(case.key, []).append(f"{label}: {side}")
    return {
        "method": "ISIC image id (truth key, Patient ID, Accession Number) against the model cards' split_ids",
        "cases": len(cases),
        "checked": len(cases) - not_checked,
        "not_checked": not_checked,
        "seen": seen,
        "n_seen": len(seen),
        "by_model": by_model,
        "models_without_split_ids": sorted(unchecked_models),
    }
