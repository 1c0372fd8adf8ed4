"""The ``bridge`` command: one module per group of commands, each with a table of its commands
(name, help, arguments, what it runs); :func:`main` builds the parser from the tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__
from bridge.cli.command import Command
from bridge.domain.errors import BridgeError


def commands() -> list[Command]:
    from bridge.cli import admin, cases, deid, doctor, runtime, submit

    return [
        *runtime.COMMANDS,
        *cases.COMMANDS,
        *submit.COMMANDS,
        *deid.COMMANDS,
        *doctor.COMMANDS,
        *admin.COMMANDS,
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge", description="SECONDOPINION: the second-opinion DICOM bridge."
    )
    p.add_argument(
        "--config", type=Path, help="TOML settings file (see config/bridge.example.toml)"
    )
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in commands():
        cp = sub.add_parser(command.name, help=command.help)
        command.arguments(cp)
        cp.set_defaults(run=command.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from bridge.config import load_settings
    from bridge.logging import configure

    try:
        settings = load_settings(args.config)
        configure(settings.log_format, settings.log_level)
        status: int = args.run(args, settings)
        return status
    except BridgeError as exc:
        print(f"bridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
