"""``bridge serve``: the listener, the pipeline workers and the HTTP server in one process.

SIGTERM / SIGINT: stop accepting associations and HTTP requests, let running associations
finish (``dimse.shutdown_grace``), let the workers finish or release what they hold, exit 0.
Nothing acknowledged is lost: every acknowledged instance is on disk and in the intake journal
(recorded in the state store before the process ends, or at the next start), and whatever a
worker had claimed is released (or its lease expires) for the next start.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from bridge.config import Settings
from bridge.domain.errors import ConfigError
from bridge.logging import get_logger
from bridge.peers.connect import make_pacs
from bridge.runtime.door import Door, listening_socket, recover_listeners
from bridge.runtime.node import open_store
from bridge.runtime.supervisor import WorkerSupervisor
from bridge.runtime.worker import Pipeline
from bridge.store.spool import Spool
from bridge.web.app import create_app

log = get_logger(__name__)


def serve(settings: Settings, config_file: Path | None = None, workers_here: bool = True) -> int:
    """``workers_here=False`` (``bridge serve --no-workers``): the listener and the HTTP server
    only; ``bridge worker`` processes on this or other nodes do the pipeline's work."""
    settings.require_pipeline()
    if settings.api_token is None or not settings.api_token.get_secret_value():
        raise ConfigError("missing required setting: BRIDGE_API_TOKEN")

    store = open_store(settings)
    released = store.release_own_leases()
    spool = Spool(settings.spool_dir, settings.spool, store.node_id)
    spool.clean_partial()
    spool.clean_tmp()  # this process's own half-written files (uploads); workers clean theirs
    door = Door(settings, store, spool)  # replays what its journal had not recorded
    replayed = door.replayed + recover_listeners(settings, store, store.node_id)
    shared = listeners = None
    if settings.dimse.listener_processes > 1:
        shared = listening_socket(settings)
        listeners = WorkerSupervisor(
            settings.dimse.listener_processes - 1,
            config_file,
            command="listen",
            args=("--socket-fd", str(shared.fileno())),
            pass_fds=(shared.fileno(),),
        )

    pipeline: Pipeline | None = None
    workers: WorkerSupervisor | None = None
    if not workers_here:
        pass
    elif settings.worker.processes == 0:
        pipeline = Pipeline(settings, store, spool)
    else:
        workers = WorkerSupervisor(settings.worker.processes, config_file)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                settings,
                store,
                spool,
                lambda: make_pacs(settings.pacs, settings.dimse, spool.new_tmp),
            ),
            host=settings.http.host,
            port=settings.http.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            limit_concurrency=settings.http.max_connections,
            timeout_keep_alive=5,
            ssl_certfile=settings.http.tls_cert if settings.http.tls_key else None,
            ssl_keyfile=settings.http.tls_key if settings.http.tls_cert else None,
        )
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("bridge.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    http_thread = threading.Thread(target=server.run, name="http", daemon=True)
    http_thread.start()
    door.start(shared)
    if listeners is not None:
        listeners.start()
    if pipeline is not None:
        pipeline.start()
    if workers is not None:
        workers.start()
    deadline = time.monotonic() + 30
    while not server.started and http_thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        door.stop(0)
        if listeners is not None:
            listeners.stop()
        if pipeline is not None:
            pipeline.stop()
        if workers is not None:
            workers.stop()
        raise ConfigError("the HTTP server could not start", port=settings.http.port)
    log.info(
        "bridge.started",
        dimse_port=door.port,
        listener_processes=settings.dimse.listener_processes,
        http_port=settings.http.port,
        released_leases=released,
        journal_replayed=replayed,
    )
    stop.wait()

    grace = settings.dimse.shutdown_grace
    if listeners is not None:
        listeners.terminate()  # they stop accepting and finish what they receive, as this one
    door.stop(grace)  # records what is left in its journal
    if listeners is not None:
        listeners.stop(grace + 30)
    server.should_exit = True
    if pipeline is not None:
        pipeline.stop()
    if workers is not None:
        workers.stop()
    http_thread.join(10)
    store.engine.dispose()
    log.info("bridge.stopped")
    return 0
