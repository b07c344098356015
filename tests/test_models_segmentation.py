"""Lesion segmentation: metrics, post-processing, training steps, prediction and the CLI on real data."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.contract import PatientMetadata
from dermnode.models.dataset_index import ImageRecord, source_weights
from dermnode.models.images import load_mask, load_rgb, resize_mask, resize_rgb
from dermnode.models.metrics.segmentation import dice, false_corner, jaccard, summarise, thresholded_jaccard
from dermnode.models.model_card import ModelCard
from dermnode.models.segmentation.predict import STARTER, LesionSegmenter, best_component
from dermnode.models.segmentation.net import PROFILES, build_network, normalise
from dermnode.models.segmentation.train import training_step, unet_loss

DATA = Path(os.environ.get("DERMNODE_TEST_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
TASK1 = DATA / "isic2018-task1"


def real_ids(n: int) -> list[str]:
    if not (TASK1 / "images").is_dir():
        pytest.skip(f"ISIC data not found at {DATA} (set DERMNODE_TEST_DATA)")
    return [p.stem for p in sorted((TASK1 / "images").glob("ISIC_*.jpg"))[:n]]


def real_batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = real_ids(n)
    images = np.stack([resize_rgb(load_rgb(TASK1 / "images" / f"{i}.jpg"), (size, size)) for i in ids])
    masks = np.stack([resize_mask(load_mask(TASK1 / "masks" / f"{i}_segmentation.png"), (size, size)) for i in ids])
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(masks)[:, None].to(torch.uint8)


def test_metrics_match_hand_computed_cases():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True  # 4 pixels
    prediction = np.zeros((4, 4), bool)
    prediction[:2, 1:3] = True  # 4 pixels, 2 shared
    assert dice(prediction, truth) == pytest.approx(2 * 2 / 8)
    assert jaccard(prediction, truth) == pytest.approx(2 / 6)
    assert dice(None, truth) == 0.0 and jaccard(None, truth) == 0.0
    assert dice(truth, truth) == 1.0
    assert thresholded_jaccard(0.64) == 0.0 and thresholded_jaccard(0.7) == 0.7
    summary = summarise([1.0, 0.5], [1.0, 0.6], n_no_lesion=1)
    assert summary == {"n": 2, "dice_mean": 0.75, "dice_median": 0.75, "jaccard_mean": 0.8,
                       "thresholded_jaccard": 0.5, "n_no_lesion": 1}
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3), bool), truth)


def test_a_corner_segmented_that_the_expert_left_out_is_counted():
    truth = np.zeros((100, 120), bool)
    truth[30:70, 40:80] = True
    vignette = truth.copy()
    vignette[95:, :5] = True  # the bottom-left corner square (5 px) taken for lesion
    assert not false_corner(truth, truth) and not false_corner(None, truth)
    assert false_corner(vignette, truth)
    edge_to_edge = np.ones_like(truth)  # the expert's lesion fills the image: its corners are lesion too
    assert not false_corner(edge_to_edge, edge_to_edge)
    summary = summarise([0.9, 0.8], [0.8, 0.7], false_corners=[True, False])
    assert summary["false_corner_rate"] == 0.5


def test_best_component_fills_holes_and_reports_no_lesion():
    prob = np.zeros((100, 100), np.float32)
    mask, confidence = best_component(prob)
    assert mask is None and confidence == 0.0
    prob[10:50, 10:50] = 0.9
    prob[25:35, 25:35] = 0.1  # a hole inside the lesion
    prob[70:75, 70:75] = 0.95  # a small bright speck elsewhere
    mask, confidence = best_component(prob)
    assert mask.sum() == 40 * 40  # the big component, hole filled, speck dropped
    assert not mask[72, 72]
    assert 0.5 < confidence <= 1.0


@pytest.fixture
def one_thread():
    """Small tensors train fastest on one thread (and do not fight other jobs for the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_steps_on_real_images_lower_the_loss(one_thread):
    torch.manual_seed(0)
    profile = replace(PROFILES["cpu"], input_size=64)
    images, masks = real_batch(6, profile.input_size)
    model = build_network(profile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def loss() -> float:
        with torch.no_grad():
            return float(unet_loss(model(normalise(images)), masks.float()))

    before = loss()
    for _ in range(12):
        training_step(model, profile, images, masks, optimizer, generator, torch.device("cpu"))
    assert loss() < before - 0.05


def test_paper_profile_mask_rcnn_trains_and_predicts(one_thread):
    torch.manual_seed(0)
    profile = replace(PROFILES["paper"], input_size=128)
    images, masks = real_batch(2, profile.input_size)
    model = build_network(profile)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    value = training_step(model, profile, images, masks, optimizer, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert np.isfinite(value) and value > 0
    card = ModelCard("test", "0", profile.architecture, profile.name, "w.pt")
    segmenter = LesionSegmenter(model, profile, card, torch.device("cpu"))
    results = segmenter.predict([load_rgb(TASK1 / "images" / f"{real_ids(1)[0]}.jpg")])
    assert len(results) == 1 and 0.0 <= results[0].confidence <= 1.0
    assert results[0].mask is None or results[0].mask.shape == (512, 512)


@pytest.fixture(scope="module")
def starter() -> LesionSegmenter:
    if not (STARTER / "model_card.json").is_file():
        pytest.fail("starter segmentation weights missing from the package")
    return LesionSegmenter.load()


def test_starter_prediction_overlaps_the_expert_mask(starter):
    ids = real_ids(3)
    image = load_rgb(TASK1 / "images" / f"{ids[0]}.jpg")
    rectangular = np.ascontiguousarray(image[:, :400])  # any size in, source size out
    results = starter.predict([image, rectangular])
    truth = load_mask(TASK1 / "masks" / f"{ids[0]}_segmentation.png")
    assert results[0].mask.shape == truth.shape and results[0].mask.dtype == bool
    assert dice(results[0].mask, truth) > 0.6
    assert 0.5 <= results[0].confidence <= 1.0
    assert results[1].mask is None or results[1].mask.shape == (512, 400)
    assert starter.identity.name == "dermnode-lesion-segmentation"
    assert starter.identity.sha256 == ModelCard.load(STARTER).weights_sha256


def test_bad_input_is_rejected(starter):
    with pytest.raises(ValueError):
        starter.predict([np.zeros((10,), np.uint8)])


def tiny_data_folder(root: Path, n: int) -> Path:
    """A data folder laid out like ../shared/data with n real task-1 images (symlinked)."""
    ids = real_ids(n)
    for sub in ("images", "masks"):
        (root / "isic2018-task1" / sub).mkdir(parents=True)
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "collection", "diagnosis"])
        for image_id in ids:
            writer.writerow([image_id, "isic2018-task1", "NV"])
            (root / "isic2018-task1" / "images" / f"{image_id}.jpg").symlink_to(TASK1 / "images" / f"{image_id}.jpg")
            mask = f"{image_id}_segmentation.png"
            (root / "isic2018-task1" / "masks" / mask).symlink_to(TASK1 / "masks" / mask)
    return root


def test_cli_evaluate_writes_metrics_and_sheet(tmp_path, starter):
    data = tiny_data_folder(tmp_path / "data", 3)
    result = CliRunner().invoke(app, ["evaluate", "segmentation", "--data", str(data), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3
    for key in ("dice_mean", "jaccard_mean", "thresholded_jaccard", "false_corner_rate"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["model"]["sha256"] == starter.identity.sha256
    assert (tmp_path / "eval" / "overlays_worst_best.png").stat().st_size > 1000


def test_cli_train_checkpoints_and_resumes(tmp_path, one_thread):
    data = tiny_data_folder(tmp_path / "data", 5)
    out = tmp_path / "model"
    runner = CliRunner()
    args = ["train", "segmentation", "--data", str(data), "--profile", "cpu", "--out", str(out), "--epochs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out)
    assert card.name == "dermnode-lesion-segmentation" and card.profile == "cpu"
    assert "CC BY-NC" in card.licence and card.metrics["epochs_done"] == 1
    assert (out / "split.json").is_file() and (out / "checkpoint.pt").is_file()
    assert "dice_mean" in card.metrics  # the validation split was evaluated at the end
    result = runner.invoke(app, [*args[:-1], "2", "--resume"])
    assert result.exit_code == 0, result.output
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert LesionSegmenter.load(out).predict([load_rgb(TASK1 / "images" / f"{real_ids(1)[0]}.jpg")])


def test_balanced_sampling_gives_every_source_the_same_share() -> None:
    def record(i: int, collection: str, lesion: str | None) -> ImageRecord:
        return ImageRecord(f"ISIC_{i:07d}", collection, Path("x.jpg"), Path("m.png"), "NV", PatientMetadata(), lesion)

    records = [record(i, "ham10000", f"HAM_{i}") for i in range(6)] + [record(9, "isic2018-task1", None)]
    weights = torch.from_numpy(source_weights([r.source for r in records]))
    assert weights[:6].sum().item() == pytest.approx(weights[6].item())
    drawn = torch.multinomial(weights, 7000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert 0.45 < (drawn == 6).float().mean().item() < 0.55  # the single ISIC 2018 image: half of every epoch
