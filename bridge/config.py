"""Settings: one typed, immutable object built once at start-up and passed down.

Sources, highest priority first: keyword arguments (tests), environment variables
(prefix ``BRIDGE_``, ``__`` for nesting, e.g. ``BRIDGE_DIMSE__PORT``), a ``.env`` file,
a TOML file (``--config FILE.toml`` or ``BRIDGE_CONFIG_FILE``), then the defaults below.
Every setting is documented with its default in ``config/bridge.example.toml``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.domain.errors import ConfigError
from bridge.domain.vocabulary import Priority, Subspecialty

DEFAULT_AE_TITLE = "SECONDOPINION"
DEFAULT_DIMSE_PORT = 11112
DEFAULT_HTTP_PORT = 8080
DEFAULT_STABLE_SECONDS = 30.0


_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value or not value.isprintable():
        raise ValueError("an AE title is 1 to 16 printable characters without backslash")
    return value


AETitle = Annotated[str, AfterValidator(_ae_title)]


class ApiToken(BaseModel):
    """A named API token with a role (see bridge/web/tokens.py)."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    token: SecretStr
    role: Literal["admin", "submitter", "viewer", "reader"]

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("an API token has at least 16 characters")
        return v


class AeRoute(BaseModel):
    """A called AE title that routes received studies to a subspecialty and default question."""

    model_config = _FROZEN

    ae_title: AETitle
    subspecialty: Subspecialty = "general"
    question: str = ""
    priority: Priority = "routine"


class DimseSettings(BaseModel):
    """The C-STORE / C-ECHO listener."""

    model_config = _FROZEN

    ae_title: AETitle = DEFAULT_AE_TITLE
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_DIMSE_PORT, ge=0, le=65535)
    #: Calling AE titles allowed to associate from any host; empty (and no allowed_peers) =
    #: anyone. Checked before any data is accepted (A-ASSOCIATE-RJ).
    allowed_calling_aets: tuple[AETitle, ...] = ()
    #: "AET@host" pairs allowed to associate (the AE title only from that address).
    allowed_peers: tuple[str, ...] = ()
    #: Extra called AE titles, each routing to a subspecialty and default question.
    routes: tuple[AeRoute, ...] = ()
    max_associations: int = Field(16, ge=1)
    #: Processes accepting associations on the DICOM port (``bridge serve`` and N - 1
    #: ``bridge listen`` processes sharing its socket). One process serves its associations
    #: one at a time under Python's interpreter lock: for PACS that send with several
    #: associations at once, set it to the number of cores. The connection caps below, and
    #: max_associations, hold for the node (all its listener processes together).
    listener_processes: int = Field(1, ge=1, le=32)
    #: Connections one address may hold open at once (beyond: closed at accept, unread); the
    #: listener holds at most twice max_associations plus four.
    max_connections_per_peer: int = Field(16, ge=1)
    #: Largest PDU the bridge receives, advertised in every association (a PDU over it is
    #: refused unread, the association aborted). 16 KiB to 16 MiB.
    max_pdu_bytes: int = Field(256 * 1024, ge=16 * 1024, le=16 * 1024 * 1024)
    #: Seconds an association may stay idle (ACSE/DIMSE/network timeouts).
    timeout: float = Field(60.0, gt=0)
    #: Seconds to let running associations finish on shutdown before aborting them.
    shutdown_grace: float = Field(10.0, ge=0)
    #: DICOM TLS (PS3.15 B.1): the listener's certificate and key (PEM); both set = TLS only.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: CA bundle of the peers' client certificates; set = a client certificate is required.
    tls_ca: str | None = None

    @field_validator("allowed_peers")
    @classmethod
    def _peers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            aet, sep, host = entry.partition("@")
            if not sep or not host.strip():
                raise ValueError(f"dimse.allowed_peers: {entry!r} is not AET@host")
            _ae_title(aet)
        return tuple(e.strip() for e in v)

    def admits(self, calling: str, host: str) -> bool:
        """May this calling AE title, from this address, associate?"""
        if not self.allowed_calling_aets and not self.allowed_peers:
            return True
        if calling in self.allowed_calling_aets:
            return True
        return any(
            e.partition("@")[0].strip() == calling and e.partition("@")[2].strip() == host
            for e in self.allowed_peers
        )

    def route_for(self, called_aet: str) -> AeRoute | None:
        for route in self.routes:
            if route.ae_title == called_aet.strip():
                return route
        return None

    @property
    def accepted_called_aets(self) -> frozenset[str]:
        return frozenset([self.ae_title, *(r.ae_title for r in self.routes)])


