"""C-STORE ingest, acknowledged: the bridge next to Orthanc and dcmtk's storescp.

The same sender (storescu, one association, TCP_NODELAY=1) sends the same generated CT study
to each receiver, started fresh for each run. The bridge acknowledges an instance only once it
is fsynced in the spool and recorded in the state store; storescp does not fsync; Orthanc,
as deployed (its default SyncStorageArea), fsyncs each stored file.
The bridge runs as it would in production (`bridge serve`, its worker process de-identifying
and forwarding while the study arrives), with the burned-in scan off so that the workers'
load is the header path (the scan's cost is measured in bench/deid.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# the test suite's peers (Orthanc, storescu, the bridge as a process) live in tests/support
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.orthanc import Orthanc, free_port  # noqa: E402
from tests.support.peers import BridgeProcess, storescu  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - a benchmark fixture


def timed_storescu(port: int, files: list[Path], aet: str, associations: int = 1) -> float:
    """Seconds until every file is acknowledged; ``associations`` storescu processes at once,
    each sending its share of the study (as a PACS sending with several associations). The
    disks are synced first: storescp does not fsync, and the writeback of what it (or an earlier
    receiver) left would otherwise fall on the receiver timed next."""
    os.sync()  # what earlier runs left in the page cache is not written during this one
    if associations > 1:
        return _parallel(port, files, aet, associations)
    t = time.perf_counter()
    out = storescu(port, files, aet=aet)
    elapsed = time.perf_counter() - t
    acked = out.stdout.count("Received Store Response (Success)")
    if acked != len(files):
        raise RuntimeError(f"{aet}: {acked} of {len(files)} acknowledged")
    return elapsed


def _parallel(port: int, files: list[Path], aet: str, associations: int) -> float:
    shares = [files[i::associations] for i in range(associations)]
    env = dict(os.environ, TCP_NODELAY="1")
    t = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-v", "-aet", "STORESCU", "-aec", aet, "127.0.0.1", str(port)]
            + [str(f) for f in share],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for share in shares
    ]
    ok = "Received Store Response (Success)"
    acked = sum(p.communicate(timeout=600)[0].count(ok) for p in procs)
    elapsed = time.perf_counter() - t
    if acked != len(files):
        raise RuntimeError(f"{aet}: {acked} of {len(files)} acknowledged")
    return elapsed


def storescp(work: Path, files: list[Path], associations: int = 1) -> float:
    """dcmtk's storescp (with ``--fork`` for several associations: one process each)."""
    out = work / "storescp"
    out.mkdir(parents=True)
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    fork = ["--fork"] if associations > 1 else []
    proc = subprocess.Popen(
        ["storescp", *fork, "-od", str(out), "-aet", "STORESCP", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)],
                    capture_output=True,
                    env=env,
                    check=False,
                ).returncode
                == 0
            ):
                break
            time.sleep(0.05)
        return timed_storescu(port, files, "STORESCP", associations)
    finally:
        proc.terminate()
        proc.wait(10)


def bare_pynetdicom(work: Path, files: list[Path], associations: int = 1) -> float:
    """The floor under the bridge's door: a pynetdicom acceptor that only streams each dataset
    to a file and fsyncs it (no parse, no journal, no record), configured as the bridge's
    listener is (maximum PDU, TCP_NODELAY, chunked receive), in a process of its own."""
    out = work / "bare"
    out.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _BARE, str(out), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        return timed_storescu(port, files, "BARE", associations)
    finally:
        proc.terminate()
        proc.wait(10)


_BARE = """
import functools, os, socket, sys, tempfile
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom import dimse_messages
_config.STORE_RECV_CHUNKED_DATASET = True
dimse_messages.NamedTemporaryFile = functools.partial(tempfile.NamedTemporaryFile, dir=sys.argv[1])
def on_store(event):
    fd = os.open(event.dataset_path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return 0
def on_open(event):
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ae = AE("BARE")
ae.maximum_pdu_size = 256 * 1024
ae.maximum_associations = 16
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
server = ae.start_server(("127.0.0.1", int(sys.argv[2])), block=False,
    evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_open)])
print("ready", flush=True)
import threading
threading.Event().wait()
"""


