"""Which models produced the included results, and what their model cards say about them.

Every result records its models by name, version and weights sha256 (audit columns
``model_<name>_version`` / ``_sha256``; the SR's contributing equipment). The cards are looked up by
that sha256 in the model folders given (the node's ``models_dir``) and the starter weights shipped in
the package, so that a card is only ever attributed to the weights it describes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from dermnode.contract import ModelIdentity
from dermnode.models.model_card import CARD_FILE, STARTER_DIR, ModelCard
from dermnode.validation.cohort import Case


def find_cards(directories: Iterable[Path | None]) -> dict[str, ModelCard]:
    """Every readable card in the folders (``<dir>/model_card.json`` or ``<dir>/*/model_card.json``) and in
    the starter folder, by the sha256 of its weights; the first folder given wins on a tie."""
    cards: dict[str, ModelCard] = {}
    for directory in [*[Path(d) for d in directories if d is not None], STARTER_DIR]:
        for path in [directory / CARD_FILE, *sorted(directory.glob(f"*/{CARD_FILE}"))]:
            try:
                card = ModelCard(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            cards.setdefault(card.weights_sha256, card)
    return cards


def _training_summary(card: ModelCard) -> dict:
    return {
        "architecture": card.architecture,
        "profile": card.profile,
        "training_data": card.training_data,
        "split": card.split,
        "train_ids": len(card.split_ids.get("train", [])),
        "validation_ids": len(card.split_ids.get("validation", [])),
        "licence": card.licence,
    }


def models_used(cases: list[Case], cards: dict[str, ModelCard]) -> dict:
    """One entry per model identity that produced included results, with its card's summary.

    ``mixed`` names the models seen in more than one version (or with more than one weights hash):
    the report shows each as its own column and warns at the top.
    """
    counts: Counter[ModelIdentity] = Counter(m for case in cases for m in case.models)
    entries = []
    for identity in sorted(counts, key=lambda m: (m.name, m.version, m.sha256)):
        card = cards.get(identity.sha256)
        entries.append({
            "name": identity.name,
            "version": identity.version,
            "sha256": identity.sha256,
            "results": counts[identity],
            "card": _training_summary(card) if card is not None else None,
        })  # fmt: skip
    by_name = Counter(entry["name"] for entry in entries)
    return {
        "models": entries,
        "mixed": sorted(name for name, n in by_name.items() if n > 1),
        "results_without_models": sum(not case.models for case in cases),
    }


def describe(models: tuple[ModelIdentity, ...]) -> str:
    """"name version sha256[:12]" per model, for one result's row of cases.csv."""
    return "; ".join(f"{m.name} {m.version} {m.sha256[:12]}" for m in models)