class HttpSettings(BaseModel):
    """The HTTP server: health, metrics, API."""

    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535)
    #: Console session cookies carry the Secure flag (sent over HTTPS only; browsers also send
    #: them to http://localhost). Turn off only behind a TLS-terminating proxy on plain HTTP.
    secure_cookies: bool = True
    #: Hours a console sign-in lasts.
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    #: Console sign-in: failures of one account name before each further failure closes the
    #: door for a doubling delay (twice as many from one address), and the longest delay.
    login_free_attempts: int = Field(5, ge=1, le=100)
    login_max_delay_seconds: float = Field(900.0, ge=1, le=86400)
    #: Largest request body for the JSON API and console forms (STOW-RS and uploads have
    #: their own limits), in bytes: beyond, 413.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Connections served at once; beyond, 503 (slow or stuck clients cannot exhaust the server).
    max_connections: int = Field(256, ge=8)
    #: ``/metrics`` (Prometheus; counts and durations, no identifying values): "open", "token"
    #: (a bearer token that may read cases), or "off".
    metrics: Literal["open", "token", "off"] = "open"
    #: ``/docs`` and ``/openapi.json`` (every route described): "off", "token", or "open".
    api_docs: Literal["off", "token", "open"] = "off"
    #: HTTPS: certificate (chain) and key, PEM. Both set = the server speaks HTTPS only.
    tls_cert: str | None = None
    tls_key: str | None = None


class PixelSettings(BaseModel):
    """Burned-in text in the pixels (see bridge/deid/pixels)."""

    model_config = _FROZEN

    #: Text detector: "db" (neural text detector, ONNX on the CPU), "tesseract" (Tesseract's
    #: layout analysis), "off" (no scan: high-risk instances are then held).
    detector: Literal["db", "tesseract", "off"] = "db"
    #: What to do with an instance's pixels: "mask" text found, "hold" it for review when text
    #: is found, or "pass" without scanning. Per modality in ``modalities``, else ``default``.
    default: Literal["mask", "hold", "pass"] = "mask"
    modalities: dict[str, Literal["mask", "hold", "pass"]] = Field(default_factory=dict)
    #: Decoded pixel data larger than this is not scanned (high-risk instances are held).
    max_bytes: int = Field(512 * 1024 * 1024, gt=0)
    #: Where the "db" detector finds text, look again with the image scaled so its shorter side
    #: is this many pixels (0: no second look). Text-free images pay for one pass only.
    refine_side: int = Field(1472, ge=0, le=4096)
    #: Margin masked around each text region, as a share of its height.
    pad: float = Field(0.0, ge=0, le=2)
    #: Read masked regions with Tesseract to count those showing the patient's identifiers.
    read_text: bool = True
    #: A region the detector takes for text that is not shaped like text and that Tesseract
    #: cannot decide on (half-legible "words"): "mask" it, or "hold" the instance for review.
    unsure: Literal["mask", "hold"] = "mask"
    #: In frames the pre-filter passes, Tesseract reads the whole frame and any word spelling the
    #: header's identity (name, IDs, dates, accession, institution) is masked, found or not.
    identity_ocr: bool = True
    #: A cheap first look per frame (the detector on a frame scaled to a 512-pixel shorter side)
    #: decides which frames get the full scan; false: every frame gets it.
    prefilter: bool = True
    #: Frames of one multi-frame object scanned at once (each worker thread de-identifies its
    #: own instance besides: ``worker.deid_threads``).
    frame_threads: int = Field(2, ge=1, le=32)

    @field_validator("modalities")
    @classmethod
    def _upper(cls, v: dict[str, str]) -> dict[str, str]:
        return {k.strip().upper(): a for k, a in v.items()}


