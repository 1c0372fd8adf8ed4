"""One command of ``bridge``: its name, help, arguments, and what it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import Settings


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    #: Adds the command's own arguments (and sub-commands) to its parser.
    arguments: Callable[[argparse.ArgumentParser], None]
    #: Runs the command; its return value is the exit status.
    run: Callable[[argparse.Namespace, Settings], int]


def no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass
