"""The reading service's queue: a webhook that takes the signed case manifest.

The body is signed with HMAC-SHA256 under the queue secret: ``X-Bridge-Signature:
sha256=<hex>``. The queue has its own session: the reading archive's credentials never go to
the webhook.
"""

from __future__ import annotations

import hashlib
import hmac

import requests

from bridge.domain.errors import PermanentForwardError, TransientForwardError

SIGNATURE_HEADER = "X-Bridge-Signature"
#: Answers that will not change on a retry: the manifest is held with the reason.
_REFUSED = frozenset({400, 404, 405, 410, 413, 415, 422})


def sign(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class ReadingQueue:
    def __init__(
        self, session: requests.Session, url: str, secret: bytes | None, timeout: float
    ) -> None:
        self.session = session
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def post(self, body: bytes) -> None:
        """Post one encoded manifest; TransientForwardError is worth retrying,
        PermanentForwardError is not."""
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        try:
            resp = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransientForwardError(
                "case queue unreachable", error=type(exc).__name__
            ) from None
        if 200 <= resp.status_code < 300:
            return
        if resp.status_code in _REFUSED:
            raise PermanentForwardError("case queue refused the manifest", status=resp.status_code)
        raise TransientForwardError("case queue answered an error", status=resp.status_code)
