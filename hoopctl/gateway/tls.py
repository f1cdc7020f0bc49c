"""TLS contexts: the gateway's server side (callers) and its client side (upstream databases)."""

from __future__ import annotations

import ssl

from hoopctl.gateway.config import TLSConfig


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server context from the configured certificate and key (TLS 1.2 or later)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def upstream_context() -> ssl.SSLContext:
    """Encryption toward the database, as libpq's sslmode=prefer/require: no certificate check.

    The upstream is named by the gateway's own config, not by a caller, so the
    threat is passive sniffing on the wire; verify-full can be added per resource.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
