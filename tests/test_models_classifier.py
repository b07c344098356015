"""Fusion classifier: veto, inputs, training steps, save/load/predict, evaluation metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dermnode.contract import CLASS_CODES, PatientMetadata
from dermnode.models.classifier.predict import (
    FUSED_PLAIN, FUSED_TTA, IMAGE_TTA, SELECTION_FILE, FusionClassifier, is_malignant, radiomics_vector,
)
from dermnode.models.classifier.data import METADATA_FIELDS, build_cache, encode_metadata, square_image, square_mask
from dermnode.models.classifier.evaluate import ChainOutputs, classification_metrics
from dermnode.models.classifier.net import ClassifierConfig, FusionNet
from dermnode.models.classifier.train import (
    TrainSettings,
    augment,
    class_weights,
    mix_pairs,
    stage1_loss,
    to_tensors,
    train_image_branch,
)
from dermnode.models.dataset_index import load_records
from dermnode.models.model_card import STARTER_DIR, ModelCard
from dermnode.models.radiomics import FeatureSelection
from peers import shared_data


def probabilities(**values: float) -> dict[str, float]:
    out = dict.fromkeys(CLASS_CODES, 0.0)
    out.update(values)
    out["NV"] += 1.0 - sum(out.values())
    return out


def test_veto_fires_at_threshold_whatever_the_top_class():
    benign_top = probabilities(MEL=0.1, BCC=0.1, AK=0.05, SCC=0.05)  # NV is top with 0.7
    assert max(benign_top, key=benign_top.get) == "NV"
    assert is_malignant(benign_top)  # 0.3 is "at or above"
    assert not is_malignant(probabilities(MEL=0.29))
    assert is_malignant(probabilities(MEL=0.29), threshold=0.25)
    assert not is_malignant(probabilities(BKL=0.9))


def test_metadata_encoding_marks_missing_fields():
    full = encode_metadata(PatientMetadata(age=45, sex="female", anatomic_site="head/neck"))
    named = dict(zip(METADATA_FIELDS, full))
    assert named["age"] == pytest.approx(0.5) and named["sex_female"] == 1 and named["site=head/neck"] == 1
    assert named["age_missing"] == named["sex_missing"] == named["site_missing"] == 0
    empty = dict(zip(METADATA_FIELDS, encode_metadata(PatientMetadata())))
    assert empty["age_missing"] == empty["sex_missing"] == empty["site_missing"] == 1
    assert sum(empty.values()) == 3
    odd = dict(zip(METADATA_FIELDS, encode_metadata(PatientMetadata(age=float("nan"), anatomic_site="trunk"))))
    assert odd["age_missing"] == 1 and odd["site_missing"] == 1  # "trunk" names no one ISIC site: missing


@pytest.mark.parametrize(
    ("site", "expected"),
    [("lower limbs", "lower extremity"), ("Head Neck", "head/neck"), ("back", "posterior torso"),
     ("acral", "palms/soles"), ("upper_extremity", "upper extremity"), ("head/neck", "head/neck"),
     ("trunk", None), ("unknown", None), ("", None), (None, None)],
)
def test_sites_of_other_vocabularies_map_onto_isic_or_missing(site, expected):
    from dermnode.models.classifier.data import normalise_site

    assert normalise_site(site) == expected


def test_metadata_dropout_hides_fields_with_their_missing_flags():
    from dermnode.models.classifier.train import drop_metadata

    full = torch.from_numpy(np.stack([encode_metadata(PatientMetadata(60, "female", "back"))] * 400))
    dropped = drop_metadata(full, 0.3, torch.Generator().manual_seed(0))
    named = {name: dropped[:, i] for i, name in enumerate(METADATA_FIELDS)}
    hidden_age = named["age_missing"] == 1
    assert 0.3 < hidden_age.float().mean() < 0.7 and (named["age"][hidden_age] == 0).all()
    hidden_site = named["site_missing"] == 1
    assert (named["site=posterior torso"][hidden_site] == 0).all() and (named["site=posterior torso"][~hidden_site] == 1).all()
    assert ((named["age_missing"] + named["sex_missing"] + named["site_missing"]) == 3).float().mean() > 0.25
    assert torch.equal(drop_metadata(full, 0.0, torch.Generator()), full)


def test_temperature_scaling_softens_overconfident_logits():
    from dermnode.models.classifier.calibration import fit_temperature

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (400,), generator=generator)
    clean = torch.nn.functional.one_hot(labels, 8).float() * 2.0 + torch.randn(400, 8, generator=generator)
    loud, plain = fit_temperature(clean * 5.0, labels), fit_temperature(clean, labels)
    assert loud > 2.0  # overconfident logits get a large temperature
    assert loud == pytest.approx(5.0 * plain, rel=0.05)  # the same calibrated probabilities


def test_malignancy_scaling_calibrates_without_reordering_cases():
    from dermnode.models.classifier.calibration import (
        MALIGNANT_COLUMNS, NO_SCALING, fit_malignancy_scaling, malignant_logit, scale_malignancy)
    from dermnode.models.metrics.calibration import expected_calibration_error

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (600,), generator=generator)
    truth = MALIGNANT_COLUMNS[labels].numpy().astype(int)
    logits = torch.nn.functional.one_hot(labels, 8).float() * 1.5 + torch.randn(600, 8, generator=generator)
    loud = torch.softmax(logits * 4.0, dim=1)  # overconfident
    scaling = fit_malignancy_scaling(loud, labels)
    assert 0.05 <= scaling[0] < 0.6  # the overconfident logit is shrunk
    scaled = scale_malignancy(loud, scaling)
    assert torch.allclose(scaled.sum(1), torch.ones(600), atol=1e-5)
    before, after = malignant_logit(loud), malignant_logit(scaled)
    assert torch.equal(torch.argsort(before), torch.argsort(after))  # the ranking on malignancy is kept
    malignant = MALIGNANT_COLUMNS
    share = lambda p, group: p[:, group] / p[:, group].sum(1, keepdim=True)  # noqa: E731
    assert torch.allclose(share(loud, malignant), share(scaled, malignant), atol=1e-4)
    assert torch.allclose(share(loud, ~malignant), share(scaled, ~malignant), atol=1e-4)
    ece = lambda p: expected_calibration_error(truth, torch.sigmoid(malignant_logit(p)).numpy())  # noqa: E731
    assert ece(scaled) < 0.5 * ece(loud)
    assert scale_malignancy(loud, NO_SCALING) is loud
    assert fit_malignancy_scaling(loud, torch.zeros(600, dtype=torch.long)) == NO_SCALING  # only benign: nothing to fit


def test_temperature_of_weak_separating_logits_reaches_its_bound_and_stays_finite():
    from dermnode.models.classifier.calibration import fit_temperature

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (54,), generator=generator)
    for scale in (0.02, 0.1, 0.3):  # a weakly trained head on a small validation split: the NLL is flat at T = 1
        weak = torch.nn.functional.one_hot(labels, 8).float() * scale + 0.01 * torch.randn(54, 8, generator=generator)
        assert fit_temperature(weak, labels) == pytest.approx(0.05)  # separable: as sharp as allowed


def test_lesion_crop_and_colour_constancy():
    from dermnode.models.classifier.data import lesion_box, prepare_pair, shades_of_gray

    image = np.full((300, 400, 3), (200, 150, 120), np.uint8)  # a warm cast
    mask = np.zeros((300, 400), bool)
    mask[100:160, 200:260] = True
    image[mask] = (90, 50, 40)
    top, bottom, left, right = lesion_box(mask, mask.shape, 0.2)
    assert bottom - top == right - left and top <= 100 and bottom >= 160 and left <= 200 and right >= 260
    assert (bottom - top) < 120  # much tighter than the whole image
    rgb, small = prepare_pair(image, mask, 64, colour_constancy=True, crop_margin=0.2)
    assert rgb.shape == (64, 64, 3) and 0.3 < small.mean() < 0.7
    background = shades_of_gray(image)[0, 0].astype(int)
    assert max(background) - min(background) < 60  # the cast is mostly gone (was 80)
    assert lesion_box(None, mask.shape, 0.2) == (0, 300, 0, 400)
    assert lesion_box(mask, mask.shape, 0.0) == (0, 300, 0, 400)


def test_square_inputs_accept_any_size_and_no_mask():
    image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    assert square_image(image, 128).shape == (128, 128, 3)
    assert square_image(image[..., 0], 64).shape == (64, 64, 3)
    mask = np.zeros((300, 200), bool)
    mask[100:200, 50:150] = True
    small = square_mask(mask, 128)
    assert small.dtype == bool and 0.1 < small.mean() < 0.25
    assert not square_mask(None, 128).any()


def test_class_weights_favour_rare_classes():
    weights = class_weights(np.array([0] * 90 + [1] * 10))
    assert weights[1] > weights[0] > 0 and weights[2:].sum() == 0


@pytest.fixture(scope="module")
def small_cache():
    records = [r for r in load_records(shared_data()) if r.diagnosis is not None]
    chosen = [next(r for r in records if r.diagnosis == code and r.mask_path is not None) for code in ("NV", "MEL", "BKL")]
    chosen += [next(r for r in records if r.diagnosis == code) for code in ("BCC", "AK", "SCC", "DF", "VASC")]
    return chosen, build_cache(chosen, 64, progress=False)


def test_a_few_training_steps_lower_the_loss(small_cache):
    _, cache = small_cache
    torch.manual_seed(0)
    net = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32)))
    optimizer = torch.optim.Adam(list(net.image.parameters()) + list(net.image_head.parameters()), lr=3e-3)
    rgb, mask = to_tensors(cache, np.arange(len(cache.labels)), 64)
    rgb, mask = augment(rgb, mask, torch.Generator().manual_seed(0), mask_dropout=0.3)
    labels = torch.from_numpy(cache.labels)
    losses = []
    net.train()
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(net.image_head(net.image(rgb, mask)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_stage1_loss_is_weighted_cross_entropy_plus_the_malignant_term():
    logits, labels = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 8
    weights = class_weights(np.array([0] * 50 + [1] * 10 + list(range(8))))
    targets = torch.nn.functional.one_hot(labels, 8).float()
    plain = torch.nn.functional.cross_entropy(logits, labels, weight=weights, label_smoothing=0.05)
    assert stage1_loss(logits, targets, weights, 0.0).item() == pytest.approx(plain.item(), rel=1e-5)
    malignant = torch.tensor([c in ("MEL", "BCC", "AK", "SCC") for c in CLASS_CODES])
    p_malignant = torch.softmax(logits, 1)[:, malignant].sum(1)
    binary = torch.nn.functional.binary_cross_entropy(p_malignant, malignant[labels].float())
    assert stage1_loss(logits, targets, weights, 0.5).item() == pytest.approx(plain.item() + 0.5 * binary.item(), rel=1e-4)


def test_mixup_blends_images_masks_and_labels_with_one_share():
    rgb, mask = torch.rand(8, 3, 16, 16), (torch.rand(8, 1, 16, 16) > 0.5).float()
    targets = torch.nn.functional.one_hot(torch.arange(8), 8).float()
    mixed_rgb, mixed_mask, mixed_targets = mix_pairs(rgb, mask, targets, 0.4, torch.Generator().manual_seed(3))
    share = mixed_targets.max(dim=1).values.min().item()  # every case keeps its own label's share (or its partner's)
    assert torch.allclose(mixed_targets.sum(1), torch.ones(8)) and 0.5 <= share <= 1.0
    assert not torch.equal(mixed_rgb, rgb) and mixed_mask.min() >= 0 and mixed_mask.max() <= 1


def test_stage1_with_mixup_mixstyle_source_balance_and_weight_averaging_resumes_to_the_same_weights(small_cache,
                                                                                                      tmp_path):
    _, cache = small_cache
    cache = replace(cache, sources=np.array(["ham10000"] * 6 + ["isic2018-task1"] * 2))  # two sources to balance
    settings = TrainSettings(epochs=2, batch_size=4, mixup=0.2, malignant_loss=0.5, ema=0.9, mixstyle=0.5,
                             source_balance=1.0)

    def stage1() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        net = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32)))
        train_image_branch(net, cache, settings, tmp_path, progress=False)
        return net.image.state_dict()

    untrained = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32))).image.state_dict()
    trained = stage1()
    checkpoint = torch.load(tmp_path / "stage1.pt", weights_only=False)
    assert checkpoint["epoch"] == 2 and "ema.n_averaged" in checkpoint["model"]
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)
    resumed = stage1()  # a restarted run finds every epoch done and ends with the same averaged weights
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)


def test_both_stages_fit_calibrate_and_answer_without_metadata_from_the_image_head(small_cache, tmp_path):
    from dermnode.models.classifier.fit import fit

    _, cache = small_cache
    settings = TrainSettings(epochs=1, finetune_epochs=1, head_epochs=2, batch_size=4, mixup=0.2, malignant_loss=0.5)
    radiomics = torch.zeros((len(cache.labels), 10))
    config = ClassifierConfig.for_profile("cpu", 9)
    net, probabilities = fit(cache, cache, radiomics, radiomics, config, settings, tmp_path, no_metadata_head="image")
    assert next(net.parameters()).device.type == "cpu" and net.config.no_metadata_head == "image"
    assert net.config.temperature > 0 and net.config.image_temperature == 1.0 and net.config.malignancy_scaling[0] > 0
    assert {"image", "image+metadata", "fused", "fused, no metadata"} <= set(probabilities)
    for probs in probabilities.values():
        assert probs.shape == (len(cache.labels), len(CLASS_CODES)) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_a_left_out_evaluation_is_recorded_in_the_shipped_card(tmp_path):
    from dermnode.models.command_options import record_left_out_metrics

    def weights(name: str, version: str) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "classifier.pt").write_bytes(name.encode())
        ModelCard("dermnode-fusion-classifier", version, "net", "cpu", "classifier.pt", training_data=name).save(tmp_path / name)
        return tmp_path / name

    shipped, left_out = weights("shipped", "1.0"), weights("without-isic-8class", "1.0-loso")
    metrics = {"n": 546, "model": {"name": "x"}, "headline": {"auroc_malignant_no_metadata": {"value": 0.8}},
               "per_class": {"MEL": {"n": 329, "auroc": 0.7}}}
    record_left_out_metrics(shipped, left_out, "isic-8class", metrics)
    entry = ModelCard.load(shipped).metrics["leave_one_source_out"]["isic-8class"]
    assert entry["n"] == 546 and entry["per_class_auroc"] == {"MEL": 0.7} and "model" not in entry
    assert entry["trained_without_it"]["version"] == "1.0-loso"
    assert entry["trained_without_it"]["sha256"] == ModelCard.load(left_out).weights_sha256
    plain = weights("without-colour-constancy", "1.0-loso-plain")
    record_left_out_metrics(shipped, plain, "isic-8class", metrics, choice="no colour constancy")
    card = ModelCard.load(shipped)
    choice = card.metrics["choices_on_the_left_out_source"]["isic-8class"]["no colour constancy"]
    assert choice["headline"] == metrics["headline"] and choice["trained_without_it"]["version"] == "1.0-loso-plain"
    assert choice["trained_without_it"]["image_branch_init"] == "random"  # no pretrained branch named in its card
    assert card.metrics["leave_one_source_out"]["isic-8class"]["trained_without_it"]["version"] == "1.0-loso"


@pytest.fixture(scope="module")
def saved_classifier(small_cache, tmp_path_factory):
    """An untrained network with a feature selection fitted on real radiomics, saved and reloaded."""
    from dermnode.models.images import load_mask, load_rgb
    from dermnode.models.radiomics import FeatureSelection, RadiomicsExtractor

    records, _ = small_cache
    with_masks = [r for r in records if r.mask_path is not None]
    extractor = RadiomicsExtractor()
    features = [extractor.extract(load_rgb(r.image_path), load_mask(r.mask_path)).features for r in with_masks]
    selection = FeatureSelection.fit(features, [r.diagnosis for r in with_masks], k=3)
    net = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32), n_radiomics=3))
    directory = tmp_path_factory.mktemp("classifier")
    card = ModelCard("dermnode-fusion-classifier", "test", "test network", "cpu", "classifier.pt")
    FusionClassifier(net, selection, card).save(directory, card)
    return directory, with_masks, features


def test_save_load_predict_gives_eight_probabilities(saved_classifier):
    from dermnode.models.images import load_mask, load_rgb

    directory, records, features = saved_classifier
    model = FusionClassifier.load(directory, device="cpu")
    assert model.identity.name == "dermnode-fusion-classifier" and len(model.identity.sha256) == 64
    assert len(model.selected_features) == 3
    images = [load_rgb(r.image_path) for r in records] + [np.full((40, 70, 3), 128, np.uint8)]
    masks = [load_mask(r.mask_path) for r in records] + [None]
    metadata = [r.metadata for r in records] + [PatientMetadata()]
    out = model.predict(images, masks, metadata, features + [None])
    assert len(out) == len(images)
    for probs in out:
        assert list(probs) == list(CLASS_CODES)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
    variants = model.predict_variants(images, masks, metadata, features + [None])
    assert set(variants) == {"fused", "image", "image+metadata", "image+metadata+radiomics", FUSED_PLAIN, FUSED_TTA,
                             IMAGE_TTA}
    np.testing.assert_allclose(variants["fused"], [[p[c] for c in CLASS_CODES] for p in out], atol=1e-5)


def test_flips_and_the_image_head_answer_as_configured(saved_classifier):
    """tta_views=4 gives the 4-flip average; no_metadata_head="image" answers only metadata-less cases."""
    from dataclasses import replace

    from dermnode.models.images import load_mask, load_rgb

    directory, records, features = saved_classifier
    model = FusionClassifier.load(directory, device="cpu")
    images = [load_rgb(r.image_path) for r in records]
    masks = [load_mask(r.mask_path) for r in records]
    metadata = [r.metadata for r in records[:-1]] + [PatientMetadata()]
    variants = model.predict_variants(images, masks, metadata, features)
    plain = model.predict(images, masks, metadata, features)
    np.testing.assert_allclose([[p[c] for c in CLASS_CODES] for p in plain], variants[FUSED_PLAIN], atol=1e-5)
    model.net.config = replace(model.net.config, tta_views=4)
    flipped = model.predict(images, masks, metadata, features)
    np.testing.assert_allclose([[p[c] for c in CLASS_CODES] for p in flipped], variants[FUSED_TTA], atol=1e-5)
    np.testing.assert_allclose(model.predict_variants(images, masks, metadata, features)["fused"], variants[FUSED_TTA],
                               atol=1e-5)
    assert not np.allclose([[p[c] for c in CLASS_CODES] for p in flipped], [[p[c] for c in CLASS_CODES] for p in plain])
    model.net.config = replace(model.net.config, tta_views=1, no_metadata_head="image", image_temperature=1.0)
    routed = model.predict(images, masks, metadata, features)
    np.testing.assert_allclose([routed[-1][c] for c in CLASS_CODES], variants["image"][-1], atol=1e-5)
    for before, after in zip(plain[:-1], routed[:-1]):
        assert before == pytest.approx(after, abs=1e-6)


def test_missing_radiomics_sets_the_flag(saved_classifier):
    directory, _, features = saved_classifier
    selection = FusionClassifier.load(directory, device="cpu").selection
    assert radiomics_vector(selection, None).tolist() == [0, 0, 0, 1]
    assert radiomics_vector(selection, features[0])[-1] == 0


def test_bad_inputs_are_refused_clearly(saved_classifier):
    directory, _, _ = saved_classifier
    model = FusionClassifier.load(directory, device="cpu")
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        model.predict([image], [np.zeros((40, 50), bool)], [PatientMetadata()], [None])
    with pytest.raises(ValueError, match="equally many"):
        model.predict([image, image], [None], [PatientMetadata()], [None])
    (directory / "classifier.pt").write_bytes((directory / "classifier.pt").read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256"):
        FusionClassifier.load(directory)


def test_metrics_json_content_from_chain_outputs():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 10)
    logits = rng.normal(size=(80, 8)) + 2.0 * np.eye(8)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    outputs = ChainOutputs(labels, {"fused": probs, "image": probs[:, ::-1].copy()}, ["expert"] * 80)
    metrics = classification_metrics(outputs, {"MEL": 0.2}, veto_threshold=0.3)
    for key in ("auroc_malignant", "auroc_macro", "per_class", "sensitivity_at_veto", "specificity_at_veto", "balanced_accuracy", "n", "ablation"):
        assert key in metrics
    assert metrics["n"] == 80 and metrics["auroc_macro"] > 0.8
    assert metrics["per_class"]["MEL"]["threshold"] == 0.2 and metrics["per_class"]["MEL"]["sensitivity"] is not None
    assert metrics["per_class"]["NV"]["threshold"] is None
    assert metrics["ablation"]["image"]["auroc_macro"] < 0.5


@pytest.mark.skipif(not (STARTER_DIR / "classifier" / "model_card.json").is_file(), reason="no starter classifier yet")
def test_starter_classifier_predicts_on_a_real_image(small_cache):
    from dermnode.models.images import load_mask, load_rgb

    records, _ = small_cache
    model = FusionClassifier.load()
    card = model.card
    assert "CC BY-NC" in card.licence and set(card.extra["class_thresholds"]) <= set(CLASS_CODES)
    record = records[0]
    out = model.predict([load_rgb(record.image_path)], [load_mask(record.mask_path)], [record.metadata], [None])
    assert sum(out[0].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(not (STARTER_DIR / "classifier" / "model_card.json").is_file(), reason="no starter classifier yet")
def test_evaluate_classifier_command_runs_the_chain(small_cache, tmp_path):
    import json

    from typer.testing import CliRunner

    from dermnode.cli import app
    from dermnode.models.classifier.evaluate import CHOICES
    from test_models_bcc_sk import small_data_folder

    records, _ = small_cache
    small_data_folder(tmp_path, records)
    result = CliRunner().invoke(app, ["evaluate", "classifier", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--subset", "all"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 8 and set(metrics["per_class"]) == set(CLASS_CODES)
    with_mask = sum(r.mask_path is not None for r in records)  # any collection with masks (isic2018-task1, ham10000)
    assert with_mask >= 3
    assert metrics["mask_sources"].get("expert") == with_mask
    assert sum(metrics["mask_sources"].values()) == 8  # the images without an expert mask were segmented
    assert set(metrics["ablation"]) >= {"image", "image+metadata", "image+metadata+radiomics"}
    assert set(metrics["inference_choices"]) == set(CHOICES)  # every inference choice's probabilities were made
    for png in ("roc_malignant.png", "roc_per_class.png", "confusion.png"):
        assert (tmp_path / "out" / png).is_file()


def test_paper_profile_is_a_4_channel_resnet50_at_224():
    net = FusionNet(ClassifierConfig.for_profile("paper")).eval()
    assert net.config.image_size == 224 and net.image.out_features == 2048
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 224, 224), torch.zeros(1, 1, 224, 224), torch.zeros(1, len(METADATA_FIELDS)), torch.zeros(1, 10))
    assert logits.shape == (1, len(CLASS_CODES))
    with pytest.raises(ValueError, match="unknown classifier profile"):
        ClassifierConfig.for_profile("huge")


def test_preprocessing_choices_override_the_profile_and_nothing_else():
    plain = ClassifierConfig.for_profile("cpu", colour_constancy=False, crop_margin=0.0)
    assert (plain.colour_constancy, plain.crop_margin, plain.image_size) == (False, 0.0, 128)
    assert ClassifierConfig.for_profile("cpu").colour_constancy and ClassifierConfig.for_profile("cpu").crop_margin == 0.2
    assert ClassifierConfig.for_profile("cpu", image_size=160).image_size == 160
    assert ClassifierConfig.for_profile("paper", image_size=192).image_size == 192
    with pytest.raises(ValueError, match="not a preprocessing or architecture choice: widths"):
        ClassifierConfig.for_profile("cpu", widths=(8, 16, 32, 32))


def test_blocks_are_an_architecture_choice_of_the_cpu_profile_only():
    deeper = ClassifierConfig.for_profile("cpu", blocks=(2, 2, 2, 2))
    assert deeper.blocks == (2, 2, 2, 2) and deeper.widths == ClassifierConfig.widths
    shallow, deep = (FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32), blocks=b)) for b in
                     ((1, 1, 1, 1), (2, 2, 2, 2)))
    assert len(deep.image.backbone.layers) == 8 and len(shallow.image.backbone.layers) == 4
    assert deep.image.backbone.stages()[1] is deep.image.backbone.layers[3]
    with pytest.raises(ValueError, match="one count per stage"):
        ClassifierConfig.for_profile("cpu", blocks=(2, 2))
    with pytest.raises(ValueError, match="paper profile is a ResNet-50"):
        ClassifierConfig.for_profile("paper", blocks=(2, 2, 2, 2))


def _member(directory: Path, selection, seed: int, split_ids: list[str], train_ids: list[str] = (), **config) -> Path:
    """An untrained network (initial weights drawn with ``seed``) saved as a classifier with a split
    (``split_ids`` the validation images)."""
    from dermnode.models.dataset_index import Split

    torch.manual_seed(seed)
    net = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32), n_radiomics=3, **config))
    split = Split(1, 0.5, tuple(train_ids), tuple(split_ids), "lesion")
    card = ModelCard("dermnode-fusion-classifier", f"test-{seed}", "test network", "cpu", "classifier.pt",
                     split_ids=split.card_ids(), extra={"settings": {"seed": seed}})
    FusionClassifier(net, selection, card).save(directory, card)
    split.save(directory)
    return directory


def test_an_ensemble_answers_the_mean_of_its_members_and_keeps_them_through_save_and_load(saved_classifier, tmp_path):
    from dermnode.models.images import load_mask, load_rgb

    directory, records, features = saved_classifier
    ids = [r.image_id for r in records]
    selection = FeatureSelection.load(directory / SELECTION_FILE)  # (a test above spoils the weights)
    members = [FusionClassifier.load(_member(tmp_path / f"m{seed}", selection, seed, ids)) for seed in (1, 2)]
    card = ModelCard("dermnode-fusion-classifier", "test-ensemble", "ensemble", "cpu", "classifier.pt")
    FusionClassifier([m.net for m in members], selection, card).save(tmp_path / "ensemble", card)
    ensemble = FusionClassifier.load(tmp_path / "ensemble")
    assert len(ensemble.members) == 2
    images = [load_rgb(r.image_path) for r in records]
    masks = [load_mask(r.mask_path) for r in records]
    metadata = [r.metadata for r in records[:-1]] + [PatientMetadata()]
    as_array = lambda out: np.array([[p[c] for c in CLASS_CODES] for p in out])  # noqa: E731
    each = [as_array(m.predict(images, masks, metadata, features)) for m in members]
    np.testing.assert_allclose(as_array(ensemble.predict(images, masks, metadata, features)), np.mean(each, 0), atol=1e-5)
    assert not np.allclose(each[0], each[1])
    variants = [m.predict_variants(images, masks, metadata, features) for m in members]
    for name, probs in ensemble.predict_variants(images, masks, metadata, features).items():
        np.testing.assert_allclose(probs, (variants[0][name] + variants[1][name]) / 2, atol=1e-5)


def test_an_ensemble_refuses_an_image_that_any_members_gate_finds_atypical(saved_classifier, tmp_path):
    from dermnode.models.images import load_mask, load_rgb
    from dermnode.models.input_gate.checks import FeatureGate

    directory, records, _ = saved_classifier
    selection = FeatureSelection.load(directory / SELECTION_FILE)
    members = [FusionClassifier.load(_member(tmp_path / f"m{seed}", selection, seed, [r.image_id for r in records]))
               for seed in (1, 2)]
    images, masks = [load_rgb(r.image_path) for r in records], [load_mask(r.mask_path) for r in records]
    features = [FusionClassifier(m.net, selection, m.card).image_features(images, masks)[0] for m in members]
    lenient = [FeatureGate.fit(f, f, margin=100.0) for f in features]  # everything passes
    strict = FeatureGate.fit(features[1], features[1], quantile=0.0, margin=0.5)  # everything is refused
    card = ModelCard("dermnode-fusion-classifier", "test-ensemble", "ensemble", "cpu", "classifier.pt")
    FusionClassifier([m.net for m in members], selection, card, gates=lenient).save(tmp_path / "lenient", card)
    FusionClassifier([m.net for m in members], selection, card, gates=[lenient[0], strict]).save(tmp_path / "strict", card)
    assert FusionClassifier.load(tmp_path / "lenient").atypical(images, masks) == [None] * len(images)
    refused = FusionClassifier.load(tmp_path / "strict").atypical(images, masks)  # the second member's gate decides
    assert all(r and r.startswith("not analysable: does not look like a dermoscopic image") for r in refused), refused
    with pytest.raises(ValueError, match="one per network"):
        FusionClassifier([m.net for m in members], selection, card, gates=[strict])


def test_only_alike_members_make_an_ensemble(saved_classifier, tmp_path):
    from dermnode.models.classifier.ensemble import check_alike

    directory, records, _ = saved_classifier
    ids = [r.image_id for r in records]
    selection = FeatureSelection.load(directory / SELECTION_FILE)  # (a test above spoils the weights)
    load = lambda name, seed, ids=ids, **config: FusionClassifier.load(  # noqa: E731
        _member(tmp_path / name, selection, seed, ids, **config))
    one, two = load("one", 1), load("two", 2)
    check_alike([one, two], ["one", "two"])
    with pytest.raises(ValueError, match="at least two"):
        check_alike([one], ["one"])
    with pytest.raises(ValueError, match="same weights"):
        check_alike([one, load("again", 1)], ["one", "again"])
    with pytest.raises(ValueError, match="crop_margin"):
        check_alike([one, load("cropped", 3, crop_margin=0.2)], ["one", "cropped"])
    with pytest.raises(ValueError, match="another split"):
        check_alike([one, load("other-split", 4, ids=ids[:1])], ["one", "other-split"])


def test_classifier_ensemble_command_measures_thresholds_and_figures_on_validation(saved_classifier, small_cache, tmp_path):
    from typer.testing import CliRunner

    from dermnode.cli import app
    from test_models_bcc_sk import small_data_folder

    directory, _, _ = saved_classifier
    records, _ = small_cache
    small_data_folder(tmp_path, records)
    selection = FeatureSelection.load(directory / SELECTION_FILE)  # (a test above spoils the weights)
    ids = [r.image_id for r in records]
    members = [str(_member(tmp_path / f"m{seed}", selection, seed, ids)) for seed in (1, 2)]
    runner = CliRunner()
    result = runner.invoke(app, ["train", "classifier-ensemble", "--member", members[0], "--member", members[1],
                                 "--data", str(tmp_path), "--out", str(tmp_path / "ensemble")])
    assert result.exit_code == 0, result.output
    card = ModelCard.load(tmp_path / "ensemble")
    assert [m["seed"] for m in card.extra["members"]] == [1, 2] and card.architecture.startswith("ensemble of 2")
    assert card.metrics["evaluation"]["n"] == 8 and set(card.extra["class_thresholds"]) <= set(CLASS_CODES)
    assert len(FusionClassifier.load(tmp_path / "ensemble").members) == 2
    assert (tmp_path / "ensemble" / "split.json").read_text() == (tmp_path / "m1" / "split.json").read_text()
    refused = runner.invoke(app, ["train", "classifier-ensemble", "--member", members[0], "--member", members[0],
                                  "--data", str(tmp_path), "--out", str(tmp_path / "twice")])
    assert refused.exit_code == 2 and "same weights" in refused.output and "Traceback" not in refused.output


def test_input_gate_command_fits_gates_on_pooled_and_style_features_of_trained_weights(saved_classifier, small_cache, tmp_path):
    from typer.testing import CliRunner

    from dermnode.cli import app
    from dermnode.models.dataset_index import Split
    from dermnode.models.images import load_mask, load_rgb
    from test_models_bcc_sk import small_data_folder

    directory, _, _ = saved_classifier
    records, _ = small_cache
    small_data_folder(tmp_path, records)
    selection = FeatureSelection.load(directory / SELECTION_FILE)  # (a test above spoils the weights)
    ids = [r.image_id for r in records]
    members = [FusionClassifier.load(_member(tmp_path / f"m{seed}", selection, seed, ids[4:], ids[:4])) for seed in (1, 2)]
    card = ModelCard("dermnode-fusion-classifier", "test-ensemble", "ensemble", "cpu", "classifier.pt")
    FusionClassifier([m.net for m in members], selection, card).save(tmp_path / "pair", card)
    Split.load(tmp_path / "m1").save(tmp_path / "pair")
    runner = CliRunner()
    gate = lambda weights, work, out: runner.invoke(app, [  # noqa: E731
        "train", "input-gate", "--weights", str(tmp_path / weights), "--data", str(tmp_path), "--work", str(tmp_path / work),
        "--out", str(tmp_path / out), "--version", "test-gated"])
    result = gate("m1", "work", "gated")
    assert result.exit_code == 0, result.output
    model = FusionClassifier.load(tmp_path / "gated")
    assert model.card.version == "test-gated" and (tmp_path / "gated" / "split.json").is_file()
    assert len(model.gates) == 1 and model.gates[0].with_style
    assert len(model.gates[0].mean) == 32 + 2 * (8 + 16)  # pooled, then the first two stages' channel means and spreads
    images, masks = [load_rgb(r.image_path) for r in records], [load_mask(r.mask_path) for r in records]
    assert model.image_features(images, masks)[0].shape == (len(images), len(model.gates[0].mean))
    assert np.isfinite(model.atypicality(images, masks)).all()
    result = gate("pair", "work", "gated-pair")  # the same split: the cached images serve again
    assert result.exit_code == 0 and "multiplies every limit" in result.output, result.output
    assert len(FusionClassifier.load(tmp_path / "gated-pair").gates) == 2
    _member(tmp_path / "other", selection, 3, ids[5:], ids[:3])
    refused = gate("other", "work", "gated-other")  # another split's images are not in that cache
    assert refused.exit_code == 2 and "other images" in refused.output and "Traceback" not in refused.output, refused.output


def test_mixstyle_gives_each_image_statistics_between_its_own_and_a_partners_and_keeps_its_content():
    from dermnode.models.classifier.style_mixing import mix_styles

    features = torch.randn(6, 4, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + torch.arange(6).view(6, 1, 1, 1)
    mixed = mix_styles(features, torch.Generator().manual_seed(1), alpha=0.5)
    mean, mixed_mean = features.mean(dim=(2, 3)), mixed.mean(dim=(2, 3))
    assert mixed_mean.min() >= mean.min() - 1e-4 and mixed_mean.max() <= mean.max() + 1e-4
    assert not torch.allclose(mixed_mean, mean)
    standardise = lambda x: (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(standardise(mixed), standardise(features), atol=1e-3)  # the content is unchanged


def test_mixstyle_acts_only_while_training_and_leaves_the_network_as_it_was():
    from dermnode.models.classifier.style_mixing import style_mixing

    net = FusionNet(ClassifierConfig(image_size=64, widths=(8, 16, 32, 32)))
    rgb, mask = torch.rand(4, 3, 64, 64), torch.ones(4, 1, 64, 64)
    net.eval()
    plain = net.image(rgb, mask)
    with style_mixing(net.image.style_stages(), 1.0, torch.Generator().manual_seed(0)):
        assert torch.equal(net.image(rgb, mask), plain)  # evaluation: no mixing
        net.train()
        mixed = net.image(rgb, mask)
        net.eval()
    net.train()
    assert not torch.allclose(mixed, net.image(rgb, mask))  # the hooks are gone after the block
    assert len(net.image.style_stages()) == 2 and not any(s._forward_hooks for s in net.image.style_stages())
    paper = FusionNet(ClassifierConfig.for_profile("paper", 9)).image
    assert paper.style_stages() == [paper.backbone.layer1, paper.backbone.layer2]


def test_colour_jitter_widens_white_balance_and_saturation_and_leaves_the_default_views_alone():
    rgb = torch.tensor([0.6, 0.4, 0.3]).view(1, 3, 1, 1).repeat(64, 1, 16, 16)  # a brown lesion colour
    mask = torch.ones(64, 1, 16, 16)

    def views(colour: float) -> torch.Tensor:
        return augment(rgb.clone(), mask.clone(), torch.Generator().manual_seed(5), 0.0, colour)[0]

    def spread(x: torch.Tensor) -> float:  # how far apart the views' red/green ratios lie
        ratio = x[:, 0].mean(dim=(1, 2)) / x[:, 1].mean(dim=(1, 2))
        return float(ratio.std())

    assert torch.equal(views(0.0), augment(rgb.clone(), mask.clone(), torch.Generator().manual_seed(5), 0.0)[0])
    assert spread(views(0.2)) > 1.5 * spread(views(0.0))


@pytest.mark.parametrize(("arguments", "said"), [
    (["--blocks", "2,x,2,2"], "--blocks takes positive counts"),
    (["--blocks", "2,2"], "one count per stage"),
    (["--profile", "paper", "--blocks", "2,2,2,2"], "paper profile is a ResNet-50"),
])
def test_train_classifier_refuses_blocks_it_cannot_build_before_reading_any_image(tmp_path, arguments, said):
    from typer.testing import CliRunner

    from dermnode.cli import app

    (tmp_path / "metadata.csv").write_text("image_id,collection,diagnosis\n")  # a data folder with no image
    result = CliRunner().invoke(app, ["train", "classifier", "--data", str(tmp_path), "--out",
                                      str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
