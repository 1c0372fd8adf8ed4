"""The audit trail as DICOM Audit Messages (PS3.15 A.5, the RFC 3881 schema DICOM extends) and
as syslog messages (RFC 5424; the XML is the message, as PS3.15 A.5 / IHE ATNA transmit it).

Participants are the console user (or the bridge's own agent), the bridge itself (its AE title)
and, for case events, the case: its id and the pseudonymized Study Instance UID (no patient
identity leaves in an audit message either). :class:`Syslog` sends messages to a collector (UDP,
or TCP and TLS with octet-counted framing per RFC 6587 and RFC 5425); the stage that ships the
trail, durably and in order, is bridge/pipeline/audit_ship.py.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

# (EventID code, meaning, EventActionCode, EventTypeCode or None) per audit action.
_EVENTS: dict[str, tuple[str, str, str, tuple[str, str] | None]] = {
    "sign-in": ("110114", "User Authentication", "E", ("110122", "Login")),
    "sign-out": ("110114", "User Authentication", "E", ("110123", "Logout")),
    "case.submitted": ("110106", "Export", "R", None),
    "case.imported": ("110107", "Import", "C", None),
    "case.viewed": ("110103", "DICOM Instances Accessed", "R", None),
    "case.forwarded": ("110104", "DICOM Instances Transferred", "R", None),
    "report.returned": ("110104", "DICOM Instances Transferred", "C", None),
    "instance.retry": ("110103", "DICOM Instances Accessed", "U", None),
    "instance.release": ("110103", "DICOM Instances Accessed", "U", None),
    "instance.discard": ("110103", "DICOM Instances Accessed", "D", None),
    "report.retry": ("110103", "DICOM Instances Accessed", "U", None),
    "report.discard": ("110103", "DICOM Instances Accessed", "D", None),
}
_SECURITY = ("110113", "Security Alert", "E", ("110137", "User Security Attributes Changed"))
_DEFAULT = ("110100", "Application Activity", "E", None)
_AGENTS = {"api", "cli", "watch", "system", "upload"}


def _code(parent: ET.Element, tag: str, code: str, meaning: str) -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": "DCM", "originalText": meaning})


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_dicom_xml(event: dict[str, Any], source_id: str) -> str:
    """One ``<AuditMessage>`` (PS3.15 A.5.1) for one audit event."""
    action = str(event["action"])
    event_id, meaning, action_code, type_code = _EVENTS.get(
        action, _SECURITY if action.startswith("user.") else _DEFAULT
    )
    msg = ET.Element("AuditMessage")
    ident = ET.SubElement(
        msg,
        "EventIdentification",
        {
            "EventActionCode": action_code,
            "EventDateTime": _stamp(float(event["at"])),
            # 0 success, 4 minor failure (PS3.15 A.5.3)
            "EventOutcomeIndicator": "0" if event.get("outcome", "success") == "success" else "4",
        },
    )
    _code(ident, "EventID", event_id, meaning)
    if type_code is not None:
        _code(ident, "EventTypeCode", *type_code)
    actor = str(event["actor"])
    person = {"UserID": actor, "UserIsRequestor": "true"}
    if event.get("source_address"):
        person.update(
            NetworkAccessPointID=str(event["source_address"]), NetworkAccessPointTypeCode="2"
        )
    if actor in _AGENTS:
        person["AlternativeUserID"] = f"{source_id}:{actor}"
    ET.SubElement(msg, "ActiveParticipant", person)
    bridge = ET.SubElement(
        msg,
        "ActiveParticipant",
        {
            "UserID": source_id,
            "UserIsRequestor": "false",
            "AlternativeUserID": "secondopinion-bridge",
        },
    )
    _code(bridge, "RoleIDCode", "110150", "Application")
    ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": source_id})
    detail = event.get("detail") or {}
    if event.get("case_id"):
        case = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": str(event["case_id"]),
                "ParticipantObjectTypeCode": "2",  # system object
                "ParticipantObjectTypeCodeRole": "3",  # report
            },
        )
        _code(case, "ParticipantObjectIDTypeCode", "110180", "Study Instance UID")
        ET.SubElement(case, "ParticipantObjectName").text = "second-opinion case"
        for key in (
            "pseudo_study_uid",
            "subspecialty",
            "priority",
            "instances",
            "instance",
            "report",
        ):
            if key in detail:
                ET.SubElement(
                    case, "ParticipantObjectDetail", {"type": key, "value": str(detail[key])}
                )
    return ET.tostring(msg, encoding="unicode")


def to_syslog(event: dict[str, Any], source_id: str, hostname: str) -> str:
    """RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`` with the XML as MSG.
    Facility 10 (security/authorization), severity notice (5), warning (4) on failure."""
    severity = 5 if event.get("outcome", "success") == "success" else 4
    pri = 10 * 8 + severity
    host = (hostname or "-")[:255].replace(" ", "-")
    return (
        f"<{pri}>1 {_stamp(float(event['at']))} {host} secondopinion - IHE+RFC-3881 - "
        + to_dicom_xml(event, source_id)
    )


@dataclass(frozen=True)
class SyslogTarget:
    host: str
    port: int
    protocol: str  # "udp" | "tcp" | "tls"
    #: For "tls" (RFC 5425): verifies the collector, carries the bridge's client certificate.
    tls: ssl.SSLContext | None = None


class Syslog:
    """One syslog collector."""

    def __init__(self, target: SyslogTarget, source_id: str, hostname: str) -> None:
        self.target = target
        self.source_id = source_id
        self.hostname = hostname
        #: The name of this collector's position in the audit trail (bridge/store/feeds.py).
        self.feed = f"syslog:{target.protocol}:{target.host}:{target.port}"

    def send(self, events: list[dict[str, Any]]) -> None:
        """Send ``events`` as RFC 5424 messages, in order; OSError when the collector cannot
        be reached."""
        t = self.target
        messages = [to_syslog(e, self.source_id, self.hostname) for e in events]
        if t.protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for m in messages:
                    s.sendto(m.encode()[:65000], (t.host, t.port))
            return
        with socket.create_connection((t.host, t.port), timeout=10) as raw:
            s = raw
            if t.protocol == "tls":
                if t.tls is None:
                    raise ssl.SSLError("no TLS context for the syslog collector")
                s = t.tls.wrap_socket(raw, server_hostname=t.host)
            for m in messages:
                data = m.encode()
                s.sendall(f"{len(data)} ".encode() + data)  # octet counting (RFC 6587, 5425)
            if s is not raw:
                s.close()
