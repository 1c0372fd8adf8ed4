"""``bridge user`` (console accounts: add, list, passwd, disable, enable), ``bridge audit`` (the
audit trail, as text, DICOM audit messages or syslog lines), ``bridge vault`` (keys)."""

from __future__ import annotations

import argparse
import getpass
import sys

from bridge.cli.command import Command
from bridge.config import Settings
from bridge.domain.errors import ConfigError
from bridge.store.accounts import ROLES


def _user_arguments(user: argparse.ArgumentParser) -> None:
    us = user.add_subparsers(dest="user_command", required=True)
    add = us.add_parser("add", help="add a user (password asked, or read from stdin)")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw = us.add_parser("passwd", help="set a user's password (signs them out everywhere)")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true")
    for name in ("disable", "enable"):
        p = us.add_parser(name, help=f"{name} a user")
        p.add_argument("username")
    us.add_parser("list", help="list the users")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the passwords differ")
    return first


def user_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.runtime.node import open_store
    from bridge.store import accounts, audit

    store = open_store(settings)
    cmd = args.user_command
    if cmd == "list":
        for u in accounts.list_users(store):
            flag = " (disabled)" if u["disabled"] else ""
            print(f"{u['username']:24} {u['role']:10}{flag}")
        return 0
    if cmd == "add":
        accounts.add_user(store, args.username, _password(args.password_stdin), args.role)
        audit.record(store, "cli", "user.added", username=args.username, role=args.role)
        print(f"user {args.username} ({args.role}) added")
        return 0
    if cmd == "passwd":
        accounts.set_password(store, args.username, _password(args.password_stdin))
        audit.record(store, "cli", "user.password", username=args.username)
        print(f"password of {args.username} changed; their sessions are closed")
        return 0
    accounts.set_disabled(store, args.username, cmd == "disable")
    audit.record(store, "cli", f"user.{cmd}d", username=args.username)
    print(f"user {args.username} {cmd}d")
    return 0


def _audit_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("--case", help="only this case")
    a.add_argument("--action", help="only this action (e.g. sign-in, case.submitted)")
    a.add_argument("--since", help="only events from this date (YYYY-MM-DD) on")
    a.add_argument("--limit", type=int, default=1000)
    a.add_argument(
        "--format",
        choices=["text", "dicom", "syslog"],
        default="text",
        help="text; DICOM Audit Messages (PS3.15 A.5) XML; RFC 5424 lines",
    )


def audit_cmd(args: argparse.Namespace, settings: Settings) -> int:
    import socket
    from datetime import UTC, datetime

    from bridge.clock import iso_utc
    from bridge.peers.syslog import to_dicom_xml, to_syslog
    from bridge.runtime.node import open_store
    from bridge.store import audit

    since = None
    if args.since:
        since = datetime.fromisoformat(args.since).replace(tzinfo=UTC).timestamp()
    store = open_store(settings)
    events = list(
        reversed(
            audit.events(
                store, case_id=args.case, action=args.action, since=since, limit=args.limit
            )
        )
    )
    source = settings.audit.source_id or settings.dimse.ae_title
    if args.format == "dicom":
        print('<?xml version="1.0" encoding="UTF-8"?><AuditMessages>')
        for e in events:
            print(to_dicom_xml(e, source))
        print("</AuditMessages>")
        return 0
    if args.format == "syslog":
        host = socket.gethostname()
        for e in events:
            print(to_syslog(e, source, host))
        return 0
    for e in events:
        detail = " ".join(f"{k}={v}" for k, v in e["detail"].items())
        print(
            f"{iso_utc(e['at'])}  {e['actor']:12}  {e['action']:18}  {e['outcome']:8}  "
            f"{e['case_id'] or '-':16}  {detail}"
        )
    return 0


def _vault_arguments(v: argparse.ArgumentParser) -> None:
    vs = v.add_subparsers(dest="vault_command", required=True)
    vs.add_parser("new-key", help="print a new key for BRIDGE_VAULT__KEYS")
    vs.add_parser("rotate", help="re-encrypt the vault under the first key of BRIDGE_VAULT__KEYS")


def vault_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.store.vault_crypto import new_key
    from bridge.store.vault_rotation import rotate_all

    if args.vault_command == "new-key":
        print(new_key())
        return 0
    from bridge.runtime.node import open_store
    from bridge.store import audit

    store = open_store(settings)
    counts = rotate_all(store)
    audit.record(store, "cli", "vault.rotated", rows=counts)
    print("re-encrypted: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


COMMANDS = (
    Command("user", "console accounts", _user_arguments, user_cmd),
    Command("audit", "show or export the audit trail", _audit_arguments, audit_cmd),
    Command("vault", "vault encryption keys", _vault_arguments, vault_cmd),
)
