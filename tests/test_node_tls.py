"""DICOM TLS: storescu over TLS with a trusted client certificate is stored, plain TCP and an
untrusted certificate are not; export reaches a TLS-only storescp only with tls_destinations;
config check reports unusable TLS files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from node_support import RecordingEnqueue, make_study, node_settings, running_node
from peers import free_port, stop, tool, wait_for_port
from pydicom import dcmread
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.node.audit import AuditStore
from dermnode.node.outbox import Dispatcher, Outbox


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([tool("openssl"), *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all PEM."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dermnode test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=folder)
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=folder)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=stranger",
             "-keyout", "stranger.key", "-out", "stranger.crt", cwd=folder)
    return folder


def _storescu(settings, files, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("storescu"), *tls, "--required", "--propose-jpeg8", "-aet", "MODALITY", "-aec", settings.ae_title,
         "127.0.0.1", str(settings.port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )


def test_scp_over_tls_requires_a_trusted_client_certificate(tmp_path, pki):
    settings = node_settings(tmp_path, tls_certificate=pki / "server.crt", tls_private_key=pki / "server.key",
                             tls_ca_certificates=pki / "ca.crt")
    study_uid, files = make_study(tmp_path / "in", 2)
    enqueue = RecordingEnqueue()
    with running_node(settings, enqueue) as node:
        trusted = _storescu(settings, files[:1], "+tls", str(pki / "client.key"), str(pki / "client.crt"),
                            "+cf", str(pki / "ca.crt"))
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        plain = _storescu(settings, files[1:])
        assert plain.returncode != 0
        stranger = _storescu(settings, files[1:], "+tls", str(pki / "stranger.key"), str(pki / "stranger.crt"),
                             "+cf", str(pki / "ca.crt"))
        assert stranger.returncode != 0
        spooled = node.spool.study_files(study_uid)
    assert [p.stem for p in spooled] == [str(_sop(files[0]))]


def _sop(path: Path) -> str:
    return dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_tls_settings_are_checked(tmp_path, pki, monkeypatch):
    with pytest.raises(ValueError, match="both tls_certificate and tls_private_key"):
        node_settings(tmp_path, tls_certificate=pki / "server.crt")
    monkeypatch.setenv("DERMNODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DERMNODE_TLS_CERTIFICATE", str(pki / "server.crt"))
    monkeypatch.setenv("DERMNODE_TLS_PRIVATE_KEY", str(pki / "client.key"))  # not the certificate's key
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code != 0
    assert "DICOM TLS files cannot be used" in result.output


def test_export_over_tls_verifies_the_destination(tmp_path, pki):
    """With tls_destinations the outbox reaches a TLS-only storescp; without it, nothing is marked sent."""
    port, received = free_port(), tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(
        [tool("storescp"), "+tls", str(pki / "server.key"), str(pki / "server.crt"), "+cf", str(pki / "ca.crt"),
         "--aetitle", "TLSPACS", "--output-directory", str(received), "+xa", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=scp)
        study_uid, files = make_study(tmp_path / "res", 1)
        for tls_on in (False, True):
            settings = node_settings(tmp_path / f"tls-{tls_on}", destinations=[f"TLSPACS@127.0.0.1:{port}"],
                                     tls_destinations=tls_on, tls_ca_certificates=pki / "ca.crt",
                                     tls_certificate=pki / "client.crt", tls_private_key=pki / "client.key")
            audit = AuditStore(settings.database_url)
            Outbox(settings, audit).put(study_uid, [dcmread(f) for f in files], f"key-{tls_on}")
            assert Dispatcher(settings, audit).run_once() == (1 if tls_on else 0)
            assert {row["state"] for row in audit.deliveries(study_uid)} == {"sent" if tls_on else "pending"}
    finally:
        stop(scp)
    assert len(list(received.iterdir())) == 1


def test_export_over_tls_needs_a_ca_to_verify_destinations(tmp_path):
    with pytest.raises(ValueError, match="tls_destinations needs tls_ca_certificates"):
        node_settings(tmp_path, tls_destinations=True)
