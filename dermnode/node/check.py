"""`dermnode config check`: what the settings' own validation cannot see (files, folders, servers)."""

from __future__ import annotations

import tempfile

from dermnode.node.settings import Settings, mask_url

MODEL_NAMES = ("segmentation", "classifier", "bcc_sk")


def check_settings(settings: Settings) -> list[str]:
    """Every problem found, one sentence each (an empty list when all is well)."""
    return [*_check_home(settings), *_check_models(settings), *_check_database(settings), *_check_broker(settings),
            *_check_tls(settings)]


def _check_home(settings: Settings) -> list[str]:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.home, prefix=".write-test-"):
            pass
    except OSError as exc:
        return [f"home folder {settings.home} is not writable: {exc.strerror or exc}"]
    return []


def _check_models(settings: Settings) -> list[str]:
    from dermnode.models.model_card import ModelCard, model_dir

    problems = []
    if settings.models_dir is not None and not settings.models_dir.is_dir():
        return [f"models_dir {settings.models_dir} is not a folder"]
    for name in MODEL_NAMES:
        folder = model_dir(settings.models_dir, name)
        try:
            ModelCard.load(folder, verify=True)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            problems.append(f"model {name!r}: {exc}")
    return problems


def _check_database(settings: Settings) -> list[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(settings.database_url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except (SQLAlchemyError, ImportError, OSError) as exc:
        return [f"database {mask_url(settings.database_url)!r} cannot be opened: {mask_url(str(exc).splitlines()[0])}"]
    return []


def _check_broker(settings: Settings) -> list[str]:
    if not settings.broker_url:
        return []
    import redis

    try:
        redis.Redis.from_url(settings.broker_url, socket_timeout=3, socket_connect_timeout=3).ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        return [f"broker {mask_url(settings.broker_url)!r} does not answer: {mask_url(str(exc))}"]
    return []


def _check_tls(settings: Settings) -> list[str]:
    import ssl

    from dermnode.node.tls import client_context, server_context

    try:
        server_context(settings)
        client_context(settings)
    except (OSError, ssl.SSLError) as exc:
        return [f"DICOM TLS files cannot be used (certificate {settings.tls_certificate}, key "
                f"{settings.tls_private_key}, CA {settings.tls_ca_certificates}): {exc}"]
    return []
