"""The classifier's ablation (image only, + metadata, + radiomics), as the seed paper's Figure 7 shows it.

On this cohort it needs each head's output per case; the node records only the fused classifier's
probabilities (audit log and SR alike), so the cohort ablation is "not available" and the report shows
the figures the classifier's model card measured on its own validation split instead, labelled so.
"""

from __future__ import annotations

from dermnode.contract import CLASSIFIER_MODEL
from dermnode.models.model_card import ModelCard

HEADS: tuple[str, ...] = ("image", "image+metadata", "image+metadata+radiomics", "fused")
NOT_AVAILABLE = (
    "Not available on this cohort: the node records only the fused classifier's probabilities, not the "
    "image-only, +metadata and +radiomics heads' outputs."
)


def ablation(models: list[dict], cards: dict[str, ModelCard]) -> dict:
    """The cohort note and, per classifier version used, the ablation figures of its model card."""
    from_cards = []
    for entry in models:
        card = cards.get(entry["sha256"])
        if entry["name"] != CLASSIFIER_MODEL or card is None:
            continue
        measured = card.metrics.get("validation_from_cache") or {}
        heads = {head: measured[head] for head in HEADS if head in measured}
        if heads:
            from_cards.append({"model": f"{card.name} {card.version}", "split": card.split, "heads": heads})
    return {"cohort": None, "cohort_note": NOT_AVAILABLE, "model_cards": from_cards}
