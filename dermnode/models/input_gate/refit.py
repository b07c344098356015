"""`dermnode train input-gate`: the feature gates of trained classifier weights, fitted again.

A new gate recipe (the early stages' style statistics beside the pooled features, since 0.7.1) needs
no new networks. Each network's gate is fitted on the images of the weights' own split (split.json),
prepared as the network saw them in training (the data folder's expert masks where present, else the
starter segmenter's); an ensemble's limits are then scaled together to the false-refusal budget on its
validation images, as `dermnode train classifier-ensemble` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dermnode.models.classifier.ensemble import scale_gates_to_budget
from dermnode.models.classifier.fit import cache_file, cached_images, predicted_masks, split_cache, training_records
from dermnode.models.classifier.gates import fit_feature_gate, gate_note
from dermnode.models.classifier.predict import FusionClassifier
from dermnode.models.dataset_index import SPLIT_FILE, Split, load_records, one_row_per_image


def refit_gates(weights_dir: Path, data_dir: Path, work_dir: Path, out_dir: Path, version: str | None = None,
                progress: bool = True) -> FusionClassifier:
    """The classifier of ``weights_dir`` with every network's feature gate fitted again, written to ``out_dir``
    (which may be ``weights_dir``) with the card's ``version`` (None: unchanged). ValueError when the data
    folder lacks images of the weights' split."""
    weights_dir, out_dir, work_dir = Path(weights_dir), Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    model = FusionClassifier.load(weights_dir, device="cpu")
    card = model.card
    split = Split.load(weights_dir / SPLIT_FILE)
    ids = set(split.train_ids) | set(split.validation_ids)
    records = [r for r in training_records(data_dir, card.extra.get("left_out_source")) if r.image_id in ids]
    if len(records) != len(ids):
        raise ValueError(f"{len(ids) - len(records)} images of the split in {weights_dir} are not labelled images "
                         f"of {data_dir}")
    config = model.net.config
    warm = cache_file(config, "expert", work_dir).is_file()  # a warm work directory needs no segmenter
    cache = cached_images(records, config, "expert", work_dir, {} if warm else predicted_masks(records, work_dir))
    if set(cache.image_ids) != ids:
        raise ValueError(f"{work_dir} holds a cache of other images: give an empty work directory")
    train, val = split_cache(cache, split)
    model.gates = [fit_feature_gate(net, train, val) for net in model.members]
    if len(model.members) == 1:
        card.extra["input_gate"] = gate_note(model.gates[0])
    else:
        validation = split.validation(one_row_per_image(load_records(data_dir)))
        card.extra["input_gate"] = scale_gates_to_budget(model, validation, [gate_note(g) for g in model.gates], progress)
    card.version = version or card.version
    model.save(out_dir, card)
    if out_dir.resolve() != weights_dir.resolve():
        shutil.copyfile(weights_dir / SPLIT_FILE, out_dir / SPLIT_FILE)
    return model
