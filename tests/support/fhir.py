"""A FHIR R4 transaction endpoint for the tests, a real HTTP server on loopback.

No FHIR server installs here without downloads at run time (HAPI needs Maven Central, the npm
and PyPI ones need a database product or are unmaintained), so this one checks what can be
checked without one: every Bundle and resource is validated with fhir.resources (R4B), the
transaction's conditional creates (``ifNoneExist`` by identifier) are honoured, ``urn:uuid:``
references are rewritten to the ids given, OAuth 2.0 client credentials or a static bearer token
are required, and it can be told to refuse (4xx with an OperationOutcome) or fail (5xx).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fhir.resources.R4B.bundle import Bundle

TOKEN = "fhir-test-token"  # noqa: S105 - a test fixture
CLIENT = ("secondopinion", "client-secret")


class FhirServer:
    def __init__(self, port: int = 0) -> None:
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.transactions: list[dict[str, Any]] = []
        #: None: accept; else (status, diagnostics) for the next transactions.
        self.answer: tuple[int, str] | None = None
        self.tokens_issued = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/token":
                    auth = self.headers.get("Authorization", "")
                    expected = base64.b64encode(":".join(CLIENT).encode()).decode()
                    if auth != f"Basic {expected}" or b"client_credentials" not in body:
                        self._send(401, {"error": "invalid_client"})
                        return
                    outer.tokens_issued += 1
                    self._send(
                        200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 300}
                    )
                    return
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, _outcome("login", "no valid bearer token"))
                    return
                if outer.answer is not None:
                    status, text = outer.answer
                    self._send(status, _outcome("processing", text))
                    return
                try:
                    doc = json.loads(body)
                    Bundle.model_validate(doc)  # every resource in it validated too
                except Exception as exc:  # noqa: BLE001 - any invalid input is a 400
                    self._send(400, _outcome("structure", f"invalid Bundle: {exc}"[:500]))
                    return
                if doc.get("type") != "transaction":
                    self._send(400, _outcome("processing", "not a transaction"))
                    return
                self._send(200, outer._apply(doc))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The transaction: conditional creates by identifier, references rewritten."""
        self.transactions.append(doc)
        ids: dict[str, str] = {}
        responses = []
        for entry in doc["entry"]:
            res = entry["resource"]
            kind = res["resourceType"]
            found = self._match(kind, entry["request"].get("ifNoneExist", ""))
            if found is not None:
                ids[entry["fullUrl"]] = f"{kind}/{found}"
                responses.append({"response": {"status": "200 OK", "location": f"{kind}/{found}"}})
                continue
            rid = uuid.uuid4().hex[:16]
            ids[entry["fullUrl"]] = f"{kind}/{rid}"
            self.resources.setdefault(kind, {})[rid] = res
            responses.append({"response": {"status": "201 Created", "location": f"{kind}/{rid}"}})
        for kind_map in self.resources.values():
            for res in kind_map.values():
                _rewrite(res, ids)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def _match(self, kind: str, criteria: str) -> str | None:
        if not criteria.startswith("identifier="):
            return None
        system, _, value = criteria[len("identifier=") :].partition("|")
        for rid, res in self.resources.get(kind, {}).items():
            for ident in res.get("identifier", []):
                if ident.get("system") == system and ident.get("value") == value:
                    return rid
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def _rewrite(node: Any, ids: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and value in ids:
                node[key] = ids[value]
            else:
                _rewrite(value, ids)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, ids)
