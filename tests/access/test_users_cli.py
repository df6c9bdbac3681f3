"""`broadcaster users ...` and `broadcaster audit ...` through the real argparse path."""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.access.accounts import Accounts
from broadcaster.access.audit import AuditLog
from broadcaster.access.principal import Principal
from broadcaster.cli import main as cli_main
from broadcaster.cli import users as users_cli
from broadcaster.errors import InvalidInput, Unauthorized
from broadcaster.site import load
from broadcaster.storage.db import Store

ROOT = Path(__file__).resolve().parents[2]
ZONES = ROOT / "zones.yaml"


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """Run `broadcaster --data DIR <argv>`; returns (exit code, stdout, stderr)."""
    data = tmp_path / "data"

    def go(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = users_cli.main(["--data", str(data), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    go.data = data
    return go


def zones(*argv: str) -> list[str]:
    return [*argv, "--zones", str(ZONES)]


def accounts(data: Path) -> tuple[Store, Accounts]:
    store = Store.in_data_dir(data)
    return store, Accounts(store, load(ZONES))


def test_add_list_token_revoke_remove(run):
    code, out, _ = run(
        *zones(
            "users",
            "add",
            "office",
            "--scope",
            "subdistrict",
            "--role",
            "admin",
            "--password-stdin",
        ),
        stdin="office-password\n",
    )
    assert code == 0 and "admin of 示例街道 (subdistrict)" in out
    assert (
        run(
            *zones(
                "users",
                "add",
                "cun1",
                "--scope",
                "v-01-01",
                "--role",
                "operator",
                "--password-stdin",
            ),
            stdin="village-password\n",
        )[0]
        == 0
    )
    code, out, _ = run(*zones("users", "list"))
    assert code == 0 and "cun1" in out and "示例一村" in out and "2 user(s)" in out
    listed = json.loads(run(*zones("users", "list", "--json"))[1])
    assert [(u["name"], u["scope"], u["role"]) for u in listed] == [
        ("cun1", "v-01-01", "operator"),
        ("office", "subdistrict", "admin"),
    ]

    code, out, err = run(*zones("users", "token", "cun1", "--expires", "12h"))
    assert code == 0
    secret = out.strip()
    assert out == secret + "\n" and secret.startswith("bct_")  # the token and nothing else
    assert "tok_" in err and secret not in err
    store, acc = accounts(run.data)
    assert acc.authenticate_token(secret).scope == "v-01-01"
    token_id = json.loads(run(*zones("users", "tokens", "cun1", "--json"))[1])[0]["id"]
    assert run(*zones("users", "revoke", token_id))[0] == 0
    with pytest.raises(Unauthorized, match="revoked"):
        acc.authenticate_token(secret)

    assert (
        run(*zones("users", "passwd", "cun1", "--password-stdin"), stdin="another-password\n")[0]
        == 0
    )
    assert acc.login("cun1", "another-password").name == "cun1"
    assert run(*zones("users", "remove", "cun1"))[0] == 0
    assert [u["name"] for u in acc.list_users()] == ["office"]
    store.close()


def test_errors_are_plain_and_exit_nonzero(run):
    args = zones(
        "users", "add", "a", "--scope", "v-01-01", "--role", "operator", "--password-stdin"
    )
    assert run(*args, stdin="password-a\n")[0] == 0
    code, _, err = run(*args, stdin="password-a\n")
    assert code == 1 and err == "error: user 'a' already exists\n"
    code, _, err = run(
        *zones("users", "add", "b", "--scope", "v-42-42", "--role", "operator", "--password-stdin"),
        stdin="password-b\n",
    )
    assert code == 1 and "v-42-42" in err and "password-b" not in err
    code, _, err = run(
        *zones("users", "add", "b", "--scope", "seat", "--role", "operator", "--password-stdin"),
        stdin="tiny7\n",
    )
    assert code == 1 and "too short" in err and "tiny7" not in err
    assert run(*zones("users", "remove", "nobody"))[0] == 1
    assert run(*zones("users", "token", "a", "--expires", "soon"))[0] == 1
    assert run(*zones("users", "revoke"))[0] == 2


def test_password_prompt_twice(run, monkeypatch):
    answers = iter(["prompted-pass", "prompted-pass", "one-thing", "another-thing"])
    monkeypatch.setattr(users_cli.getpass, "getpass", lambda prompt="": next(answers))
    assert run(*zones("users", "add", "p", "--scope", "area-02", "--role", "admin"))[0] == 0
    code, _, err = run(*zones("users", "passwd", "p"))
    assert code == 1 and "differ" in err
    store, acc = accounts(run.data)
    assert acc.login("p", "prompted-pass").scope == "area-02"
    store.close()


def test_audit_lists_local_changes(run):
    run(
        *zones("users", "add", "a2", "--scope", "area-02", "--role", "admin", "--password-stdin"),
        stdin="password-a2\n",
    )
    run(
        *zones(
            "users", "add", "v11", "--scope", "v-01-01", "--role", "operator", "--password-stdin"
        ),
        stdin="password-v11\n",
    )
    run(*zones("users", "token", "v11", "--expires", "0"))
    code, out, _ = run("audit")
    assert code == 0 and "local-cli" in out and "user_added" in out and "token_issued" in out
    rows = json.loads(run("audit", "--json")[1])
    assert [r["action"] for r in rows] == ["token_issued", "user_added", "user_added"]
    assert {r["actor"] for r in rows} == {"local-cli"}
    assert "password" not in json.dumps(rows)
    zoned = json.loads(run(*zones("audit", "--json", "--zone", "area-02"))[1])
    assert [r["what"]["user"] for r in zoned] == ["a2"]
    assert json.loads(run("audit", "--json", "--user", "someone-else")[1]) == []
    assert len(json.loads(run("audit", "--json", "--since", "1h")[1])) == 3
    assert json.loads(run("audit", "--json", "--until", "2000-01-01")[1]) == []


def fill(run, n: int = 6) -> None:
    store = Store.in_data_dir(run.data)
    log = AuditLog(store)
    for i in range(n):
        log.append(
            "broadcast_started",
            Principal("office", "subdistrict", "admin"),
            targets=["seat"],
            what={"clip": f"c{i}"},
            broadcast=f"b{i}",
        )
    store.close()


def tamper(data: Path, *statements: str) -> None:
    conn = sqlite3.connect(data / "broadcaster.sqlite3")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_audit_verify_intact_and_anchor(run):
    fill(run, 3)
    code, out, _ = run("audit", "verify")
    assert code == 0 and out.startswith("audit log intact: 3 row(s); head 3:")
    anchor = out.split("head ")[1].strip()
    tamper(run.data, "DELETE FROM audit WHERE seq = 3")
    assert run("audit", "verify")[0] == 0  # a cut tail needs the anchor
    code, out, _ = run("audit", "verify", "--anchor", anchor)
    assert code == 1 and "row 3 was removed" in out


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE audit SET actor = 'someone' WHERE seq = 2"], "row 2 was changed"),
        (["DELETE FROM audit WHERE seq = 4"], "row 4 was removed"),
        (
            [
                "UPDATE audit SET seq = -5 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = -5",
            ],
            "row 3 was reordered",
        ),
    ],
)
def test_audit_verify_finds_tampering(run, statements, expected):
    fill(run)
    tamper(run.data, *statements)
    code, out, _ = run("audit", "verify")
    assert code == 1 and expected in out
    result = json.loads(run("audit", "verify", "--json")[1])
    assert result["ok"] is False and result["first_bad_seq"] == int(expected.split()[1])


def test_durations_and_times():
    assert users_cli.parse_duration("30m") == 1800
    assert users_cli.parse_duration("12h") == 43200
    assert users_cli.parse_duration("7d") == 7 * 86400
    assert users_cli.parse_duration("0") is None
    for bad in ("", "-1h", "7x", "h"):
        with pytest.raises(InvalidInput):
            users_cli.parse_duration(bad)
    tz = load(ZONES).tzinfo
    assert users_cli.parse_when("2h", tz, 10_000.0) == 10_000.0 - 7200
    assert users_cli.parse_when("2026-01-01", tz, 0) == 1767196800.0  # midnight in Shanghai


def test_the_main_parser_hook(tmp_path, capsys):
    """What main.py will do: `users.register(sub, data_dir, load_site)` on its own parser."""
    parser = cli_main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "users" not in sub.choices:
        users_cli.register(sub, cli_main.data_dir, cli_main.load_site)
    args = parser.parse_args(["--data", str(tmp_path), "users", "list", "--zones", str(ZONES)])
    assert args.func(args) == 0
    assert "0 user(s)" in capsys.readouterr().out
    args = parser.parse_args(["--data", str(tmp_path), "audit", "verify"])
    assert args.func(args) == 0


def proc(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_as_a_process(tmp_path):
    """`python -m broadcaster.cli.users`: stdin password, stdout carries only the token."""
    base = [sys.executable, "-m", "broadcaster.cli.users", "--data", str(tmp_path)]
    add = proc(
        [
            *base,
            "users",
            "add",
            "op",
            "--scope",
            "v-02-03",
            "--role",
            "operator",
            "--password-stdin",
            "--zones",
            str(ZONES),
        ],
        "process-pass\n",
    )
    assert add.returncode == 0, add.stderr
    token = proc([*base, "users", "token", "op", "--zones", str(ZONES)])
    assert token.returncode == 0 and token.stdout.startswith("bct_")
    assert token.stdout.count("\n") == 1
    missing = proc([*base, "users", "list", "--zones", str(tmp_path / "none.yaml")])
    assert missing.returncode == 2 and "error" in missing.stderr
