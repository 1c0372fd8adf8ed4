"""`make bench`: the bridge measured next to Orthanc and dcmtk, side by side, in one run.

Sections (each prints as it goes; the whole table goes to docs/bench.md):

1. C-STORE ingest to acknowledged: storescu -> storescp / Orthanc / the bridge (bench/ingest.py).
2. End to end: storescu -> bridge -> de-identified in the reading Orthanc, next to storescu
   straight into that Orthanc; header path (CT pixels "pass") and the default burned-in scan.
3. De-identification throughput: the bridge's engine (one thread, header path) vs Orthanc's
   own /studies/{id}/anonymize on the same study.
4. Peak RSS of the bridge (serve + its worker process) for 200 vs 2,000 instances end to end,
   and for one 1 GiB multi-frame instance.
5. Scale-out on PostgreSQL: a `serve --no-workers` node receives a study; one vs two
   `bridge worker` processes de-identify it (with the scan) and forward it.

Same generated CT (512 x 512 x 16 bit, 512 KB per instance), fresh servers per run,
TCP_NODELAY=1 for dcmtk and Orthanc. Medians over --runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support

import ingest  # noqa: E402
from ingest import (  # noqa: E402
    SECRET,
    bridge_env,
    children,
    cpu_seconds,
    deployed,
    timed_storescu,
    wait_quiet,
    wait_workers,
)

from bridge.deid.pseudonyms import Pseudonymizer  # noqa: E402
from bridge.sample import (  # noqa: E402
    PlantedPatient,
    SampleStudy,
    make_large_instance,
    make_study,
)
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.peers import BridgeProcess, storescu  # noqa: E402

PG_ADMIN = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def log(msg: str) -> None:
    print(msg, flush=True)


# -- memory ---------------------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children (sum), sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        kids: list[int] = []
        last_scan = 0.0
        while not self._stop_event.is_set():
            if time.monotonic() - last_scan > 1.0:
                kids = children(self.pid)
                last_scan = time.monotonic()
            total = _rss_kib(self.pid) + sum(_rss_kib(k) for k in kids)
            self.peak_kib = max(self.peak_kib, total)
            self._stop_event.wait(0.05)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak_kib // 1024


# -- end to end -----------------------------------------------------------------------------
def count_in(o: Orthanc, study_uid: str) -> int:
    r = requests.post(
        f"{o.url}/tools/find",
        timeout=120,
        json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
    )
    return len(r.json())


def direct_cpu(work: Path, files: list[Path]) -> float:
    """CPU seconds Orthanc uses to receive ``files`` directly."""
    o = deployed("DIRECT", work / "direct")
    try:
        assert o.process is not None
        before = cpu_seconds(o.process.pid)
        timed_storescu(o.dicom_port, files, "DIRECT")
        time.sleep(0.2)
        return cpu_seconds(o.process.pid) - before
    finally:
        o.stop()


def forwarded(b: BridgeProcess) -> int:
    return sum(c["instances"].get("forwarded", 0) for c in b.api("/cases"))


#: CPU seconds per process of the last via_bridge run: serve, worker, reading Orthanc.
LAST_CPU: dict[str, float] = {}


def via_bridge(
    work: Path, files: list[Path], study_uid: str, extra: dict[str, str] | None = None
) -> tuple[float, float, int]:
    """(ingest seconds, end-to-end seconds, peak RSS MiB of serve + workers); the CPU used by
    each process in LAST_CPU."""
    o = deployed("READING", work / "reading")
    b = BridgeProcess(work / "bridge", bridge_env(o, extra))
    b.start()
    wait_workers(b)
    assert b.process is not None
    wait_quiet(b.process.pid)
    sampler = RssSampler(b.process.pid)
    sampler.start()
    pseudo = Pseudonymizer(SECRET.encode()).uid(study_uid)
    assert o.process is not None
    pids = {"bridge serve": b.process.pid, "reading Orthanc": o.process.pid}
    for i, child in enumerate(children(b.process.pid)):
        pids[f"bridge worker {i + 1}" if i else "bridge worker"] = child
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    try:
        os.sync()  # (as timed_storescu: earlier runs' writeback not timed here)
        t = time.perf_counter()
        ingest_s = timed_storescu(b.dimse_port, files, "SECONDOPINION")
        deadline = time.monotonic() + 1800
        while forwarded(b) < len(files):
            if time.monotonic() > deadline:
                raise RuntimeError("the bridge did not forward everything in 30 minutes")
            time.sleep(0.25)  # (each look costs the bridge an API call)
        e2e = time.perf_counter() - t
        LAST_CPU.clear()
        LAST_CPU.update({name: cpu_seconds(pid) - before[name] for name, pid in pids.items()})
        if count_in(o, pseudo) != len(files):
            raise RuntimeError("the reading archive does not hold every instance")
        return ingest_s, e2e, sampler.stop()
    finally:
        sampler.stop() if sampler.is_alive() else None
        b.stop()
        o.stop()


# -- Orthanc's anonymizer ---------------------------------------------------------------------
def orthanc_anonymize(work: Path, files: list[Path], sync: bool) -> float:
    """Instances/s of Orthanc's /studies/{id}/anonymize (synchronous) on the study; ``sync``:
    with an fsync per stored instance (Orthanc's default), or without (what the bridge's engine
    is measured doing: read, de-identify, write, no fsync)."""
    o = deployed("ANON", work / "anon", SyncStorageArea=sync)
    try:
        storescu(o.dicom_port, files, aet="ANON")
        (study,) = requests.get(f"{o.url}/studies", timeout=60).json()
        t = time.perf_counter()
        r = requests.post(
            f"{o.url}/studies/{study}/anonymize",
            json={"Synchronous": True, "Force": True},
            timeout=1800,
        )
        r.raise_for_status()
        return len(files) / (time.perf_counter() - t)
    finally:
        o.stop()


def bridge_deid_rate(files: list[Path], warm: list[Path]) -> float:
    """Instances/s of the bridge's engine in this process, as in a running worker: a fresh
    engine, warmed up on ``warm`` (another patient's study: the imports, the name tables and
    the profile's plans are loaded once per worker process, not per study), then timed on
    ``files`` (a study this process has not seen: nothing of it is in the engine's caches)."""
    os.environ.setdefault("BRIDGE_DEID__SECRET", SECRET)
    from bridge.config import Settings
    from bridge.deid.build import make_deidentifier
    from bridge.deid.engine import write_result

    engine = make_deidentifier(Settings(deid={"pixels": {"default": "pass"}}).deid)  # type: ignore[arg-type]
    out = Path(tempfile.mkdtemp(prefix="bench-deid-out-"))
    for i, f in enumerate(warm):
        write_result(engine.deidentify_file(f), out / f"warm{i}.dcm")
    t = time.perf_counter()
    for i, f in enumerate(files):
        write_result(engine.deidentify_file(f), out / f"{i}.dcm")
    rate = len(files) / (time.perf_counter() - t)
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    return rate


def deid_studies(root: Path, n: int, runs: int) -> tuple[list[SampleStudy], SampleStudy]:
    """A study of ``n`` instances per run, each of another patient, and a small one to warm up."""

    def patient(i: int) -> PlantedPatient:
        return PlantedPatient(f"FAMILY{i}", f"GIVEN{i}", f"PID-{i:07d}", f"ISSUER-{i}", "19610417")

    studies = [
        make_study(root / f"deid{i}", n, seed=100 + i, patient=patient(i)) for i in range(runs)
    ]
    return studies, make_study(root / "deid-warm", 20, seed=99, patient=patient(99))


# -- scale-out --------------------------------------------------------------------------------
def scale(work: Path, files: list[Path], workers: int) -> float:
    """Seconds from the first instance sent to a `serve --no-workers` node until ``workers``
    worker processes (started and ready beforehand) have de-identified (with the scan) and
    forwarded the whole study, on PostgreSQL."""
    from sqlalchemy import create_engine

    name = f"bridge_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    o = deployed("READING", work / "reading")
    env = bridge_env(
        o,
        {
            "BRIDGE_DATABASE_URL": url,
            "BRIDGE_SPOOL__PATH": str(work / "spool"),
            "BRIDGE_DEID__PIXELS__DEFAULT": "mask",
            "BRIDGE_WORKER__DEID_THREADS": "1",
            "BRIDGE_NODE_ID": "bench-a",
        },
    )
    a = BridgeProcess(work / "a", env, args=("serve", "--no-workers")).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [a.worker(i, BRIDGE_NODE_ID=f"bench-{i}") for i in range(workers)]
        deadline = time.monotonic() + 60
        while (
            sum(
                (a.workdir / f"worker-{i}.log").read_text().count('"worker.started"')
                for i in range(workers)
            )
            < workers
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("worker processes did not start")
            time.sleep(0.1)
        t = time.perf_counter()
        timed_storescu(a.dimse_port, files, "SECONDOPINION")
        while forwarded(a) < len(files):
            time.sleep(0.1)
        return time.perf_counter() - t
    finally:
        for p in procs:
            p.terminate()
            p.wait(60)
        a.stop()
        o.stop()
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


# -- main -------------------------------------------------------------------------------------
def interleaved(
    runs: int, receivers: dict[str, Callable[[int], float]]
) -> dict[str, tuple[float, list[float]]]:
    """Each receiver ``runs`` times, taking turns (run 1 of each, then run 2 of each, ...), so
    that the machine's drift over the minutes of a run weighs on every receiver alike: the
    median and the runs of each."""
    values: dict[str, list[float]] = {name: [] for name in receivers}
    for i in range(runs):
        for name, fn in receivers.items():
            values[name].append(fn(i))
    return {name: (statistics.median(v), v) for name, v in values.items()}


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--large-instances", type=int, default=2000)
    ap.add_argument("--large-object-mib", type=int, default=1024)
    ap.add_argument("--scan-instances", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/bench.md"))
    args = ap.parse_args()
    n, big, runs = args.instances, args.large_instances, args.runs
    started = time.monotonic()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        small = make_study(root / "small", n, seed=42)
        large = make_study(root / "large", big, seed=43)

        # 1. ingest
        log(f"ingest, {n} instances, {runs} runs")
        first = interleaved(
            runs,
            {
                "scp": lambda i: ingest.storescp(root / f"scp{i}", small.paths),
                "orth": lambda i: ingest.orthanc(root / f"orth{i}", small.paths),
                "brg": lambda i: ingest.bridge(root / f"brg{i}", small.paths),
                "yld": lambda i: ingest.bridge(
                    root / f"yield{i}", small.paths, listener_first="yield"
                ),
                "alone": lambda i: ingest.bridge(root / f"alone{i}", small.paths, pipeline=False),
            },
        )
        (scp, scp_v), (orth, orth_v), (brg, brg_v) = first["scp"], first["orth"], first["brg"]
        (yld, yld_v), (alone, alone_v) = first["yld"], first["alone"]
        log(
            f"  storescp {fmt(scp_v)}; Orthanc {fmt(orth_v)}; bridge {fmt(brg_v)}; "
            f"listener_first yield {fmt(yld_v)}; listener alone {fmt(alone_v)}"
        )
        log(f"ingest, {big} instances, 1 run")
        scp_l = ingest.storescp(root / "scpL", large.paths)
        orth_l = ingest.orthanc(root / "orthL", large.paths)
        brg_l = ingest.bridge(root / "brgL", large.paths)
        log(f"  storescp {scp_l:.2f}; Orthanc {orth_l:.2f}; bridge {brg_l:.2f}")
        procs = os.cpu_count() or 2
        log(f"ingest, {n} instances over 4 associations, {runs} runs")
        four = interleaved(
            runs,
            {
                "orth": lambda i: ingest.orthanc(root / f"orth4-{i}", small.paths, 4),
                "brg": lambda i: ingest.bridge(root / f"brg4-{i}", small.paths, associations=4),
                "multi": lambda i: ingest.bridge(
                    root / f"multi4-{i}", small.paths, associations=4, listeners=procs
                ),
            },
        )
        (orth4, orth4_v), (brg4, brg4_v), (multi4, multi4_v) = (
            four["orth"],
            four["brg"],
            four["multi"],
        )
        log(f"  Orthanc {fmt(orth4_v)}; bridge {fmt(brg4_v)}; {procs} processes {fmt(multi4_v)}")
        rows += [
            "## 1. C-STORE ingest (storescu, one association, until every instance is "
            "acknowledged)",
            "",
            "The bridge acknowledges an instance once it is fsynced in the spool and its "
            "record synced in the intake journal (recorded in the state store moments later); "
            "storescp does not fsync; Orthanc, as deployed (its default SyncStorageArea), fsyncs "
            'each stored file. "bridge" runs as '
            "deployed: its worker process de-identifies and forwards (to a reading Orthanc on "
            "the same machine), all on the same cores, once the "
            'listener has been quiet for 0.3 s (`worker.listener_first` "wait", the default); '
            'with "yield" it works while the study arrives, at the lowest CPU priority; '
            '"listener alone" is `serve --no-workers`, nothing else running. The bridge is '
            "timed once its processes are idle (its start is not timed). The receivers of one "
            "table take turns (run 1 of each, then run 2 of each, ...), so that the machine's "
            "drift weighs on each alike, and every timed run starts with the disks synced (the "
            "writeback of what storescp, which does not fsync, left is not timed on the next).",
            "",
            "| receiver | instances | seconds (median) | runs | instances/s | rate vs Orthanc "
            "| rate vs storescp |",
            "|---|---:|---:|---|---:|---:|---:|",
            f"| dcmtk storescp | {n} | {scp:.2f} | {fmt(scp_v)} | {n / scp:.0f} | "
            f"{orth / scp:.2f} | 1.00 |",
            f"| Orthanc {orthanc_version()} | {n} | {orth:.2f} | {fmt(orth_v)} | {n / orth:.0f} "
            f"| 1.00 | {scp / orth:.2f} |",
            f"| bridge | {n} | {brg:.2f} | {fmt(brg_v)} | {n / brg:.0f} | {orth / brg:.2f} | "
            f"{scp / brg:.2f} |",
            f'| bridge, listener_first "yield" | {n} | {yld:.2f} | {fmt(yld_v)} | '
            f"{n / yld:.0f} | {orth / yld:.2f} | {scp / yld:.2f} |",
            f"| bridge, listener alone (`serve --no-workers`) | {n} | {alone:.2f} | "
            f"{fmt(alone_v)} | {n / alone:.0f} | {orth / alone:.2f} | {scp / alone:.2f} |",
            f"| dcmtk storescp | {big} | {scp_l:.2f} | 1 run | {big / scp_l:.0f} | "
            f"{orth_l / scp_l:.2f} | 1.00 |",
            f"| Orthanc | {big} | {orth_l:.2f} | 1 run | {big / orth_l:.0f} | 1.00 | "
            f"{scp_l / orth_l:.2f} |",
            f"| bridge | {big} | {brg_l:.2f} | 1 run | {big / brg_l:.0f} | "
            f"{orth_l / brg_l:.2f} | {scp_l / brg_l:.2f} |",
            "",
            f"The same {n} instances over 4 associations at once (4 storescu processes, a "
            "quarter each), as deployed; `dimse.listener_processes` N: serve and N - 1 "
            "`bridge listen` processes accepting on one socket (the default is 1). More "
            "receivers and runs in [bench-ingest.md](bench-ingest.md).",
            "",
            "| receiver | associations | seconds (median) | runs | instances/s | time vs Orthanc |",
            "|---|---:|---:|---|---:|---:|",
            f"| Orthanc | 4 | {orth4:.2f} | {fmt(orth4_v)} | {n / orth4:.0f} | 1.00 |",
            f"| bridge, 1 listener process (the default) | 4 | {brg4:.2f} | {fmt(brg4_v)} | "
            f"{n / brg4:.0f} | {brg4 / orth4:.2f} |",
            f"| bridge, {procs} listener processes | 4 | {multi4:.2f} | {fmt(multi4_v)} | "
            f"{n / multi4:.0f} | {multi4 / orth4:.2f} |",
            "",
        ]

        # 2 + 4. end to end, with peak RSS
        log(f"end to end, {n} instances, {runs} runs (header path)")
        d_v: list[float] = []
        yielded: list[float] = []
        e2e, cpu_runs = [], []
        for i in range(runs):  # taking turns, as the ingest's receivers
            d_v.append(ingest.orthanc(root / f"d{i}", small.paths))
            e2e.append(via_bridge(root / f"e{i}", small.paths, small.study_uid))
            cpu_runs.append(dict(LAST_CPU))
            yielded.append(
                via_bridge(
                    root / f"ey{i}",
                    small.paths,
                    small.study_uid,
                    {"BRIDGE_WORKER__LISTENER_FIRST": "yield"},
                )[1]
            )
        d = statistics.median(d_v)
        cpu = {k: statistics.median(r[k] for r in cpu_runs) for k in cpu_runs[0]}
        e_y = statistics.median(yielded)
        d_cpu = statistics.median(direct_cpu(root / f"dc{i}", small.paths) for i in range(runs))
        e, e_v = statistics.median(x[1] for x in e2e), [x[1] for x in e2e]
        rss_small = max(x[2] for x in e2e)
        log(
            f"  direct {fmt(d_v)}; bridge {fmt(e_v)}; listener_first yield {fmt(yielded)}; "
            f"peak RSS {rss_small} MiB"
        )
        log(f"end to end, {n} instances, 1 run (default policy: burned-in scan)")
        _, e_scan, _ = via_bridge(
            root / "escan",
            small.paths,
            small.study_uid,
            {"BRIDGE_DEID__PIXELS__DEFAULT": "mask"},
        )
        log(f"  bridge with the scan {e_scan:.2f}")
        log(f"end to end, {big} instances, 1 run (header path)")
        d_l = ingest.orthanc(root / "dL", large.paths)
        _, e_l, rss_large = via_bridge(root / "eL", large.paths, large.study_uid)
        log(f"  direct {d_l:.2f}; bridge {e_l:.2f}; peak RSS {rss_large} MiB")
        log(f"one {args.large_object_mib} MiB instance end to end")
        big_file = root / "large-object.dcm"
        big_study = make_large_instance(big_file, args.large_object_mib)
        d_o = ingest.orthanc(root / "dO", [big_file])
        _, e_o, rss_obj = via_bridge(root / "eO", [big_file], big_study)
        log(f"  direct {d_o:.2f}; bridge {e_o:.2f}; peak RSS {rss_obj} MiB")
        rows += [
            "## 2. End to end (storescu -> bridge -> de-identified in the reading Orthanc)",
            "",
            "Timed from the first byte sent until the bridge has every instance stored in the "
            "reading Orthanc (STOW-RS answered); direct = storescu straight into the same kind "
            "of Orthanc. The 200-instance rows take turns (direct, bridge, yield, then again).",
            "",
            "| path | instances | seconds | runs | ratio to direct |",
            "|---|---:|---:|---|---:|",
            f"| direct | {n} | {d:.2f} | {fmt(d_v)} | 1.00 |",
            f"| bridge, header path (CT pixels not scanned) | {n} | {e:.2f} | {fmt(e_v)} | "
            f"{e / d:.2f} |",
            f'| bridge, header path, listener_first "yield" | {n} | {e_y:.2f} | {fmt(yielded)} | '
            f"{e_y / d:.2f} |",
            f"| bridge, default policy (every slice scanned for burned-in text) | {n} | "
            f"{e_scan:.2f} | 1 run | {e_scan / d:.2f} |",
            f"| direct | {big} | {d_l:.2f} | 1 run | 1.00 |",
            f"| bridge, header path | {big} | {e_l:.2f} | 1 run | {e_l / d_l:.2f} |",
            f"| direct, one {args.large_object_mib} MiB Enhanced CT | 1 | {d_o:.2f} | 1 run "
            "| 1.00 |",
            f"| bridge, the same object (streamed) | 1 | {e_o:.2f} | 1 run | {e_o / d_o:.2f} |",
            "",
            f"Where the CPU goes, end to end, {n} instances (median of the runs; CPU seconds "
            "from /proc, user + system): "
            + "; ".join(f"{k} {v:.2f} s" for k, v in sorted(cpu.items()))
            + f" — against {d_cpu:.2f} s for Orthanc receiving the same study directly. The "
            f"bridge path does about {sum(cpu.values()) / max(d_cpu, 0.01):.1f}x the direct "
            f"path's work on {os.cpu_count()} cores shared by every process (and storescu).",
            "",
            "## 3. Peak memory of the bridge (serve + worker process, RSS summed, sampled every "
            "50 ms)",
            "",
            "| input | peak RSS MiB | ratio to 200 instances |",
            "|---|---:|---:|",
            f"| {n} instances x 512 KB (max over the runs) | {rss_small} | 1.00 |",
            f"| {big} instances x 512 KB | {rss_large} | {rss_large / rss_small:.2f} |",
            f"| one instance of {args.large_object_mib} MiB | {rss_obj} | "
            f"{rss_obj / rss_small:.2f} |",
            "",
        ]

        # 3. de-identification throughput
        log(f"de-identification, {n} instances, {runs} runs")
        studies, warm = deid_studies(root, n, runs)
        ours_v, theirs_v, synced_v = [], [], []
        for i, study in enumerate(studies):  # (interleaved: the machine's speed drifts)
            ours_v.append(bridge_deid_rate(study.paths, warm.paths))
            theirs_v.append(orthanc_anonymize(root / f"anon{i}", study.paths, sync=False))
            synced_v.append(orthanc_anonymize(root / f"anons{i}", study.paths, sync=True))
        ours, theirs, synced = (statistics.median(v) for v in (ours_v, theirs_v, synced_v))
        log(
            f"  bridge {fmt(ours_v)}/s; Orthanc /anonymize {fmt(theirs_v)}/s without fsync, "
            f"{fmt(synced_v)}/s as deployed"
        )
        deid_ratio = ours / theirs
        rows += [
            "## 4. De-identification throughput (header path)",
            "",
            "The bridge's engine in one thread (read, de-identify, write to disk, no fsync), "
            "against Orthanc's `/studies/{id}/anonymize` (synchronous; Orthanc reads, anonymizes "
            "and stores each instance in its own storage and index), once without an fsync per "
            "stored instance (the same work as the bridge's engine here: the ratio that counts) "
            "and once as deployed (its default, `SyncStorageArea`). Each run is another "
            f"patient's {n}-instance study, the three engines one after the other on it; the "
            "bridge's engine is warmed up first on a 20-instance study of yet another patient, "
            "as in a running worker (imports, name tables, the profile's plans), and has seen "
            "nothing of the study it is timed on.",
            "",
            "| engine | instances/s (median) | runs | bridge's ratio |",
            "|---|---:|---|---:|",
            f"| Orthanc /anonymize, no fsync | {theirs:.0f} | {fmt(theirs_v)} | "
            f"{ours / theirs:.2f} |",
            f"| Orthanc /anonymize, as deployed | {synced:.0f} | {fmt(synced_v)} | "
            f"{ours / synced:.2f} |",
            f"| bridge, one thread | {ours:.0f} | {fmt(ours_v)} | 1.00 |",
            "",
        ]

        # 5. scale-out
        k = args.scan_instances
        log(f"scale-out on PostgreSQL, {k} instances with the scan: 1 vs 2 worker processes")
        scan_study = make_study(root / "scan", k, seed=44)
        one = scale(root / "w1", scan_study.paths, 1)
        two = scale(root / "w2", scan_study.paths, 2)
        log(f"  1 worker {one:.2f} s; 2 workers {two:.2f} s")
        rows += [
            "## 5. Scale-out on PostgreSQL (de-identification with the scan + forwarding)",
            "",
            f"{k} CT instances sent to a `serve --no-workers` node; `bridge worker` processes "
            "(started beforehand; one de-identification thread each; shared spool; SKIP LOCKED "
            "claims) de-identify and forward them; the clock runs from the first instance sent "
            "until all are in the reading Orthanc. This machine has "
            f"{os.cpu_count()} cores, shared with Orthanc, PostgreSQL and the serve node.",
            "",
            "| workers | seconds | instances/s | speed-up |",
            "|---:|---:|---:|---:|",
            f"| 1 | {one:.2f} | {k / one:.1f} | 1.00 |",
            f"| 2 | {two:.2f} | {k / two:.1f} | {one / two:.2f} |",
            "",
        ]
    verdict = targets_table(
        ingest_ratio=orth / brg,
        yield_ratios=(orth / yld, e_y / d),
        ingest_large_ratio=orth_l / brg_l,
        alone_ratio=orth / alone,
        parallel=(brg4 / orth4, multi4 / orth4, procs),
        e2e_ratio=e / d,
        e2e_large_ratio=e_l / d_l,
        deid_ratio=deid_ratio,
        rss_small=rss_small,
        rss_large=rss_large,
    )
    head = [
        "# Benchmarks",
        "",
        "`make bench` (bench/run.py), measured "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores), all in one run of "
        f"{(time.monotonic() - started) / 60:.1f} minutes. Targets are issue #17's; Orthanc "
        "runs as deployed (its defaults: an fsync per stored file) unless a row says "
        "otherwise.",
        "",
    ]
    text = "\n".join(head + verdict + rows)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


def targets_table(
    *,
    ingest_ratio: float,
    yield_ratios: tuple[float, float],
    ingest_large_ratio: float,
    alone_ratio: float,
    parallel: tuple[float, float, int],
    e2e_ratio: float,
    e2e_large_ratio: float,
    deid_ratio: float,
    rss_small: int,
    rss_large: int,
) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        "## Targets (issue #17) in this run",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| ingest as deployed, time <= 1.0x Orthanc's (200 / 2,000 instances) | "
        f"{1 / ingest_ratio:.2f}x / {1 / ingest_large_ratio:.2f}x "
        f"({1 / alone_ratio:.2f}x listener alone, 200) | "
        f"{mark(ingest_ratio >= 1.0 and ingest_large_ratio >= 1.0)} |",
        f'| both with `worker.listener_first` "yield", 200: ingest / end to end | '
        f"{1 / yield_ratios[0]:.2f}x / {yield_ratios[1]:.2f}x | "
        f"{mark(yield_ratios[0] >= 1.0 and yield_ratios[1] <= 2.0)} |",
        f"| ingest, 4 parallel associations, time <= 1.0x Orthanc's | {parallel[0]:.2f}x "
        f"({parallel[1]:.2f}x with `dimse.listener_processes` {parallel[2]}) | "
        f"{mark(parallel[0] <= 1.0)} |",
        f"| end to end, header path, <= 2.0x direct (200 / 2,000) | {e2e_ratio:.2f}x / "
        f"{e2e_large_ratio:.2f}x | {mark(e2e_ratio <= 2.0 and e2e_large_ratio <= 2.0)} |",
        f"| de-identification >= 1.5x Orthanc /anonymize (same work: no fsync) | "
        f"{deid_ratio:.2f}x | {mark(deid_ratio >= 1.5)} |",
        f"| peak RSS serve + worker <= 300 MiB, flat (200 / 2,000) | {rss_small} / "
        f"{rss_large} MiB | {mark(max(rss_small, rss_large) <= 300)} |",
        "",
        "Where the time goes: [profile.md](profile.md) (`make profile`). The CPU budget under "
        "section 2 is the short answer: on these 2 cores the bridge path (receive, "
        "de-identify, forward, and a reading Orthanc storing it all again) does several times "
        "the work of the direct path, all of it competing with the listener.",
        "",
    ]


def orthanc_version() -> str:
    out = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).split()
    return first[1] if len(first) > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