#: Orthanc as deployed: its defaults, an fsync per stored file (the test suite's peers turn that
#: off; here Orthanc is measured, not a peer).
AS_DEPLOYED = {"SyncStorageArea": True}


def deployed(name: str, workdir: Path, **settings: Any) -> Orthanc:
    """An Orthanc with its default storage settings (plus ``settings``), started."""
    return Orthanc(name, workdir, aet=name, extra={**AS_DEPLOYED, **settings}).start()


def orthanc(work: Path, files: list[Path], associations: int = 1) -> float:
    o = deployed("INGEST", work / "orthanc")
    try:
        return timed_storescu(o.dicom_port, files, "INGEST", associations)
    finally:
        o.stop()


def bridge_env(reading: Orthanc, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "BRIDGE_DEID__SECRET": SECRET,
        "BRIDGE_READING__DICOMWEB_URL": reading.dicomweb,
        "BRIDGE_LOG_LEVEL": "info",
        "BRIDGE_SPOOL__MIN_FREE_BYTES": "0",
        "BRIDGE_DEID__PIXELS__DEFAULT": "pass",
    }
    env.update(extra or {})
    return env


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, timeout: float = 20.0) -> float:
    """Until ``pid`` and its children have used under 3 % of a core for half a second: the
    bridge's start (its processes' imports, the first look at the state store, a worker's first
    poll) is not timed. Seconds waited."""
    started = time.monotonic()
    window = 0.5
    while time.monotonic() - started < timeout:
        pids = [pid, *children(pid)]
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(window)
        if sum(cpu_seconds(p) for p in pids) - before < 0.03 * window:
            return time.monotonic() - started
    raise RuntimeError(f"the bridge did not settle in {timeout:.0f} s")


def wait_workers(b: BridgeProcess, count: int = 1, timeout: float = 60) -> None:
    """Until ``count`` worker processes have started (imports and the text detector loaded):
    their start-up must not be timed, nor compete with the timed part for the CPU."""
    deadline = time.monotonic() + timeout
    while b.log().count('"worker.started"') < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker process did not start")
        time.sleep(0.1)


def wait_listeners(b: BridgeProcess, count: int, timeout: float = 60) -> None:
    """Until ``count`` extra listener processes accept (their start-up is not timed)."""
    deadline = time.monotonic() + timeout
    while b.log().count('"listener.process_started"') < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the listener processes did not start")
        time.sleep(0.1)


def bridge(
    work: Path,
    files: list[Path],
    pipeline: bool = True,
    associations: int = 1,
    listener_first: str | None = None,
    listeners: int = 1,
) -> float:
    """``pipeline=False``: `serve --no-workers`, the listener alone (nothing de-identified or
    forwarded meanwhile), to tell its own speed from the competition for the CPU;
    ``listener_first``: that setting instead of its default ("wait"); ``listeners``:
    ``dimse.listener_processes``."""
    reading = deployed("READING", work / "reading")
    args = ("serve",) if pipeline else ("serve", "--no-workers")
    extra = {"BRIDGE_DIMSE__LISTENER_PROCESSES": str(listeners)}
    if listener_first:
        extra["BRIDGE_WORKER__LISTENER_FIRST"] = listener_first
    b = BridgeProcess(work / "bridge", bridge_env(reading, extra), args=args)
    b.start()
    try:
        if pipeline:
            wait_workers(b)
        wait_listeners(b, listeners - 1)
        assert b.process is not None
        wait_quiet(b.process.pid)
        return timed_storescu(b.dimse_port, files, "SECONDOPINION", associations)
    finally:
        b.stop()
        reading.stop()


