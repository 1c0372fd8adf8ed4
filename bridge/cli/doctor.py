"""``bridge doctor``: check everything configured, one line each with a verdict and a hint.

Verdicts: ``ok``, ``warn`` (works, but look), ``fail`` (will not work), ``skip`` (not
configured). The exit code is 0 only when nothing fails. Nothing identifying is printed: the
checks query with limits and no patient keys.
"""

from __future__ import annotations

import argparse
import email.utils
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from bridge.cli.command import Command, no_arguments
from bridge.config import DicomWebPeer, Settings
from bridge.domain.errors import BridgeError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MAX_SKEW = 60.0


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str
    hint: str = ""


def _http(peer: DicomWebPeer, method: str, url: str, **kw: object) -> requests.Response:
    from bridge.peers.http import dicomweb_session

    with dicomweb_session(peer) as s:  # type: ignore[arg-type]
        return s.request(method, url, timeout=min(peer.timeout, 15), **kw)  # type: ignore[arg-type]


def _dicomweb(name: str, peer: DicomWebPeer, setting: str, stow: bool) -> list[Check]:
    if not peer.dicomweb_url:
        return [Check(f"{name} DICOMweb", SKIP, "not configured", f"set {setting}__DICOMWEB_URL")]
    out: list[Check] = []
    url = peer.dicomweb_url
    try:
        r = _http(
            peer,
            "GET",
            f"{url}/studies",
            params={"limit": "1"},
            headers={"Accept": "application/dicom+json"},
        )
    except requests.exceptions.SSLError:
        return [
            Check(
                f"{name} QIDO-RS",
                FAIL,
                "TLS certificate not valid",
                f"check the server's certificate or {setting}__VERIFY_TLS (a CA bundle)",
            )
        ]
    except requests.RequestException as exc:
        return [
            Check(
                f"{name} QIDO-RS",
                FAIL,
                f"unreachable ({type(exc).__name__})",
                f"check {setting}__DICOMWEB_URL and the network",
            )
        ]
    if r.status_code in (401, 403):
        out.append(
            Check(
                f"{name} QIDO-RS",
                FAIL,
                f"credentials refused ({r.status_code})",
                f"check {setting}__TOKEN or __USERNAME/__PASSWORD",
            )
        )
    elif r.status_code in (200, 204):
        out.append(Check(f"{name} QIDO-RS", OK, f"answers ({r.status_code})"))
    else:
        out.append(
            Check(
                f"{name} QIDO-RS",
                FAIL,
                f"HTTP {r.status_code}",
                f"is {setting}__DICOMWEB_URL the DICOMweb root?",
            )
        )
    skew = _skew(r.headers.get("Date"))
    if skew is not None:
        verdict = OK if abs(skew) <= MAX_SKEW else WARN
        out.append(
            Check(
                f"clock vs {name}",
                verdict,
                f"{skew:+.0f} s",
                "" if verdict == OK else "set up NTP: dates in audit and reports drift",
            )
        )
    if stow:
        try:
            s = _http(
                peer,
                "POST",
                f"{url}/studies",
                data=b"",
                headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
            )
            if s.status_code in (401, 403):
                out.append(
                    Check(
                        f"{name} STOW-RS",
                        FAIL,
                        "credentials refused",
                        f"check {setting}__TOKEN or __USERNAME/__PASSWORD",
                    )
                )
            elif s.status_code in (404, 405, 501):
                out.append(
                    Check(
                        f"{name} STOW-RS",
                        FAIL,
                        f"not offered (HTTP {s.status_code})",
                        "the archive must accept STOW-RS at <root>/studies",
                    )
                )
            else:
                out.append(
                    Check(f"{name} STOW-RS", OK, f"accepts requests (empty test: {s.status_code})")
                )
        except requests.RequestException as exc:
            out.append(Check(f"{name} STOW-RS", FAIL, f"unreachable ({type(exc).__name__})"))
    return out


def _skew(date_header: str | None) -> float | None:
    if not date_header:
        return None
    try:
        return email.utils.parsedate_to_datetime(date_header).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _echo(settings: Settings) -> Check:
    pacs = settings.pacs
    if not (pacs.ae_title and pacs.host and pacs.port):
        return Check(
            "PACS C-ECHO",
            SKIP,
            "no DIMSE PACS configured",
            "set BRIDGE_PACS__AE_TITLE, __HOST, __PORT for C-FIND/C-MOVE and returns",
        )
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=settings.dimse.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    from bridge.domain.errors import ConfigError
    from bridge.peers.pacs_dimse import associate, dimse_tls_args

    try:
        tls = dimse_tls_args(settings.pacs)
    except ConfigError as exc:
        return Check("PACS C-ECHO", FAIL, exc.message, "check BRIDGE_PACS__CLIENT_CERT/__KEY")
    assoc, rejection = associate(ae, pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls)
    if rejection is not None:
        return Check(
            "PACS C-ECHO",
            FAIL,
            "association rejected",
            f"register the bridge ({settings.dimse.ae_title}) in the PACS; check "
            "BRIDGE_PACS__AE_TITLE",
        )
    if not assoc.is_established:
        return Check(
            "PACS C-ECHO",
            FAIL,
            f"no answer from {pacs.host}:{pacs.port}",
            "check BRIDGE_PACS__HOST/__PORT and the firewall",
        )
    status = assoc.send_c_echo()
    assoc.release()
    code = int(status.Status) if status else -1
    return Check(
        "PACS C-ECHO",
        OK if code == 0 else FAIL,
        f"status 0x{code:04X}" if code >= 0 else "no answer",
    )


