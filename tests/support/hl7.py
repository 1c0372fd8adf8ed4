"""A real MLLP receiver for the tests: hl7apy's MLLPServer (a TCP server, optionally TLS)
standing in for the hospital's interface engine or RIS, answering each ORU^R01 with an ACK of a
chosen code."""

from __future__ import annotations

import ssl
import threading
from socketserver import ThreadingTCPServer

from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message


class MllpReceiver:
    """Answers with MSA-1 = ``code`` and MSA-3 = ``text`` (``code`` None: closes without an
    answer). ``received`` holds each message as it arrived; both may change while it runs."""

    def __init__(
        self,
        code: str | None = "AA",
        text: str = "",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.code = code
        self.text = text
        self.received: list[str] = []
        outer = self

        class Handler(AbstractHandler):  # type: ignore[misc]
            def reply(self) -> str:
                outer.received.append(self.incoming_message)
                ctrl = parse_message(self.incoming_message).msh.msh_10.value
                if outer.code is None:
                    raise ConnectionAbortedError
                ack = (
                    f"MSH|^~\\&|RIS|GENERAL|SECONDOPINION|GENERAL|20261203||ACK^R01^ACK|A{ctrl}"
                    f"|P|2.5.1\rMSA|{outer.code}|{ctrl}|{outer.text}\r"
                )
                return f"\x0b{ack}\x1c\r"  # the handler frames its answer itself

        ThreadingTCPServer.allow_reuse_address = True
        self.server = MLLPServer("127.0.0.1", port, {"ORU^R01^ORU_R01": (Handler,)})
        if tls is not None:  # MLLP over TLS: each connection wrapped as it is accepted
            accept = self.server.get_request

            def get_request() -> tuple[ssl.SSLSocket, object]:
                sock, addr = accept()
                return tls.wrap_socket(sock, server_side=True), addr

            self.server.get_request = get_request  # type: ignore[method-assign]
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
