"""DICOM TLS (BCP 195 style: TLS 1.2 or newer) for the SCP and for export.

SCP: with ``tls_certificate`` and ``tls_private_key`` set, the node accepts TLS connections only.
With ``tls_ca_certificates`` as well, it requires a client certificate signed by one of those CAs,
so that only known modalities and PACS can connect (the AE title allow-list still applies on top).

Export: with ``tls_destinations`` the outbox connects to every destination over TLS, verifies the
destination's certificate against ``tls_ca_certificates`` (host name included) and presents
``tls_certificate`` as its client certificate when one is set.
"""

from __future__ import annotations

import ssl

from dermnode.node.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's TLS context, or None when TLS is not configured."""
    if settings.tls_certificate is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    if settings.tls_ca_certificates is not None:
        context.load_verify_locations(cafile=settings.tls_ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for export, or None when destinations are reached over plain TCP."""
    if not settings.tls_destinations:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca_certificates)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_certificate is not None:
        context.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    return context