def _store(settings: Settings) -> list[Check]:
    from bridge.store.db import make_engine, schema_status

    try:
        engine = make_engine(settings.effective_database_url)
        current, head = schema_status(engine)
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error is the answer
        cause = exc.context.get("error") if isinstance(exc, BridgeError) else None
        return [
            Check(
                "state store",
                FAIL,
                f"unreachable ({cause or type(exc).__name__})",
                "check BRIDGE_DATABASE_URL and the database server",
            )
        ]
    if current != head:
        return [
            Check(
                "state store",
                FAIL,
                f"schema {current or 'empty'}, code wants {head}",
                "run `bridge migrate` (serve does it at start)",
            )
        ]
    return [
        Check("state store", OK, f"{settings.effective_database_url.split(':')[0]}, schema {head}")
    ]


def _spool(settings: Settings) -> list[Check]:
    root = settings.spool_dir
    base = root if root.exists() else settings.data_dir if settings.data_dir.exists() else None
    if base is None:
        return [Check("spool", WARN, f"{root} does not exist yet", "serve creates it at start")]
    free = shutil.disk_usage(base).free
    need = settings.spool.min_free_bytes
    out = [
        Check(
            "spool free space",
            OK if free > 2 * need else (WARN if free > need else FAIL),
            f"{free / 2**30:.1f} GiB free, floor {need / 2**30:.1f} GiB",
            "" if free > 2 * need else "free disk space or lower BRIDGE_SPOOL__MIN_FREE_BYTES",
        )
    ]
    if root.exists():
        mode = stat.S_IMODE(root.stat().st_mode)
        out.append(
            Check(
                "spool permissions",
                OK if mode & 0o077 == 0 else FAIL,
                f"{mode:o}",
                "" if mode & 0o077 == 0 else f"chmod 700 {root}: it holds patient data",
            )
        )
        quota = settings.spool.quota_bytes
        if quota:
            used = sum(
                f.stat().st_size
                for a in ("received", "deid")
                if (root / a).exists()
                for f in (root / a).iterdir()
            )
            out.append(
                Check(
                    "spool quota",
                    OK if used < 0.9 * quota else WARN,
                    f"{used / 2**20:.0f} of {quota / 2**20:.0f} MiB used",
                )
            )
    return out


def _port(name: str, host: str, port: int, in_use_probe: Callable[[], bool]) -> Check:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return Check(name, OK, f"{host}:{port} free")
        except OSError:
            pass
    if in_use_probe():
        return Check(name, OK, f"{host}:{port} in use by a running bridge")
    return Check(
        name, FAIL, f"{host}:{port} in use by another program", "stop it or choose another port"
    )


def _listener_answers(settings: Settings) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="DOCTOR")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    host = "127.0.0.1" if settings.dimse.host in ("0.0.0.0", "") else settings.dimse.host  # noqa: S104
    tls = None
    d = settings.dimse
    if d.tls_cert and d.tls_key:
        from bridge.tls import client_context

        tls = (client_context(False, d.tls_cert, d.tls_key), host)
    assoc = ae.associate(host, d.port, ae_title=d.ae_title, tls_args=tls)
    ok = bool(assoc.is_established)
    if ok:
        assoc.release()
    return ok


def _http_answers(settings: Settings) -> bool:
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "") else settings.http.host  # noqa: S104
    scheme = "https" if settings.http.tls_cert and settings.http.tls_key else "http"
    try:
        url = f"{scheme}://{host}:{settings.http.port}/healthz"
        return requests.get(url, timeout=3, verify=False).ok  # noqa: S501 - a liveness probe
    except requests.RequestException:
        return False


def _webhook(settings: Settings) -> Check:
    url = settings.reading.queue_url
    if not url:
        return Check(
            "case queue webhook",
            SKIP,
            "not configured",
            "set BRIDGE_READING__QUEUE_URL to send case manifests",
        )
    try:
        r = requests.head(url, timeout=10, verify=settings.reading.verify_tls)
    except requests.exceptions.SSLError:
        return Check("case queue webhook", FAIL, "TLS certificate not valid")
    except requests.RequestException as exc:
        return Check(
            "case queue webhook",
            FAIL,
            f"unreachable ({type(exc).__name__})",
            "check BRIDGE_READING__QUEUE_URL",
        )
    if r.status_code >= 500:
        return Check("case queue webhook", WARN, f"answers HTTP {r.status_code}")
    detail = f"reachable (HTTP {r.status_code} to HEAD)"
    if not settings.reading.queue_secret:
        return Check(
            "case queue webhook", WARN, detail, "set BRIDGE_READING__QUEUE_SECRET to sign manifests"
        )
    return Check("case queue webhook", OK, detail)


