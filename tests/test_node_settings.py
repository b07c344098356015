"""Settings from the environment and a TOML file, and `dermnode config check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.models.model_card import ModelCard
from dermnode.node.settings import describe_errors, load_settings, parse_destination

ENV = {
    "DERMNODE_HOME": "{tmp}/state",
    "DERMNODE_AE_TITLE": "DERMAI",
    "DERMNODE_PORT": "11999",
    "DERMNODE_ALLOWED_CALLING_AES": "PACS, MODALITY",
    "DERMNODE_DESTINATIONS": "PACS@10.0.0.5:104,ARCHIVE@archive.local:11112",
    "DERMNODE_QUIET_SECONDS": "2.5",
    "DERMNODE_BROKER_URL": "redis://127.0.0.1:6379/0",
    "DERMNODE_DATABASE_URL": "sqlite:///{tmp}/other.db",
    "DERMNODE_MODELS_DIR": "{tmp}/models",
    "DERMNODE_VETO_THRESHOLD": "0.25",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*ENV, "DERMNODE_CONFIG", "DERMNODE_VETO_DESTINATIONS"]:
        monkeypatch.delenv(name, raising=False)


def test_every_documented_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    settings = load_settings()
    assert settings.home == tmp_path / "state"
    assert settings.spool_dir == tmp_path / "state" / "spool"
    assert (settings.ae_title, settings.port, settings.quiet_seconds) == ("DERMAI", 11999, 2.5)
    assert settings.allowed_calling_aes == ["PACS", "MODALITY"]
    assert [str(d) for d in settings.destination_list] == ["PACS@10.0.0.5:104", "ARCHIVE@archive.local:11112"]
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == f"sqlite:///{tmp_path}/other.db"
    assert settings.models_dir == tmp_path / "models"
    assert settings.veto_threshold == 0.25


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.allowed_calling_aes == [] and settings.broker_url == ""
    assert settings.database_url == f"sqlite:///{tmp_path / 'dermnode.db'}"
    assert settings.veto_threshold == 0.3 and settings.models_dir is None


def test_toml_file_with_environment_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "node.toml"
    config.write_text('port = 4242\nae_title = "FROMFILE"\ndestinations = ["PACS@pacs:104"]\n'
                      f'home = "{tmp_path}/h"\n')
    monkeypatch.setenv("DERMNODE_CONFIG", str(config))
    monkeypatch.setenv("DERMNODE_PORT", "5151")
    settings = load_settings()
    assert (settings.port, settings.ae_title, settings.destinations) == (5151, "FROMFILE", ["PACS@pacs:104"])
    # <home>/dermnode.toml is read when no file is named
    monkeypatch.delenv("DERMNODE_CONFIG")
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path / "h"))
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "dermnode.toml").write_text("quiet_seconds = 7\n")
    assert load_settings().quiet_seconds == 7


def test_bad_values_are_explained_in_words(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:
        load_settings(home=tmp_path, ae_title="A_TITLE_FAR_TOO_LONG", port=70000, destinations=["PACS:104"],
                      veto_threshold=1.5, allowed_calling_aes=["BAD\\AE"])
    text = "\n".join(describe_errors(raised.value))
    assert "at most 16" in text and "outside 1..65535" in text and "AE@host:port" in text
    assert "between 0 and 1" in text and "backslash" in text
    with pytest.raises(ValueError, match="AE@host:port"):
        parse_destination("no-port@host")


def _models_dir(root: Path) -> Path:
    for name in ("segmentation", "classifier", "bcc_sk"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "weights.pt").write_bytes(name.encode())
        ModelCard(name=name, version="0.0-test", architecture="test", profile="cpu", weights_file="weights.pt").save(folder)
    return root


def test_config_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DERMNODE_MODELS_DIR", str(_models_dir(tmp_path / "models")))
    good = runner.invoke(app, ["config", "check"])
    assert good.exit_code == 0, good.output
    assert "configuration OK" in good.output

    (tmp_path / "models" / "classifier" / "weights.pt").write_bytes(b"tampered")
    tampered = runner.invoke(app, ["config", "check"])
    assert tampered.exit_code == 1 and "does not match the model card" in tampered.output

    monkeypatch.setenv("DERMNODE_PORT", "not-a-port")
    monkeypatch.setenv("DERMNODE_DESTINATIONS", "PACS@pacs")
    bad = runner.invoke(app, ["config", "check"])
    assert bad.exit_code == 2
    assert "DERMNODE_PORT" in bad.output and "AE@host:port" in bad.output

    config = tmp_path / "typo.toml"
    config.write_text("prot = 104\n")
    monkeypatch.delenv("DERMNODE_PORT")
    monkeypatch.delenv("DERMNODE_DESTINATIONS")
    typo = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert typo.exit_code == 2 and "prot" in typo.output and "not a dermnode setting" in typo.output
