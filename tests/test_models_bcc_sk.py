"""BCC-versus-SK CLIP model: the CoOp path, profiles, save/load/predict, attention map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermnode.models.bcc_sk.predict import BccSkModel
from dermnode.models.bcc_sk.net import PRETRAINED_ENV, BccSkNet, build_clip
from dermnode.models.bcc_sk.train import (
    BccSkSettings,
    bcc_sk_subset,
    coop_optimizer,
    coop_step,
    train_encoders,
    train_prompts,
)
from dermnode.models.classifier.data import build_cache
from dermnode.models.dataset_index import load_records
from dermnode.models.model_card import STARTER_DIR, ModelCard
from peers import shared_data, small_data_folder


def test_coop_step_on_vit_b16_changes_only_context_and_probe():
    torch.manual_seed(0)
    net = BccSkNet(build_clip("paper", pretrained=False), n_ctx=4)
    assert net.image_size == 224
    before = {name: value.detach().clone() for name, value in net.state_dict().items()}
    optimizer = coop_optimizer(net)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"ctx", "probe.weight", "probe.bias"}
    net.eval()
    rgb = torch.rand(2, 3, 224, 224)
    loss = coop_step(net, net.encode_image(rgb), torch.tensor([0, 1]), optimizer)
    assert np.isfinite(loss)
    after = net.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"ctx", "probe.weight", "probe.bias"}
    assert all(p.grad is None for p in net.clip.parameters())


def test_paper_profile_without_weights_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=PRETRAINED_ENV):
        build_clip("paper")
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_clip("paper")
    with pytest.raises(ValueError, match="unknown"):
        build_clip("huge")


@pytest.fixture(scope="module")
def bcc_sk_images():
    records = [r for r in load_records(shared_data()) if r.diagnosis in ("BCC", "BKL")]
    chosen = [r for r in records if r.diagnosis == "BCC"][:4] + [r for r in records if r.diagnosis == "BKL"][:4]
    return chosen, build_cache(chosen, 128, progress=False)


def test_cpu_encoders_learn_in_a_few_steps(bcc_sk_images):
    from dermnode.models.classifier.train import to_tensors

    _, cache = bcc_sk_images
    subset, targets = bcc_sk_subset(cache)
    assert targets.tolist() == [0] * 4 + [1] * 4  # 0 = BCC, 1 = SK (BKL)
    torch.manual_seed(0)
    net = BccSkNet(build_clip("cpu"))
    optimizer = torch.optim.Adam(net.clip.parameters(), lr=2e-3)
    rgb, _ = to_tensors(subset, np.arange(len(targets)), net.image_size)
    y = torch.from_numpy(targets)
    losses = []
    net.train()
    for _ in range(6):
        text = torch.nn.functional.normalize(net.encode_prompts(None), dim=-1)
        image = torch.nn.functional.normalize(net.encode_image(rgb), dim=-1)
        loss = torch.nn.functional.cross_entropy(net.clip.logit_scale.exp() * image @ text.T, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_both_training_stages_run_where_the_network_is(bcc_sk_images, tmp_path):
    _, cache = bcc_sk_images
    subset, targets = bcc_sk_subset(cache)
    torch.manual_seed(0)
    net = BccSkNet(build_clip("cpu"))
    settings = BccSkSettings(encoder_epochs=1, coop_epochs=2, views=2, batch_size=4)
    train_encoders(net, subset, targets, settings, tmp_path, progress=False)
    assert torch.load(tmp_path / "bcc_sk_stage_a.pt", weights_only=False)["epoch"] == 1
    ctx = net.ctx.detach().clone()
    assert np.isfinite(train_prompts(net, subset, targets, settings))
    assert not torch.equal(ctx, net.ctx.detach())


def test_save_load_predict_and_attention_map(bcc_sk_images, tmp_path):
    from dermnode.models.images import load_rgb

    records, _ = bcc_sk_images
    card = ModelCard("dermnode-bcc-sk-clip", "test", "test", "cpu", "bcc_sk.pt")
    BccSkModel(BccSkNet(build_clip("cpu")), card).save(tmp_path, card)
    model = BccSkModel.load(tmp_path, device="cpu")
    assert model.identity.name == "dermnode-bcc-sk-clip"
    images = [load_rgb(r.image_path) for r in records[:3]] + [np.zeros((30, 90, 3), np.uint8)]
    scores = model.predict(images)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert model.predict([]) == []
    cam = model.attention_map(images[0])
    assert cam.shape == images[0].shape[:2] and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0


@pytest.mark.skipif(not (STARTER_DIR / "bcc_sk" / "model_card.json").is_file(), reason="no starter BCC/SK model yet")
def test_starter_model_card_and_prediction(bcc_sk_images):
    from dermnode.models.images import load_rgb

    model = BccSkModel.load()
    assert "CC BY-NC" in model.card.licence
    assert "from scratch" in model.card.extra["encoders"] and "BKL" in model.card.training_data
    records, _ = bcc_sk_images
    scores = model.predict([load_rgb(r.image_path) for r in records])
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.skipif(not (STARTER_DIR / "bcc_sk" / "model_card.json").is_file(), reason="no starter BCC/SK model yet")
def test_evaluate_bcc_sk_command_writes_metrics(bcc_sk_images, tmp_path):
    import json

    from typer.testing import CliRunner

    from dermnode.cli import app

    records, _ = bcc_sk_images
    small_data_folder(tmp_path, records)
    result = CliRunner().invoke(app, ["evaluate", "bcc-sk", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--subset", "all"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 8 and 0.0 <= metrics["auroc"] <= 1.0
    assert {"sensitivity", "specificity"} <= set(metrics)
    assert (tmp_path / "out" / "roc.png").is_file() and (tmp_path / "out" / "attention.png").is_file()
