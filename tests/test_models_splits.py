"""Splits by lesion and the leave-one-source-out partition, on the real data folder's index."""

from __future__ import annotations

import pytest

from dermnode.models.dataset_index import (
    leave_source_out,
    load_records,
    one_row_per_image,
    source_weights,
    split_by_lesion,
    training_images,
)
from peers import shared_data


@pytest.fixture(scope="module")
def records():
    return load_records(shared_data())


def test_split_by_lesion_keeps_every_lesion_on_one_side(records):
    split = split_by_lesion(records=records)
    train, val = set(split.train_ids), set(split.validation_ids)
    assert not train & val and 0.15 < len(val) / (len(train) + len(val)) < 0.25
    side: dict[str, set[bool]] = {}
    for record in records:
        if record.lesion_id:
            side.setdefault(record.lesion_id, set()).add(record.image_id in val)
    assert sum(len(s) > 1 for s in side.values()) == 0
    assert sum(1 for r in records if r.lesion_id) > 0.8 * len(records)  # the data has lesion ids
    assert split_by_lesion(records=records) == split  # seeded


def test_leave_one_source_out_shares_no_image_or_lesion(records):
    for source in ("ham10000", "isic-8class", "isic2018-task1"):
        train, test = leave_source_out(records, source)
        assert test and train and {r.source for r in test} == {source}
        assert not {r.image_id for r in train} & {r.image_id for r in test}
        assert not {r.lesion_id for r in train if r.lesion_id} & {r.lesion_id for r in test if r.lesion_id}
    with pytest.raises(ValueError, match="no image of source"):
        leave_source_out(records, "elsewhere")


def test_a_left_out_source_trains_no_image_filed_in_two_collections(records):
    """`evaluate --source S` takes every image filed under S; none of them may be among the training images,
    even when its other collection's row (with an expert mask) is the one kept."""
    for source in ("ham10000", "isic-8class", "isic2018-task1"):
        tested = {r.image_id for r in records if r.source == source}
        trained = training_images(records, source)
        assert trained and not tested & {r.image_id for r in trained}
        assert len({r.image_id for r in trained}) == len(trained)
    assert len(training_images(records)) == len({r.image_id for r in records})


def test_one_row_per_image_prefers_the_row_with_a_mask(records):
    once = one_row_per_image(records)
    assert len({r.image_id for r in once}) == len(once) < len(records)
    with_mask = {r.image_id for r in records if r.mask_path is not None}
    assert all(r.mask_path is not None for r in once if r.image_id in with_mask)


def test_source_weights_give_sources_a_share_between_their_size_and_an_equal_one():
    sources = ["ham10000"] * 9 + ["isic2018-task1"]
    share = lambda weights: weights[9] / weights.sum()  # noqa: E731
    assert share(source_weights(sources, 1.0)) == pytest.approx(0.5)
    assert share(source_weights(sources, 0.0)) == pytest.approx(0.1)
    assert share(source_weights(sources, 0.5)) == pytest.approx(1 / (1 + 9 ** 0.5))
