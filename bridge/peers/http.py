"""Outbound HTTP: one requests session per peer, with auth and TLS verification."""

from __future__ import annotations

import random
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bridge.config import PacsSettings, ReadingSettings


class Session(requests.Session):
    """A requests session whose TLS setting is the bridge's, whatever the environment says.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify`` (its
    issue #3829): a CA bundle configured for the archive or the PACS would be silently ignored
    on a host where those variables are set (common), and ``verify_tls = false`` too. Here the
    session's own value wins unless it is the default ``True``."""

    def merge_environment_settings(  # type: ignore[override]
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            merged["verify"] = self.verify
        return dict(merged)


def new_session(verify: bool | str = True) -> requests.Session:
    s = Session()
    s.verify = verify
    return s


def dicomweb_session(settings: ReadingSettings | PacsSettings) -> requests.Session:
    """A session for a DICOMweb peer (the reading archive or the PACS): auth, TLS, pool."""
    s = new_session(settings.verify_tls)
    if settings.client_cert:
        s.cert = (
            (settings.client_cert, settings.client_key)
            if settings.client_key
            else settings.client_cert
        )
    if settings.token is not None:
        s.headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    elif settings.username:
        pw = settings.password.get_secret_value() if settings.password else ""
        s.auth = (settings.username, pw)
    parallel = getattr(settings, "stow_parallel", 1)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=parallel + 2)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = "secondopinion-bridge"
    return s


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: a delay in [initial/2, min(cap, initial*2^n)]."""
    ceiling = min(cap, initial * (2 ** min(attempt - 1, 30)))
    return max(initial / 2, random.uniform(0, ceiling))
