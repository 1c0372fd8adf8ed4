"""Worker processes of ``bridge serve``: started, watched, restarted, stopped.

Each worker is ``python -m bridge.cli worker --index N`` with the same environment (and so the
same settings). A worker dies with its parent (PR_SET_PDEATHSIG), so killing the serve process
stops the whole group, and a restart never overlaps with workers of the previous run.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.logging import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class WorkerSupervisor:
    def __init__(self, count: int, config_file: Path | None = None) -> None:
        self.count = count
        self.config_file = config_file
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "bridge.cli"]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        cmd += ["worker", "--index", str(index)]
        self._procs[index] = subprocess.Popen(cmd, preexec_fn=_die_with_parent)  # noqa: PLW1509
        log.info("worker.spawned", index=index, pid=self._procs[index].pid)

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)
        self._thread.start()

    def _watch(self) -> None:
        delays = dict.fromkeys(range(self.count), 1.0)
        while not self._stopping.wait(0.5):
            for i, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.error("worker.exited", index=i, code=code, restart_in=delays[i])
                if self._stopping.wait(delays[i]):
                    return
                delays[i] = min(delays[i] * 2, 30.0)
                self._spawn(i)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("workers.stopped", count=len(self._procs))
