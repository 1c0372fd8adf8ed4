"""``bridge cases`` and ``bridge case``: the cases in the state store."""

from __future__ import annotations

import argparse
import json
import sys

from bridge.cli.command import Command
from bridge.config import Settings


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", help="only cases in this state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("case_id")


def list_cases(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.runtime.node import open_store
    from bridge.web.schemas import case_out

    store = open_store(settings)
    rows = [case_out(c) for c in store.cases.listing(args.state, args.limit)]
    if args.json:
        print(json.dumps([r.model_dump() for r in rows], indent=2))
        return 0
    print(f"{'CASE':16}  {'STATE':12}  {'INST':>5}  {'FWD':>5}  {'SUBSPEC':9}  CREATED")
    for r in rows:
        print(
            f"{r.id:16}  {r.state.value:12}  {r.instances.total:5}  "
            f"{r.instances.forwarded:5}  {r.subspecialty:9}  {r.created_at}"
        )
    return 0


def show_case(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.runtime.node import open_store
    from bridge.web.schemas import case_out

    c = open_store(settings).cases.get(args.case_id)
    if c is None:
        print(f"bridge: no case {args.case_id}", file=sys.stderr)
        return 1
    print(case_out(c).model_dump_json(indent=2))
    return 0


COMMANDS = (
    Command("cases", "list cases", _list_arguments, list_cases),
    Command("case", "show one case", _show_arguments, show_case),
)
