"""Child processes of ``bridge serve``: started, watched, restarted, stopped.

Each worker is ``python -m bridge.cli worker --index N``, each extra listener process
``python -m bridge.cli listen --index N --socket-fd F`` (``runtime/door.py``), with the same
environment (and so the same settings). A child dies with its parent (PR_SET_PDEATHSIG), so
killing the serve process stops the whole group, and a restart never overlaps with children of
the previous run.
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
    """``count`` children running ``command`` (``worker``, or ``listen``: then numbered from 1,
    with ``args`` after the index and the file descriptors ``pass_fds`` inherited)."""

    def __init__(
        self,
        count: int,
        config_file: Path | None = None,
        command: str = "worker",
        args: tuple[str, ...] = (),
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.count = count
        self.config_file = config_file
        self.command = command
        self.args = args
        self.pass_fds = pass_fds
        self.what = "listener" if command == "listen" else "worker"
        self.indices = range(1, count + 1) if command == "listen" else range(count)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "bridge.cli"]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        cmd += [self.command, "--index", str(index), *self.args]
        self._procs[index] = subprocess.Popen(  # noqa: PLW1509 - the child's prctl only
            cmd, preexec_fn=_die_with_parent, pass_fds=self.pass_fds
        )
        log.info(f"{self.what}.spawned", index=index, pid=self._procs[index].pid)

    def start(self) -> None:
        for i in self.indices:
            self._spawn(i)
        self._thread.start()

    def _watch(self) -> None:
        delays = dict.fromkeys(self.indices, 1.0)
        while not self._stopping.wait(0.5):
            for i, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.error(f"{self.what}.exited", index=i, code=code, restart_in=delays[i])
                if self._stopping.wait(delays[i]):
                    return
                delays[i] = min(delays[i] * 2, 30.0)
                self._spawn(i)

    def terminate(self) -> None:
        """Ask every child to stop (SIGTERM), without waiting; no more restarts."""
        self._stopping.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        self.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info(f"{self.what}s.stopped", count=len(self._procs))
