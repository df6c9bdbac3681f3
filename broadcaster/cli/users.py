"""`broadcaster users ...` and `broadcaster audit ...`: accounts and the audit log, run locally.

These work on the controller's machine, straight on the data directory's database (whoever can
read that directory is already the site's administrator), so they need no token; every change is
written to the audit log with the actor "local-cli". `main.py` adds them with one call:
`users.register(sub, data_dir, load_site)`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from broadcaster.access.accounts import Accounts
from broadcaster.access.audit import AuditLog
from broadcaster.errors import InvalidInput
from broadcaster.site import Site
from broadcaster.storage.db import Store

DEFAULT_ZONES = "zones.yaml"
DEFAULT_TOKEN_LIFETIME = "90d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")

DataDirFn = Callable[[argparse.Namespace], Path]
LoadSiteFn = Callable[[str], Site]


def parse_duration(text: str) -> float | None:
    """'30m', '12h', '7d', '2w', '90' (seconds) -> seconds; '0' or 'never' -> None (no expiry)."""
    text = text.strip().lower()
    if text in ("0", "never", "none"):
        return None
    m = _DURATION_RE.fullmatch(text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidInput(
            f"duration {text!r}: write a number with s, m, h, d or w (e.g. 12h, "
            "30d), or 0 for never",
            code="bad_duration",
        )
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_when(text: str, tz: ZoneInfo, now: float) -> float:
    """A time filter: an ISO date or date-time in tz, or a duration meaning that long ago."""
    try:
        ago = parse_duration(text)
    except InvalidInput:
        ago = None
    else:
        if ago is not None:
            return now - ago
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"time {text!r}: give 2026-03-01, 2026-03-01T08:00 or a duration "
            "such as 2h or 7d (that long ago)",
            code="bad_time",
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def register(
    subparsers: argparse._SubParsersAction, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn
) -> None:
    """Add the `users` and `audit` commands to a `broadcaster` sub-command parser."""

    def with_zones(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--zones",
            default=DEFAULT_ZONES,
            help=f"the zones file, for scope checks (default {DEFAULT_ZONES})",
        )
        return p

    def bind(fn: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(args, data_dir_fn, load_site_fn)

    u = subparsers.add_parser("users", help="accounts: add, list, remove, passwd, token, revoke")
    us = u.add_subparsers(dest="users_action", required=True)
    a = with_zones(us.add_parser("add", help="create a user (prompts for the password)"))
    a.add_argument("name")
    a.add_argument(
        "--scope", required=True, help="zone id: the subdistrict, the seat, an area or a village"
    )
    a.add_argument("--role", required=True, choices=["operator", "admin"])
    a.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )
    a.set_defaults(func=bind(_cmd_add))
    ls = with_zones(us.add_parser("list", help="list users"))
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=bind(_cmd_list))
    rm = with_zones(us.add_parser("remove", help="delete a user and revoke their tokens"))
    rm.add_argument("name")
    rm.set_defaults(func=bind(_cmd_remove))
    pw = with_zones(us.add_parser("passwd", help="set a user's password"))
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(func=bind(_cmd_passwd))
    tk = with_zones(us.add_parser("token", help="issue an API token; prints only the token"))
    tk.add_argument("name")
    tk.add_argument(
        "--expires",
        default=DEFAULT_TOKEN_LIFETIME,
        help=f"30m, 12h, 7d ... or 0 for never (default {DEFAULT_TOKEN_LIFETIME})",
    )
    tk.set_defaults(func=bind(_cmd_token))
    tl = with_zones(us.add_parser("tokens", help="list tokens and sessions (ids, never secrets)"))
    tl.add_argument("name", nargs="?")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=bind(_cmd_tokens))
    rv = with_zones(us.add_parser("revoke", help="revoke a token by id, or --user NAME for all"))
    rv.add_argument("token_id", nargs="?")
    rv.add_argument("--user", help="revoke every token and session of this user")
    rv.set_defaults(func=bind(_cmd_revoke))

    au = subparsers.add_parser("audit", help="show the audit log, or `audit verify` its chain")
    au.add_argument("action", nargs="?", choices=["show", "verify"], default="show")
    au.add_argument("--json", action="store_true")
    au.add_argument("--since", help="ISO date/time, or a duration such as 2h (that long ago)")
    au.add_argument("--until", help="ISO date/time, or a duration")
    au.add_argument("--user", help="only this actor")
    au.add_argument("--zone", help="only rows whose targets reach this zone (needs --zones)")
    au.add_argument("--limit", type=int, default=500)
    au.add_argument(
        "--anchor",
        help="with verify: SEQ:HASH published earlier, to catch a rewritten or truncated log",
    )
    au.add_argument("--zones", default=DEFAULT_ZONES, help="the zones file, for --zone")
    au.set_defaults(func=bind(_cmd_audit))


# --- users -----------------------------------------------------------------------------------


def _open(
    args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn
) -> tuple[Store, Accounts]:
    site = load_site_fn(args.zones)
    store = Store.in_data_dir(data_dir_fn(args))
    return store, Accounts(store, site, audit=AuditLog(store))


def _read_password(args: argparse.Namespace, name: str) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            print("error: no password on stdin", file=sys.stderr)
            return None
        return line
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        print("error: the passwords differ; nothing changed", file=sys.stderr)
        return None
    return first


def _cmd_add(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        password = _read_password(args, args.name)
        if password is None:
            return 1
        user = accounts.add_user(args.name, password, args.scope, args.role, by=None)
        print(f"added {user['name']}: {user['role']} of {user['scope_name']} ({user['scope']})")
        return 0
    finally:
        store.close()


def _cmd_list(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        users = accounts.list_users(None)
    finally:
        store.close()
    if args.json:
        print(json.dumps(users, ensure_ascii=False, indent=1))
        return 0
    tz = accounts.site.tzinfo
    print(f"{'name':<20}{'role':<10}{'scope':<14}{'last login':<21}scope name")
    for u in users:
        missing = "" if u["scope_exists"] else "  (scope not in the zones file)"
        print(
            f"{u['name']:<20}{u['role']:<10}{u['scope']:<14}"
            f"{_fmt(u['last_login_at'], tz):<21}{u['scope_name']}{missing}"
        )
    print(f"{len(users)} user(s)")
    return 0


def _cmd_remove(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        accounts.remove_user(args.name, by=None)
    finally:
        store.close()
    print(f"removed {args.name}; their tokens and sessions no longer work")
    return 0


def _cmd_passwd(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        accounts.get_user(args.name)  # say "no user" before asking for a password
        password = _read_password(args, args.name)
        if password is None:
            return 1
        accounts.set_password(args.name, password, by=None)
    finally:
        store.close()
    print(f"password of {args.name} changed; their browser sessions were closed")
    return 0


def _cmd_token(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    lifetime = parse_duration(args.expires)
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        issued = accounts.issue_token(args.name, lifetime, "token", by=None)
    finally:
        store.close()
    until = "never expires" if lifetime is None else f"expires in {args.expires}"
    print(
        f"token {issued.id} for {args.name} ({until}); use it as BROADCASTER_TOKEN", file=sys.stderr
    )
    print(issued.secret)  # stdout carries the token and nothing else, for $(...)
    return 0


def _cmd_tokens(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        tokens = accounts.list_tokens(args.name)
    finally:
        store.close()
    if args.json:
        print(json.dumps(tokens, ensure_ascii=False, indent=1))
        return 0
    tz = accounts.site.tzinfo
    print(f"{'id':<18}{'user':<20}{'kind':<9}{'state':<9}{'created':<21}expires")
    for t in tokens:
        expires = "never" if t["expires_at"] is None else _fmt(t["expires_at"], tz)
        print(
            f"{t['id']:<18}{t['user']:<20}{t['kind']:<9}{t['state']:<9}"
            f"{_fmt(t['created_at'], tz):<21}{expires}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    if bool(args.token_id) == bool(args.user):
        print("error: give a TOKEN_ID or --user NAME", file=sys.stderr)
        return 2
    store, accounts = _open(args, data_dir_fn, load_site_fn)
    try:
        if args.user:
            count = accounts.revoke_all(args.user, by=None)
            print(f"revoked {count} token(s) and session(s) of {args.user}")
        else:
            accounts.revoke_token(args.token_id, by=None)
            print(f"revoked {args.token_id}")
    finally:
        store.close()
    return 0


# --- audit -----------------------------------------------------------------------------------


def _cmd_audit(args: argparse.Namespace, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn) -> int:
    tz = ZoneInfo(getattr(args, "tz", None) or "Asia/Shanghai")
    site = load_site_fn(args.zones) if args.zone else None
    store = Store.in_data_dir(data_dir_fn(args))
    try:
        log = AuditLog(store)
        if args.action == "verify":
            return _verify(log, args)
        now = time.time()
        rows = log.rows(
            since=parse_when(args.since, tz, now) if args.since else None,
            until=parse_when(args.until, tz, now) if args.until else None,
            actor=args.user,
            zone=args.zone,
            site=site,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    for r in rows:
        extra = " ".join(_compact(k, r[k]) for k in ("targets", "what", "outcome") if r[k])
        bc = f" broadcast={r['broadcast']}" if r["broadcast"] else ""
        print(
            f"{r['seq']:>6} {_fmt(r['at'], tz)} {r['actor'] or '-':<14} "
            f"{r['origin'] or '-':<16} {r['action']:<20}{bc} {extra}".rstrip()
        )
    return 0


def _verify(log: AuditLog, args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor:
        seq, _, digest = args.anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise InvalidInput("--anchor takes SEQ:HASH as printed by `audit verify`")
        anchor = (int(seq), digest)
    result = log.verify(anchor)
    if args.json:
        print(json.dumps(result.to_dict() | {"head": list(log.head())}))
    elif result.ok:
        seq, digest = log.head()
        print(f"audit log intact: {result.rows} row(s); head {seq}:{digest}")
    else:
        print(f"audit log damaged: {result.problem}")
    return 0 if result.ok else 1


def _compact(key: str, value: object) -> str:
    return f"{key}={json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(',', ':'))}"


def _fmt(t: float | None, tz: ZoneInfo) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    """`python -m broadcaster.cli.users ...`: the same commands without the rest of the CLI."""
    from broadcaster.cli.main import data_dir, load_site  # late: main.py imports this module
    from broadcaster.errors import BroadcasterError

    parser = argparse.ArgumentParser(prog="broadcaster")
    parser.add_argument("--data", help="data directory (default $BROADCASTER_DATA)")
    parser.add_argument("--tz", help="time zone for displayed times (default Asia/Shanghai)")
    register(parser.add_subparsers(dest="command", required=True), data_dir, load_site)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except BroadcasterError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
