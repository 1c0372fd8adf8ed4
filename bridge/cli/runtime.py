"""``bridge serve``, ``bridge worker``, ``bridge listen``, ``bridge migrate``,
``bridge settings``."""

from __future__ import annotations

import argparse
import os

from bridge.cli.command import Command, no_arguments
from bridge.config import Settings


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-workers",
        action="store_true",
        help="listener and HTTP server only (`bridge worker` processes do the pipeline)",
    )


def _worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=int, default=0, help="worker number on this node")


def _listen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=int, default=1, help="listener process number on this node")
    p.add_argument(
        "--socket-fd",
        type=int,
        required=True,
        help="the listening socket's file descriptor, inherited from `bridge serve`",
    )


def _metrics_dir(settings: Settings, fresh: bool) -> None:
    """Every process of the group writes its metrics where /metrics can read them. This must
    happen before prometheus_client is first imported."""
    mp_dir = settings.data_dir / "metrics"
    if fresh and mp_dir.is_dir():
        for f in mp_dir.glob("*.db"):
            f.unlink()
    mp_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp_dir.resolve())


def serve(args: argparse.Namespace, settings: Settings) -> int:
    _metrics_dir(settings, fresh=True)
    from bridge.runtime.service import serve as run

    return run(settings, args.config, workers_here=not args.no_workers)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    _metrics_dir(settings, fresh=False)
    from bridge.runtime.worker import worker_process as run

    return run(settings, args.index)


def listen(args: argparse.Namespace, settings: Settings) -> int:
    _metrics_dir(settings, fresh=False)
    from bridge.runtime.door import listen as run

    return run(settings, args.index, args.socket_fd)


def migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from bridge.runtime.node import open_store

    store = open_store(settings)
    print("state store schema is up to date")
    store.engine.dispose()
    return 0


def show_settings(_args: argparse.Namespace, settings: Settings) -> int:
    print(settings.model_dump_json(indent=2))
    return 0


COMMANDS = (
    Command("serve", "run the listener, the workers and the HTTP server", _serve_arguments, serve),
    Command(
        "worker", "run pipeline workers only (serve starts its own)", _worker_arguments, worker
    ),
    Command(
        "listen",
        "run one more listener process on serve's socket (serve starts them: "
        "dimse.listener_processes)",
        _listen_arguments,
        listen,
    ),
    Command("migrate", "bring the state store schema up to date", no_arguments, migrate),
    Command(
        "settings", "print the effective settings (secrets masked)", no_arguments, show_settings
    ),
)
