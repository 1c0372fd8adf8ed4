"""TLS contexts for the DICOM listener, the DIMSE client and (through uvicorn) the HTTP server.

Servers present ``cert``/``key``; with ``ca`` they also require and verify client certificates.
Clients verify the server against the system's CAs (``verify=True``) or a CA bundle (a path);
``verify=False`` turns verification off (for a test bench only). TLS 1.2 at least.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from bridge.domain.errors import ConfigError


def _load(ctx: ssl.SSLContext, cert: str, key: str | None, what: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the {what} certificate or key", error=type(exc).__name__
        ) from None


def server_context(cert: str, key: str | None, ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, cert, key, "server")
    if ca:
        if not Path(ca).is_file():
            raise ConfigError("the CA file for client certificates does not exist", path=ca)
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    verify: bool | str = True, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        _load(ctx, cert, key, "client")
    return ctx
