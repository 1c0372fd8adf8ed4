"""structlog set-up: JSON in production, console in development, and a redaction processor.

Our code logs only case ids, pseudonymous ids, counts, timings and statuses. The redaction
processor is the last line of defence: it drops any value whose key names an identifying
attribute, and it reduces exceptions from libraries (whose messages may quote dataset values)
to their type, keeping our own :class:`~bridge.domain.errors.BridgeError` messages, which are
safe by construction.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

import structlog
from pydicom import config as pydicom_config

from bridge.domain.errors import BridgeError

#: Keys whose values are never logged, whatever the caller passed.
REDACTED_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patientname",
        "patientid",
        "birth_date",
        "accession",
        "accession_number",
        "address",
        "question",
        "text",
        "value",
        "dataset",
        "authorization",
        "token",
        "password",
        "secret",
    }
)
REDACTED = "[redacted]"


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask identifying keys and library exception messages."""
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = REDACTED
    exc = event_dict.get("exc_info")
    if exc:
        if exc is True:
            exc = sys.exc_info()
        elif isinstance(exc, BaseException):
            exc = (type(exc), exc, exc.__traceback__)
        err = exc[1]
        if err is not None:
            event_dict.pop("exc_info", None)
            event_dict["error_type"] = type(err).__name__
            if isinstance(err, BridgeError):
                event_dict["error"] = str(err)
    return event_dict


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and route the standard library's logging through it."""
    stream = stream or sys.stderr
    lvl = getattr(logging, level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # Libraries that would log dataset contents or request headers at debug level stay quiet.
    for noisy in ("pynetdicom", "urllib3", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    # pydicom's warnings quote the offending values ("Invalid value for VR DA: '<value>'"):
    # values from a dataset never reach a log. Validation problems surface as our own errors.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