class DeidSettings(BaseModel):
    """De-identification."""

    model_config = _FROZEN

    #: Key for pseudonyms and UID mapping (HMAC). Required to run the pipeline.
    secret: SecretStr | None = None
    #: "reading" (default): Basic Profile + Retain Patient Characteristics, Retain Longitudinal
    #: Temporal Information with Modified Dates, Clean Descriptors, Retain Safe Private, Clean
    #: Structured Content, Clean Graphics. "basic": the Basic Profile alone. "strict": the Basic
    #: Profile, and attributes the table does not list are removed unless on the strict keep list.
    profile: Literal["basic", "reading", "strict"] = "reading"
    #: Files larger than this whose pixels are not scanned (policy "pass", released, or above
    #: pixels.max_bytes) are streamed: header in memory, pixel data copied by chunks.
    stream_above_bytes: int = Field(64 * 1024 * 1024, ge=0)
    #: Replace the profile's options (PS3.15 E.3 option names, see bridge/deid/tables/profiles.csv).
    options: tuple[str, ...] | None = None
    pixels: PixelSettings = PixelSettings()
    #: Prefix of the pseudonymous Patient ID and Name.
    pseudonym_prefix: str = Field("SO", pattern=r"^[A-Z0-9]{1,8}$")
    #: Value of (0012,0063) De-identification Method.
    method_text: str = "SECONDOPINION bridge: DICOM PS3.15 Annex E Basic Profile"