def _pixels(settings: Settings) -> Check:
    from bridge.deid.build import make_pixel_cleaner

    cfg = settings.deid.pixels
    if cfg.detector == "off":
        return Check(
            "burned-in text detector",
            WARN,
            "off: high-risk images are held",
            "BRIDGE_DEID__PIXELS__DETECTOR=db",
        )
    cleaner = make_pixel_cleaner(settings.deid.pixels)
    if not cleaner.detector.available():
        return Check(
            "burned-in text detector",
            FAIL,
            f"{cfg.detector} unavailable",
            "reinstall the bridge (the model ships in bridge/deid/pixels/models)",
        )
    from bridge.deid.pixels.ocr import tesseract_available

    if not tesseract_available():
        return Check(
            "burned-in text detector",
            WARN,
            f"{cfg.detector}; Tesseract unavailable: regions unlike text are masked unconfirmed",
            "apt-get install tesseract-ocr-eng (and pip install tesserocr)",
        )
    detail = cfg.detector + (", pre-filter" if cfg.prefilter else ", every frame in full")
    return Check("burned-in text detector", OK, detail)


def _vault(settings: Settings) -> Check:
    if not settings.vault.keys:
        return Check(
            "vault encryption",
            WARN,
            "off: identities stored as they are",
            "set BRIDGE_VAULT__KEYS (`bridge vault new-key`)",
        )
    from bridge.domain.errors import ConfigError
    from bridge.store.vault_crypto import VaultCipher

    try:
        VaultCipher([k.get_secret_value() for k in settings.vault.keys])
    except ConfigError as exc:
        return Check("vault encryption", FAIL, exc.message)
    return Check("vault encryption", OK, f"on, {len(settings.vault.keys)} key(s)")


def _required(settings: Settings) -> list[Check]:
    missing = []
    if not (settings.deid.secret and len(settings.deid.secret.get_secret_value()) >= 16):
        missing.append("BRIDGE_DEID__SECRET (>= 16 characters)")
    if not settings.reading.dicomweb_url:
        missing.append("BRIDGE_READING__DICOMWEB_URL")
    if not settings.api_token:
        missing.append("BRIDGE_API_TOKEN")
    if missing:
        return [
            Check(
                "required settings",
                FAIL,
                "missing: " + ", ".join(missing),
                "see config/bridge.example.toml",
            )
        ]
    return [Check("required settings", OK, "present")]


def run_checks(settings: Settings) -> list[Check]:
    checks = _required(settings)
    checks += _store(settings)
    checks += _spool(settings)
    checks.append(_vault(settings))
    checks.append(
        _port(
            "DICOM listener port",
            settings.dimse.host,
            settings.dimse.port,
            lambda: _listener_answers(settings),
        )
    )
    checks.append(
        _port("HTTP port", settings.http.host, settings.http.port, lambda: _http_answers(settings))
    )
    checks.append(_echo(settings))
    checks += _dicomweb("PACS", settings.pacs, "BRIDGE_PACS", stow=True)
    checks += _dicomweb("reading archive", settings.reading, "BRIDGE_READING", stow=True)
    checks.append(_webhook(settings))
    checks.append(_pixels(settings))
    if settings.watch.orthanc_url:
        try:
            r = requests.get(
                f"{settings.watch.orthanc_url}/changes?last",
                timeout=10,
                auth=(settings.watch.username, settings.watch.password.get_secret_value())
                if settings.watch.username and settings.watch.password
                else None,
            )
            ok = r.status_code == 200
            checks.append(
                Check(
                    "watched Orthanc",
                    OK if ok else FAIL,
                    f"HTTP {r.status_code}",
                    "" if ok else "check BRIDGE_WATCH__ORTHANC_URL and credentials",
                )
            )
        except requests.RequestException as exc:
            checks.append(Check("watched Orthanc", FAIL, f"unreachable ({type(exc).__name__})"))
    return checks


def print_table(checks: list[Check]) -> None:
    tty = os.isatty(1)
    colours = {OK: "32", WARN: "33", FAIL: "31", SKIP: "90"}
    width = max(len(c.name) for c in checks)
    for c in checks:
        verdict = f"\x1b[{colours[c.verdict]}m{c.verdict:4}\x1b[0m" if tty else f"{c.verdict:4}"
        line = f"{c.name:{width}}  {verdict}  {c.detail}"
        if c.hint and c.verdict != OK:
            line += f"  -> {c.hint}"
        print(line)
    failed = sum(c.verdict == FAIL for c in checks)
    warned = sum(c.verdict == WARN for c in checks)
    print(f"\n{len(checks)} checks: {failed} failed, {warned} to look at")


def doctor(_args: argparse.Namespace, settings: Settings) -> int:
    checks = run_checks(settings)
    print_table(checks)
    return 1 if any(c.verdict == FAIL for c in checks) else 0


COMMANDS = (
    Command(
        "doctor", "check everything configured; exit 0 only when all pass", no_arguments, doctor
    ),
)
