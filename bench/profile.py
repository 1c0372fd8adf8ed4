"""`make profile`: where the bridge's CPU goes, end to end (py-spy, sampling, on-CPU only).

Sends N generated CT instances (header path) with storescu to `bridge serve`, samples the serve
process (listener, HTTP) and its worker process with py-spy while the study goes through to the
reading Orthanc, and prints, per process, the share of on-CPU samples by library (of the
innermost frame) and the hottest functions including their callees. Writes docs/profile.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support

from ingest import bridge_env, children, deployed, timed_storescu, wait_workers  # noqa: E402
from run import forwarded  # noqa: E402

from bridge.sample import make_study  # noqa: E402
from tests.support.peers import BridgeProcess  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
LIBRARIES = (
    ("pynetdicom/", "pynetdicom"),
    ("pydicom/", "pydicom"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg", "psycopg"),
    ("sqlite3", "sqlite3"),
    ("urllib3/", "requests/urllib3"),
    ("requests/", "requests/urllib3"),
    ("http/client", "requests/urllib3"),
    ("structlog/", "structlog"),
    ("prometheus_client/", "prometheus_client"),
    ("bridge/", "bridge (own code)"),
)


#: Innermost frames that are waits, not work (py-spy reports some waiting threads as active:
#: timed waits, and Python lines that call time.sleep).
IDLE = (
    "wait (threading.py",
    "select (selectors.py",
    "_ReactorClock.sleep",
    "DULServiceProvider.run_reactor (pynetdicom/dul.py:403)",
    "Association._run_reactor (pynetdicom/association.py:714)",
    "Queue.get (queue.py",
)


def library(frame: str) -> str:
    for needle, name in LIBRARIES:
        if needle in frame:
            return name
    return "Python standard library / other"


def summarise(raw: Path, top: int = 12) -> list[str]:
    by_lib: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]  # the first entry is the thread
        if not frames or any(idle in frames[-1] for idle in IDLE):
            continue
        total += n
        by_lib[library(frames[-1])] += n
        for f in {f for f in frames if "bridge/" in f or "pynetdicom/" in f}:
            inclusive[f.split(" (")[0] + " (" + f.split(" (")[-1]] += n
    if not total:
        return ["(no samples)"]
    out = ["| innermost frame in | share of on-CPU samples |", "|---|---:|"]
    out += [f"| {k} | {100 * v / total:.0f} % |" for k, v in by_lib.most_common()]
    out += ["", "| function (with callees) | share |", "|---|---:|"]
    out += [
        f"| `{k.replace('|', '/')}` | {100 * v / total:.0f} % |"
        for k, v in inclusive.most_common(top)
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--out", type=Path, default=Path("docs/profile.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        root = Path(tmp)
        study = make_study(root / "study", args.instances, seed=7)
        reading = deployed("READING", root / "reading")
        b = BridgeProcess(root / "bridge", bridge_env(reading))
        b.start()
        try:
            wait_workers(b)
            assert b.process is not None
            targets = {"bridge serve (listener, HTTP)": b.process.pid}
            for i, pid in enumerate(children(b.process.pid)):
                targets[f"bridge worker {i + 1}"] = pid
            spies = {
                name: subprocess.Popen(
                    [
                        PY_SPY,
                        "record",
                        "-p",
                        str(pid),
                        "-f",
                        "raw",
                        "-r",
                        "250",
                        "--threads",
                        "-o",
                        str(root / f"{pid}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in targets.items()
            }
            time.sleep(1.0)
            t = time.perf_counter()
            timed_storescu(b.dimse_port, study.paths, "SECONDOPINION")
            while forwarded(b) < args.instances:
                time.sleep(0.5)  # each look is an API call the serve process answers
            elapsed = time.perf_counter() - t
            for spy in spies.values():
                spy.send_signal(2)
                spy.wait(60)
            lines = [
                "# Where the bridge's CPU goes",
                "",
                f"`make profile` (bench/profile.py): {args.instances} CT instances (header path) "
                f"end to end in {elapsed:.1f} s, sampled with py-spy at 250 Hz, on-CPU samples "
                "only (waits and the reactors' sleeps left out), measured "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
                "",
            ]
            for name, pid in targets.items():
                lines += [f"## {name}", "", *summarise(root / f"{pid}.txt"), ""]
        finally:
            b.stop()
            reading.stop()
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