class DicomWebPeer(BaseModel):
    """A DICOMweb server the bridge talks to: its root URL, auth and TLS verification."""

    model_config = _FROZEN

    dicomweb_url: str | None = None
    #: Bearer token, or basic user/password.
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Verify TLS certificates (True), or a CA bundle path.
    verify_tls: bool | str = True
    #: Client certificate (PEM) for servers that require one, and its key if not in the same file.
    client_cert: str | None = None
    client_key: str | None = None
    #: Seconds to wait for an answer.
    timeout: float = Field(120.0, gt=0)

    @field_validator("dicomweb_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v


class PacsSettings(DicomWebPeer):
    """The hospital PACS: source for pulls, destination for returned reports."""

    ae_title: str | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    #: How to search and pull: "auto" (DICOMweb when dicomweb_url is set, else DIMSE),
    #: "dicomweb", or "dimse" (C-FIND and C-MOVE/C-GET even if dicomweb_url is set).
    protocol: Literal["auto", "dicomweb", "dimse"] = "auto"
    #: DIMSE retrieve: "c-move" (the PACS sends the study to the bridge's listener; the PACS
    #: must know the bridge's AE title, host and port) or "c-get" (on the same association).
    dimse_retrieve: Literal["c-move", "c-get"] = "c-move"
    #: C-MOVE destination; default: the listener's AE title (dimse.ae_title).
    move_destination: str | None = None
    #: DICOM TLS to the PACS (C-ECHO, C-FIND, C-MOVE/C-GET, C-STORE of reports): the server is
    #: verified as ``verify_tls`` says, ``client_cert``/``client_key`` are presented.
    dimse_tls: bool = False


class WatchSettings(BaseModel):
    """Watch mode: follow an Orthanc's change feed and submit each new stable study that
    matches the filters. The study is then pulled like any submission (``pacs.*`` must reach
    the same Orthanc, over DICOMweb or DIMSE)."""

    model_config = _FROZEN

    #: The Orthanc's REST root, e.g. http://orthanc:8042; unset = watch mode off.
    orthanc_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Seconds between polls of the change feed.
    poll_seconds: float = Field(5.0, gt=0)
    #: Where a feed seen for the first time starts: "now" (only studies that become stable
    #: from now on) or "beginning" (every study the Orthanc has).
    start_at: Literal["now", "beginning"] = "now"
    #: Filters (all must match; empty = any): a modality in the study, a regular expression
    #: searched in the Study Description (case-insensitive), the AE title that sent the study.
    modalities: tuple[str, ...] = ()
    study_description: str | None = None
    source_aets: tuple[str, ...] = ()
    #: The case opened for each study.
    subspecialty: Subspecialty = "general"
    priority: Priority = "routine"
    question: str = ""

    @field_validator("orthanc_url")
    @classmethod
    def _strip_url_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("study_description")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v:
            import re

            try:
                re.compile(v)
            except re.error as exc:
                msg = f"watch.study_description is not a regular expression: {exc}"
                raise ValueError(msg) from None
        return v


class VaultSettings(BaseModel):
    """Encryption at rest of the vault (original patient identity, headers, UIDs)."""

    model_config = _FROZEN

    #: Fernet keys (`bridge vault new-key`); the first encrypts, all decrypt. Rotation: put the
    #: new key first, run `bridge vault rotate`, then drop the old one. Empty: not encrypted.
    keys: tuple[SecretStr, ...] = ()


class AuditSettings(BaseModel):
    """The audit trail's copy to a syslog collector (DICOM Audit Messages in RFC 5424)."""

    model_config = _FROZEN

    #: Collector host; unset = the trail stays in the state store (console, API, CLI export).
    syslog_host: str | None = None
    syslog_port: int = Field(514, ge=1, le=65535)
    #: "tls" = RFC 5425 (IHE ATNA's transport): the collector is verified against
    #: ``syslog_ca`` (or the system's CAs); with a client certificate the bridge shows its own.
    syslog_protocol: Literal["udp", "tcp", "tls"] = "udp"
    syslog_ca: str | None = None
    syslog_client_cert: str | None = None
    syslog_client_key: str | None = None
    #: AuditSourceID of the messages; default: the listener's AE title.
    source_id: str | None = None


class SubmitSettings(BaseModel):
    """Studies submitted for a second opinion (CLI, API, console, watch, import)."""

    model_config = _FROZEN

    #: Longest clinical question / original report accepted, in characters.
    question_max: int = Field(2000, ge=1)
    report_max: int = Field(20000, ge=0)
    #: Hold a case's free text (clinical question, original report; scrubbed) for a person's
    #: review before it leaves: the manifest waits until an administrator approves it, as it
    #: is or edited (console case page, POST /api/v1/cases/{id}/free-text).
    free_text_review: bool = False
    #: Retrieves that fail this many times in a row fail the case (the error names the cause).
    retrieve_attempts: int = Field(8, ge=1)
    #: Priors: at most this many earlier studies per case; which ones qualify: "modality" (an
    #: earlier study sharing a modality with the submitted one) or "any" earlier study.
    priors_max: int = Field(10, ge=0, le=50)
    priors_match: Literal["modality", "any"] = "modality"
    #: Largest ZIP (unpacked) that `bridge import` or an upload accepts, in bytes.
    import_max_bytes: int = Field(20 * 1024**3, ge=1024)
    #: Largest upload (POST /api/v1/imports, the console's form) accepted, in bytes.
    upload_max_bytes: int = Field(4 * 1024**3, ge=1024)


class ReadingSettings(DicomWebPeer):
    """The remote reading archive (DICOMweb) and its case queue (webhook)."""

    queue_url: str | None = None
    queue_secret: SecretStr | None = None
    #: The reading archive's DICOMweb root as the readers reach it, given in the worklist's
    #: workitems as each input study's WADO-RS RetrieveURL (default: dicomweb_url, without
    #: credentials).
    retrieve_url: str | None = None
    #: Seconds between polls of the archive (QIDO-RS) for SR/KOS/PDF the reader made; 0 = off.
    poll_seconds: float = Field(60.0, ge=0)
    #: STOW-RS batching: at most this many instances / bytes per request.
    stow_max_instances: int = Field(50, ge=1)
    stow_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    #: Parallel STOW-RS requests.
    stow_parallel: int = Field(2, ge=1, le=16)
    #: Exponential backoff for transient failures: first delay, and the cap.
    retry_initial: float = Field(2.0, gt=0)
    retry_max: float = Field(300.0, gt=0)

    @field_validator("queue_url")
    @classmethod
    def _strip_queue_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v


class FindingsSettings(BaseModel):
    """Reports built from findings and returned to the PACS."""

    model_config = _FROZEN

    #: Section headings of TID 2000: "DCM" (121070/121072/121074) or "LN" (LOINC).
    section_codes: Literal["DCM", "LN"] = "DCM"
    #: SR IOD of the built report: "enhanced" (Enhanced SR) or "basic_text" (Basic Text SR).
    sr_kind: Literal["enhanced", "basic_text"] = "enhanced"
    #: Also build a Key Object Selection document (TID 2010) of the key images.
    key_object_selection: bool = True
    #: Also return an Encapsulated PDF rendering of the report (viewers without SR support).
    pdf: bool = False
    #: Days a returned (or discarded) report's file stays in spool/reports (encrypted when
    #: the vault is) before it is deleted; 0 = deleted once the PACS has it. Its record, UIDs
    #: and state stay in the state store.
    report_retention_days: float = Field(7.0, ge=0)


class Hl7Settings(BaseModel):
    """Results to the EHR: every report returned to the PACS also goes to the hospital's
    interface engine or RIS as an HL7 v2.5.1 ORU^R01 over MLLP."""

    model_config = _FROZEN

    #: The interface engine's MLLP listener; empty: no ORU is sent.
    host: str = ""
    port: int = Field(2575, ge=1, le=65535)
    #: MSH-3 and MSH-4 (this bridge), MSH-5 and MSH-6 (the receiver), as its engine expects.
    sending_application: str = Field("SECONDOPINION", max_length=180)
    sending_facility: str = Field("", max_length=180)
    receiving_application: str = Field("", max_length=180)
    receiving_facility: str = Field("", max_length=180)
    #: MSH-11: P production, T training, D debugging.
    processing_id: Literal["P", "T", "D"] = "P"
    #: Seconds to connect and to wait for the ACK.
    timeout: float = Field(30.0, gt=0)
    #: MLLP over TLS (IHE ITI TLS): the receiver is verified against ``ca`` (or the system's
    #: CAs); with a client certificate the bridge shows its own.
    tls: bool = False
    ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    #: The hospital PACS's DICOMweb root as the EHR reaches it: the ORU then points at the SR
    #: with a WADO-RS URL (OBX of type RP); empty: it names the SR by its SOP Instance UID.
    wado_rs_url: str = ""


class FhirSettings(BaseModel):
    """Results to the EHR as FHIR R4: every report SR returned to the PACS is also POSTed to the
    hospital's FHIR server as a transaction Bundle (Patient, ImagingStudy, DiagnosticReport)."""

    model_config = _FROZEN

    #: The FHIR server's base URL (the transaction is POSTed to it); empty: nothing is sent.
    url: str = ""
    #: A static bearer token; or OAuth 2.0 client credentials below.
    token: SecretStr | None = None
    token_url: str = ""
    client_id: str = ""
    client_secret: SecretStr | None = None
    scope: str = ""
    timeout: float = Field(30.0, gt=0)
    verify_tls: bool = True
    #: The identifier system of the hospital's Patient IDs (e.g. its MRN system URI); empty: the
    #: DICOM Issuer of Patient ID as ``urn:oid:`` (an OID) or ``urn:dicom:issuer:<issuer>``.
    patient_system: str = ""


class TurnaroundSettings(BaseModel):
    """When a case is due, by priority: hours after its arrival by which its first report
    should be back in the PACS. A case still waiting after that is past due: counted in the
    metrics, shown in the console, and logged once (``case.past_due``). 0: never due."""

    model_config = _FROZEN

    stat_hours: float = Field(4.0, ge=0)
    urgent_hours: float = Field(24.0, ge=0)
    routine_hours: float = Field(120.0, ge=0)

    def due_hours(self) -> dict[str, float]:
        return {
            "stat": self.stat_hours,
            "urgent": self.urgent_hours,
            "routine": self.routine_hours,
        }


class SpoolSettings(BaseModel):
    """The on-disk spool of received and de-identified instances."""

    model_config = _FROZEN

    #: Where the spool lives (default: <data_dir>/spool). Several nodes sharing a state store
    #: share this path too (a shared filesystem): any node's worker reads any node's files.
    path: Path | None = None
    #: Maximum bytes held in the spool; 0 = no quota (the disk still limits).
    quota_bytes: int = Field(0, ge=0)
    #: Refuse new instances (0xA700) when the filesystem has less free space than this.
    min_free_bytes: int = Field(512 * 1024 * 1024, ge=0)
    #: Keep the original received file until the instance is forwarded, then delete it.
    keep_forwarded: bool = False


class WorkerSettings(BaseModel):
    """The pipeline workers (de-identify, forward, cases, manifests)."""

    model_config = _FROZEN

    #: Worker processes started by `bridge serve` (0 = threads inside the serve process).
    #: Separate processes keep de-identification off the listener's interpreter lock.
    processes: int = Field(1, ge=0, le=32)

    #: Threads de-identifying instances.
    deid_threads: int = Field(2, ge=1, le=32)
    #: Seconds between looks when idle; the state store is asked again only once this node
    #: wrote something or after five intervals (``bridge/runtime/activity.py``).
    poll_interval: float = Field(0.2, gt=0)
    #: Seconds a claim on an instance or job lasts before another worker may take it.
    lease_seconds: float = Field(300.0, gt=0)
    #: Every this many seconds a worker deletes spool files left by any node that died (older
    #: than two leases and not referenced by the state store); 0 = never.
    sweep_seconds: float = Field(600.0, ge=0)
    #: Listener first: how de-identification and forwarding share this node with its listener
    #: while a PACS sends (measured in docs/bench.md and docs/bench-ingest.md).
    #: "wait": they do not run while the listener receives (``intake_quiet_seconds``), so the
    #: sender is answered about as fast as by the listener alone, and the study moves on once
    #: it has arrived; the listener's journal is recorded in batches of up to a second
    #: meanwhile. "yield": they run while the study arrives, the worker processes'
    #: de-identification and forwarding threads at the lowest CPU priority (Linux SCHED_IDLE);
    #: the journal is recorded as it comes (the study is through sooner, the sender waits
    #: longer). "off": no preference.
    listener_first: Literal["wait", "yield", "off"] = "wait"
    #: "wait": the listener counts as receiving for this many seconds after an association
    #: opened or an instance was stored.
    intake_quiet_seconds: float = Field(0.3, gt=0, le=60)
    #: "wait": the longest they wait in a row for a sender that does not stop; then they run
    #: as long, and wait again. A minute (Orthanc's default StableAge): a 2,000-slice study
    #: arrives whole before the pipeline starts on it.
    intake_max_wait_seconds: float = Field(60.0, gt=0, le=3600)


class Settings(BaseSettings):
    """All settings of the bridge."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
    )

    data_dir: Path = Path("./var")
    #: This node's name in leases and spool file names (default: the host name). Unique per
    #: node: nodes sharing a state store must never share a node id (docs/scale-out.md).
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,23}$")
    database_url: str | None = None
    #: The administrator's API token (at least 16 characters).
    api_token: SecretStr | None = None
    #: More API tokens, named, each with a role: [{"name", "token", "role"}] (environment only).
    api_tokens: tuple[ApiToken, ...] = ()
    study_stable_seconds: float = Field(DEFAULT_STABLE_SECONDS, ge=0)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Prefix for UIDs the bridge creates itself (not pseudonyms).
    uid_root: str = Field("2.25.", pattern=r"^[0-9.]+\.$")
    #: Default subspecialty/priority of pushed studies without a route.
    default_subspecialty: Subspecialty = "general"
    default_priority: Priority = "routine"

    @field_validator("api_token")
    @classmethod
    def _api_token_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("BRIDGE_API_TOKEN must be at least 16 characters")
        return v

    dimse: DimseSettings = DimseSettings()
    http: HttpSettings = HttpSettings()
    deid: DeidSettings = DeidSettings()
    pacs: PacsSettings = PacsSettings()
    reading: ReadingSettings = ReadingSettings()
    findings: FindingsSettings = FindingsSettings()
    hl7: Hl7Settings = Hl7Settings()
    fhir: FhirSettings = FhirSettings()
    turnaround: TurnaroundSettings = TurnaroundSettings()
    spool: SpoolSettings = SpoolSettings()
    worker: WorkerSettings = WorkerSettings()
    submit: SubmitSettings = SubmitSettings()
    watch: WatchSettings = WatchSettings()
    audit: AuditSettings = AuditSettings()
    vault: VaultSettings = VaultSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        # ``--config`` (load_settings gives it as the class's toml_file), else the environment
        toml_file = settings_cls.model_config.get("toml_file") or os.environ.get(
            "BRIDGE_CONFIG_FILE"
        )
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(str(toml_file))))
        sources.append(file_secret_settings)
        return tuple(sources)

    @model_validator(mode="after")
    def _routes_unique(self) -> Settings:
        titles = [self.dimse.ae_title, *(r.ae_title for r in self.dimse.routes)]
        if len(set(titles)) != len(titles):
            raise ValueError("dimse.routes: every called AE title must be distinct")
        return self

    # -- derived paths -------------------------------------------------------------------------
    @property
    def spool_dir(self) -> Path:
        return self.spool.path or self.data_dir / "spool"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bridge.sqlite3').resolve()}"

    def require_pipeline(self) -> None:
        """Refuse to run the pipeline without what it cannot do without."""
        missing = []
        if self.deid.secret is None or not self.deid.secret.get_secret_value():
            missing.append("BRIDGE_DEID__SECRET")
        if not self.reading.dicomweb_url:
            missing.append("BRIDGE_READING__DICOMWEB_URL")
        if missing:
            raise ConfigError("missing required settings: " + ", ".join(missing))
        if len(self.deid.secret.get_secret_value()) < 16:  # type: ignore[union-attr]
            raise ConfigError("BRIDGE_DEID__SECRET must be at least 16 characters")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file (optional), the environment and ``.env``."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        try:
            with config_file.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    cls = Settings if config_file is None else _with_file(config_file)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        # each setting and why, never the value given (it may be a token or a key)
        why = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {why}") from None
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def _with_file(config_file: Path) -> type[Settings]:
    """The settings read from ``config_file`` too, without touching the process's environment
    (worker processes get ``--config`` on their command line)."""
    config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
    return type("Settings", (Settings,), {"model_config": config, "__module__": __name__})