def main() -> int:
    """`make bench-ingest`: section 1 of `make bench` alone (docs/bench-ingest.md)."""
    import argparse
    import statistics
    import tempfile
    from datetime import UTC, datetime

    from bridge.sample import make_study

    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/bench-ingest.md"))
    args = ap.parse_args()
    n, runs = args.instances, args.runs
    started = time.monotonic()
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        study = make_study(root / "study", n, seed=42)
        cores = os.cpu_count() or 2
        receivers: list[tuple[str, Any]] = [
            ("dcmtk storescp", lambda w, k: storescp(w, study.paths, k)),
            ("Orthanc", lambda w, k: orthanc(w, study.paths, k)),
            ("bridge, as deployed", lambda w, k: bridge(w, study.paths, True, k)),
            (
                'bridge, as deployed, listener_first "yield"',
                lambda w, k: bridge(w, study.paths, True, k, "yield"),
            ),
            (
                'bridge, as deployed, listener_first "off"',
                lambda w, k: bridge(w, study.paths, True, k, "off"),
            ),
            ("bridge, listener alone", lambda w, k: bridge(w, study.paths, False, k)),
            (
                f"bridge, as deployed, {cores} listener processes",
                lambda w, k: bridge(w, study.paths, True, k, listeners=cores),
            ),
            (
                f"bridge, listener alone, {cores} listener processes",
                lambda w, k: bridge(w, study.paths, False, k, listeners=cores),
            ),
            ("bare pynetdicom acceptor (+ fsync)", lambda w, k: bare_pynetdicom(w, study.paths, k)),
        ]
        results: dict[tuple[str, int], list[float]] = {}
        for k in (1, 4):
            for name, fn in receivers:
                results[name, k] = [fn(root / f"{name[:6]}-{k}-{i}", k) for i in range(runs)]
                print(f"{name}, {k} association(s): {results[name, k]}", flush=True)
    for k in (1, 4):
        orth = statistics.median(results["Orthanc", k])
        for name, _ in receivers:
            med = statistics.median(results[name, k])
            runs_s = ", ".join(f"{v:.2f}" for v in results[name, k])
            table.append(
                f"| {name} | {k} | {med:.2f} | {runs_s} | {n / med:.0f} | {med / orth:.2f} |"
            )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            "# C-STORE ingest",
            "",
            f"`make bench-ingest` (bench/ingest.py), measured {when} on this machine "
            f"({os.cpu_count()} cores), {n} CT instances of 512 KB, in "
            f"{(time.monotonic() - started) / 60:.1f} minutes. Seconds from the first byte "
            "sent until every instance is acknowledged; each receiver started fresh for each "
            "run, the bridge timed once its processes are idle (its start is not timed); "
            "with 4 associations, 4 storescu processes send a quarter of the study each "
            "at once (storescp with --fork). The bridge acknowledges an instance once it is "
            "fsynced in the spool and its record synced in the intake journal; storescp does not "
            "fsync; Orthanc, as deployed (its default SyncStorageArea), fsyncs each stored file. "
            "As deployed, its worker process de-identifies and forwards "
            "to a reading Orthanc on the same machine, once the "
            'listener has been quiet for 0.3 s (`worker.listener_first` "wait", the default); '
            'with "yield" it works while the study arrives, at the lowest CPU priority; '
            '"off": no preference. '
            '"listener alone" is `serve --no-workers`. "N listener processes": '
            "`dimse.listener_processes` N, serve and N - 1 `bridge listen` processes accepting on "
            "one socket. The bare pynetdicom acceptor streams "
            "each dataset to a file and fsyncs it, nothing else (bench/ingest.py "
            "`bare_pynetdicom`): the floor under the bridge's door.",
            "",
            "| receiver | associations | seconds (median) | runs | instances/s | time vs Orthanc |",
            "|---|---:|---:|---|---:|---:|",
            *table,
            "",
        ]
    )
    args.out.write_text(text + _analysis(args.out))
    print(text)
    return 0


def _analysis(out: Path) -> str:
    """The hand-written sections below the table (from the first ``## `` heading on) of the
    report this run replaces: a new run renews the table and keeps the reading of it."""
    if not out.exists():
        return ""
    old = out.read_text()
    at = old.find("\n## ")
    return "" if at < 0 else "\n" + old[at + 1 :]


if __name__ == "__main__":
    sys.exit(main())
