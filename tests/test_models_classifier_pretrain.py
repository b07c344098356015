"""Self-supervised pretraining of the classifier's image branch: loss, views, resume, save/load, `--init-from`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.models.classifier.data import build_cache
from dermnode.models.classifier.net import ClassifierConfig, ImageBranch
from dermnode.models.classifier.pretrain import (
    NAME,
    PretrainSettings,
    TooFewImages,
    load_pretrained,
    nt_xent,
    pretrain_image_branch,
    random_resized_crops,
    save_pretrained,
)
from dermnode.models.classifier.train import TrainSettings
from dermnode.models.dataset_index import load_records
from dermnode.models.model_card import ModelCard
from peers import shared_data, small_data_folder

SMALL = ClassifierConfig(image_size=64, widths=(8, 16, 32, 32))


@pytest.fixture(scope="module")
def labelled_with_masks():
    records = [r for r in load_records(shared_data()) if r.diagnosis is not None and r.mask_path is not None]
    return records[:12]


@pytest.fixture(scope="module")
def small_cache(labelled_with_masks):
    return build_cache(labelled_with_masks, 64, progress=False)


def test_nt_xent_is_low_when_each_view_finds_its_partner_and_high_when_partners_are_shuffled():
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    matched, found = nt_xent(z, z + 0.01 * torch.randn(16, 32), 0.2)
    shuffled, found_shuffled = nt_xent(z, z[torch.roll(torch.arange(16), 1)], 0.2)
    assert found == 1.0 and found_shuffled == 0.0
    assert matched.item() < 0.5 < shuffled.item()
    expected = torch.log(torch.tensor(31.0))  # all 31 others alike: the loss is log(2N - 1)
    assert nt_xent(torch.ones(16, 4), torch.ones(16, 4), 0.2)[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_random_resized_crops_differ_per_image_and_keep_the_mask_binary():
    rgb = torch.rand(1, 3, 32, 32).repeat(6, 1, 1, 1)
    mask = (torch.rand(1, 1, 32, 32) > 0.5).float().repeat(6, 1, 1, 1)
    crops, masks = random_resized_crops(rgb, mask, torch.Generator().manual_seed(2), 0.35)
    assert crops.shape == rgb.shape and masks.shape == mask.shape
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert all(not torch.allclose(crops[0], crops[i]) for i in range(1, 6))  # one draw per image, not per batch
    same, _ = random_resized_crops(rgb, mask, torch.Generator().manual_seed(2), 1.0)
    assert same.shape == rgb.shape


def test_pretraining_changes_the_branch_reports_its_figures_and_resumes_to_the_same_weights(small_cache, tmp_path):
    settings = PretrainSettings(epochs=2, batch_size=4)
    untrained = ImageBranch(SMALL).state_dict()

    def run():
        return pretrain_image_branch(SMALL, small_cache, settings, tmp_path, progress=False)

    branch, figures = run()
    assert figures["epochs"] == 2 and figures["loss"] > 0 and 0.0 <= figures["partner_found"] <= 1.0
    trained = branch.state_dict()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained if trained[k].is_floating_point())
    assert torch.load(tmp_path / "pretrain.pt", weights_only=False)["epoch"] == 2
    resumed, again = run()  # a restarted run finds both epochs done and keeps their weights and figures
    assert again == figures and all(torch.equal(v, resumed.state_dict()[k]) for k, v in trained.items())
    with pytest.raises(TooFewImages, match="too few"):
        pretrain_image_branch(SMALL, small_cache.subset(np.arange(7)), settings, tmp_path / "few", progress=False)


def test_a_saved_branch_loads_only_into_a_network_it_fits(tmp_path):
    branch = ImageBranch(SMALL)
    save_pretrained(tmp_path, branch, SMALL, ModelCard(NAME, "0.1.0", "SimCLR", "cpu", "image_branch.pt"))
    weights, card = load_pretrained(tmp_path, SMALL)
    assert card.extra["config"]["image_size"] == 64
    assert all(torch.equal(weights[k], v) for k, v in branch.state_dict().items())
    load_pretrained(tmp_path, replace(SMALL, image_size=128))  # a convolutional branch fits any input size
    for other, said in ((ClassifierConfig(image_size=64, widths=(16, 16, 32, 32)), "widths"),
                        (ClassifierConfig(image_size=64, widths=SMALL.widths, blocks=(2, 2, 2, 2)), "blocks"),
                        (ClassifierConfig(image_size=64, widths=SMALL.widths, colour_constancy=True), "colour_constancy")):
        with pytest.raises(ValueError, match=said):
            load_pretrained(tmp_path, other)
    (tmp_path / "image_branch.pt").write_bytes(b"not these weights")
    with pytest.raises(ValueError, match="sha256"):
        load_pretrained(tmp_path, SMALL)


def test_a_classifier_starts_from_the_pretrained_branch(small_cache, tmp_path):
    from dermnode.models.classifier.fit import fit

    start = ImageBranch(SMALL)
    torch.nn.init.constant_(start.backbone.stem[0].weight, 0.01)
    settings = TrainSettings(epochs=0, finetune_epochs=0, head_epochs=1, batch_size=4)
    radiomics = torch.zeros((len(small_cache.labels), 10))
    net, _ = fit(small_cache, small_cache, radiomics, radiomics, SMALL, settings, tmp_path, init=start.state_dict())
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in net.image.state_dict().items())


def test_pretrain_command_writes_a_branch_that_train_classifier_refuses_for_other_inputs(labelled_with_masks, tmp_path):
    data, out = tmp_path / "data", tmp_path / "pretrained"
    data.mkdir()
    small_data_folder(data, labelled_with_masks)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "classifier-pretrain", "--data", str(data), "--out", str(out), "--work",
                                 str(tmp_path / "work"), "--epochs", "1", "--batch-size", "4", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    card = ModelCard.load(out)
    assert card.name == NAME and card.metrics["last_epoch"]["epochs"] == 1 and card.split_ids["train"]
    assert "labels unread" in card.training_data and "CC BY-NC" in card.licence
    assert '"partner_found"' in result.output  # the last epoch's figures are printed
    few = tmp_path / "few"
    result = runner.invoke(app, ["train", "classifier-pretrain", "--data", str(data), "--out", str(tmp_path / "none"),
                                 "--work", str(few), "--batch-size", "1000"])
    assert result.exit_code == 2 and "too few for batches of 1000" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "none").exists() and not list(few.iterdir()), "refused before any image was read"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.csv").write_text("image_id,collection,diagnosis\n")
    result = runner.invoke(app, ["train", "classifier", "--data", str(tmp_path / "empty"), "--out",
                                 str(tmp_path / "classifier"), "--init-from", str(out), "--no-colour-constancy"])
    assert result.exit_code == 2 and "colour_constancy True (not False)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "classifier").exists()
