"""The warnings shown at the top of the report (and on the console), worded for a reader who signs it."""

from __future__ import annotations

from dermnode.contract import CLASS_CODES
from dermnode.validation.minimum import TOO_SMALL


def _overlap(overlap: dict) -> list[str]:
    found = []
    if overlap["n_seen"]:
        per_model = "; ".join(f"{model}: {c['train']} train, {c['validation']} validation"
                              for model, c in overlap["by_model"].items() if c["train"] or c["validation"])  # fmt: skip
        found.append(
            f"TRAINING OVERLAP: {overlap['n_seen']} of {overlap['cases']} cases were in the training or validation "
            f"split of a model that analysed them ({per_model}). Figures over all cases overstate performance on "
            "new patients: read the figures without them (section 'Training overlap')."
        )
    if overlap["not_checked"]:
        found.append(f"{overlap['not_checked']} of {overlap['cases']} cases carry no ISIC image id in their "
                     "identifiers: whether the models saw them in training could not be checked.")  # fmt: skip
    if overlap["models_without_split_ids"]:
        found.append("No training image ids for " + ", ".join(overlap["models_without_split_ids"])
                     + " (model card not found, or it lists no split ids): training overlap not checked for it.")
    return found


def _models(models: dict) -> list[str]:
    found = []
    for name in models["mixed"]:
        versions = ", ".join(f"{m['version']} ({m['sha256'][:12]}, {m['results']} results)"
                             for m in models["models"] if m["name"] == name)  # fmt: skip
        found.append(f"MIXED MODEL VERSIONS: {name} produced these results in more than one version ({versions}); "
                     "the figures pool them.")  # fmt: skip
    missing = [f"{m['name']} {m['version']}" for m in models["models"] if m["card"] is None]
    if missing:
        found.append("No model card found for " + ", ".join(missing) + " (give --models-dir).")
    if models["results_without_models"]:
        found.append(f"{models['results_without_models']} results name no model: their model identity is unknown.")
    return found


def _small(discrimination: dict) -> list[str]:
    small = [c for c in CLASS_CODES if (discrimination[c]["note"] or "").startswith(TOO_SMALL)]
    if not small:
        return []
    return [f"{len(small)} of {len(CLASS_CODES)} classes have too few cases for figures ({', '.join(small)}): "
            f"shown as '{TOO_SMALL}'."]  # fmt: skip


def warnings(report: dict) -> list[str]:
    """Training overlap, mixed or unidentified models, missing cards and classes below the minimum count."""
    return _overlap(report["training_overlap"]) + _models(report["models"]) + _small(report["discrimination"])
