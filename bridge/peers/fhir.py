"""The hospital's FHIR R4 server: one transaction Bundle per report.

Auth: a static bearer token, or OAuth 2.0 client credentials (SMART Backend Services style, with
a client secret): the token is fetched from ``token_url``, kept until shortly before it expires,
and fetched again once when the server answers 401.

Answers: 2xx done; 400, 404, 409, 412, 422 refused for good (the OperationOutcome's diagnostics
as the reason); 401/403 after a fresh token, 408, 429, 5xx and no answer: worth another attempt.
Nothing of the Bundle is logged or put into an error.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests

from bridge.domain.errors import PermanentForwardError, TransientForwardError

_REFUSED = frozenset({400, 404, 405, 409, 410, 412, 413, 415, 422})


class FhirClient:
    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        timeout: float,
        *,
        token: str = "",
        token_url: str = "",
        client_id: str = "",
        client_secret: str = "",
        scope: str = "",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._static = token
        self._token_url = token_url
        self._client = (client_id, client_secret, scope)
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def _bearer(self, fresh: bool = False) -> str:
        if self._static or not self._token_url:
            return self._static
        with self._lock:
            if fresh or not self._token or time.monotonic() > self._expires:
                client_id, secret, scope = self._client
                data = {"grant_type": "client_credentials"}
                if scope:
                    data["scope"] = scope
                try:
                    resp = self.session.post(
                        self._token_url,
                        data=data,
                        auth=(client_id, secret),
                        timeout=self.timeout,
                    )
                except requests.RequestException as exc:
                    raise TransientForwardError(
                        "FHIR token endpoint unreachable", error=type(exc).__name__
                    ) from None
                if resp.status_code != 200:
                    raise TransientForwardError(
                        "FHIR token endpoint refused the client", status=resp.status_code
                    )
                body = resp.json()
                self._token = str(body["access_token"])
                self._expires = time.monotonic() + float(body.get("expires_in", 300)) - 30
            return self._token

    def post_bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST the transaction; its transaction-response Bundle. PermanentForwardError when
        refused, TransientForwardError when worth trying again."""
        body = json.dumps(bundle).encode("utf-8")
        resp = self._post(body, self._bearer())
        if resp.status_code in (401, 403) and self._token_url:
            resp = self._post(body, self._bearer(fresh=True))
        if 200 <= resp.status_code < 300:
            try:
                return dict(resp.json())
            except ValueError:
                return {}
        if resp.status_code in _REFUSED:
            raise PermanentForwardError(
                "FHIR server refused the report",
                status=resp.status_code,
                reason=_diagnostics(resp)[:300] or "none given",
            )
        raise TransientForwardError("FHIR server answered an error", status=resp.status_code)

    def _post(self, body: bytes, bearer: str) -> requests.Response:
        headers = {
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
        }
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            return self.session.post(
                self.base_url, data=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TransientForwardError(
                "FHIR server unreachable", error=type(exc).__name__
            ) from None


def _diagnostics(resp: requests.Response) -> str:
    """What an OperationOutcome says (its issues' diagnostics or details), else nothing."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    out = []
    for issue in body.get("issue", []) or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        if text:
            out.append(str(text))
    return "; ".join(out)
