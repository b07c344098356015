"""DICOM TLS for the SCP (BCP 195 style: TLS 1.2 or newer).

With ``tls_certificate`` and ``tls_private_key`` set, the node accepts TLS connections only. With
``tls_ca_certificates`` as well, it requires a client certificate signed by one of those CAs, so
that only known modalities and PACS can connect (the AE title allow-list still applies on top).
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
