"""The hospital's interface engine or RIS over HL7 v2 MLLP: one message, one acknowledgement.

MLLP frames a message as ``<VT> message <FS><CR>`` (HL7 v2 Implementation Guide, Appendix C);
the receiver answers with an ACK in the same framing on the same connection. The ACK's MSA-1
decides: AA (or CA) delivered; AE, AR (or CE, CR) refused for good, with MSA-3 or ERR-8 as the
reason; anything else (no answer, a broken frame, an ACK for another message) is worth another
attempt. One connection per message: results are few and an engine may close idle links.

Nothing of the message is logged or put into an error: it carries the patient's identity.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from bridge.domain.errors import PermanentForwardError, TransientForwardError

START = b"\x0b"
END = b"\x1c\x0d"
#: An ACK larger than this is not an ACK.
MAX_ACK = 64 * 1024

#: MSA-1 codes: delivered / refused (original and enhanced acknowledgement mode).
ACCEPTED = frozenset({"AA", "CA"})
REFUSED = frozenset({"AE", "AR", "CE", "CR"})


@dataclass(frozen=True)
class Ack:
    code: str
    #: MSA-2: the control ID of the message acknowledged.
    control_id: str
    #: MSA-3, or ERR-8 (user message) when the receiver put its reason there.
    text: str


def frame(message: str) -> bytes:
    return START + message.encode("utf-8") + END


def parse_ack(raw: bytes) -> Ack:
    """The MSA of an ACK (``raw`` without its MLLP framing). Raises TransientForwardError when
    it is not an ACK at all."""
    text = raw.decode("utf-8", errors="replace")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise TransientForwardError("HL7 receiver answered something that is not an ACK")
    sep = segments[0][3]
    msa = next((s.split(sep) for s in segments if s.startswith("MSA" + sep)), None)
    if msa is None or len(msa) < 3:
        raise TransientForwardError("HL7 receiver's answer has no MSA segment")
    reason = msa[3] if len(msa) > 3 else ""
    err = next((s.split(sep) for s in segments if s.startswith("ERR" + sep)), None)
    if not reason and err is not None and len(err) > 8:
        reason = err[8]
    return Ack(code=msa[1].strip().upper(), control_id=msa[2].strip(), text=reason.strip())


class MllpClient:
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = tls

    def send(self, message: str, control_id: str) -> Ack:
        """Send one message (segments separated by CR) and return its ACK when the receiver
        accepted it. PermanentForwardError: refused (the reason is the receiver's own words);
        TransientForwardError: worth trying again."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = self.tls.wrap_socket(raw, server_hostname=self.host) if self.tls else raw
                sock.sendall(frame(message))
                answer = _read_frame(sock)
        except (OSError, ssl.SSLError) as exc:
            raise TransientForwardError(
                "HL7 receiver unreachable", error=type(exc).__name__
            ) from None
        ack = parse_ack(answer)
        if ack.control_id != control_id:
            raise TransientForwardError("HL7 receiver acknowledged another message")
        if ack.code in REFUSED:
            raise PermanentForwardError(
                "HL7 receiver refused the result",
                ack=ack.code,
                reason=ack.text[:200] or "none given",
            )
        if ack.code not in ACCEPTED:
            raise TransientForwardError("HL7 receiver answered an unknown code", ack=ack.code[:8])
        return ack


def _read_frame(sock: socket.socket) -> bytes:
    buf = b""
    while END not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise TransientForwardError("HL7 receiver closed the connection without an ACK")
        buf += chunk
        if len(buf) > MAX_ACK:
            raise TransientForwardError("HL7 receiver's answer is too large for an ACK")
    start = buf.find(START)
    if start < 0:
        raise TransientForwardError("HL7 receiver's answer is not MLLP-framed")
    return buf[start + 1 : buf.index(END, start)]
