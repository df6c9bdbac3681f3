"""Users, tokens, sessions and throttled logins on a real SQLite file, with an injected clock."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from broadcaster.access.accounts import Accounts, LoginThrottled, lockout
from broadcaster.access.audit import AuditLog
from broadcaster.access.principal import Principal
from broadcaster.errors import BroadcasterError, Forbidden, InvalidInput, NotFound, Unauthorized
from broadcaster.site import loads
from broadcaster.storage.db import Store

ZONES = Path(__file__).resolve().parents[2] / "zones.yaml"
FAST = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}  # argon2id, cheap for tests
PASSWORDS = {
    "office": "office-pass-1",
    "area1": "area1-secret",
    "v11": "village-11-pw",
    "v12": "village-12-pw",
}


@pytest.fixture
def audit(store, clock):
    return AuditLog(store, clock=clock)


@pytest.fixture
def acc(store, site, clock, audit):
    a = Accounts(store, site, clock=clock, audit=audit, kdf_params=FAST)
    a.add_user("office", PASSWORDS["office"], "subdistrict", "admin")
    a.add_user("area1", PASSWORDS["area1"], "area-01", "admin")
    a.add_user("v11", PASSWORDS["v11"], "v-01-01", "operator")
    a.add_user("v12", PASSWORDS["v12"], "v-01-02", "admin")
    return a


def me(acc: Accounts, name: str) -> Principal:
    return acc.login(name, PASSWORDS[name], "10.0.0.1")


def test_default_hasher_is_argon2id_and_no_clear_password(store, site, clock):
    acc = Accounts(store, site, clock=clock)
    acc.add_user("boss", "correct horse", "subdistrict", "admin")
    pw_hash = store.run(lambda db: db.conn.execute("SELECT pw_hash FROM users").fetchone()[0])
    assert pw_hash.startswith("$argon2id$") and "m=65536" in pw_hash
    assert "correct horse" not in store.path.read_bytes().decode("latin-1")
    assert acc.login("boss", "correct horse").scope == "subdistrict"


def test_add_user_validates(acc):
    with pytest.raises(BroadcasterError) as err:
        acc.add_user("v11", "another-pass", "v-01-01", "operator")
    assert (err.value.code, err.value.status) == ("user_exists", 409)
    for name, pw, scope, role in [
        ("Bad Name", "password1", "v-01-01", "operator"),
        ("x" * 33, "password1", "v-01-01", "operator"),
        ("ok", "tiny7pw", "v-01-01", "operator"),
        ("ok", "password1", "v-99-99", "operator"),
        ("ok", "password1", "horn-01-01-1", "operator"),
        ("ok", "password1", "v-01-01", "root"),
    ]:
        with pytest.raises(InvalidInput) as err:
            acc.add_user(name, pw, scope, role)
        assert pw not in err.value.message
    acc.add_user("seat.staff", "password1", "seat", "operator")
    assert acc.get_user("seat.staff")["scope_name"] == "街道驻地"


def test_admin_cannot_create_above_scope(acc):
    area1, v12, v11 = me(acc, "area1"), me(acc, "v12"), me(acc, "v11")
    acc.add_user("v13op", "password13", "v-01-03", "operator", by=area1)
    acc.add_user("area1b", "password13", "area-01", "admin", by=area1)
    for by, scope in [
        (area1, "subdistrict"),
        (area1, "area-02"),
        (area1, "seat"),
        (v12, "area-01"),
        (v12, "v-01-01"),
        (v12, "subdistrict"),
    ]:
        with pytest.raises(Forbidden):
            acc.add_user("climber", "password99", scope, "admin", by=by)
    with pytest.raises(Forbidden):
        acc.add_user("friend", "password99", "v-01-01", "operator", by=v11)  # operators: nobody
    with pytest.raises(Forbidden):
        acc.remove_user("office", by=area1)
    with pytest.raises(Forbidden):
        acc.set_password("v11", "hijacked-1", by=v12)
    acc.set_password("v11", "new-password-11", by=area1)
    acc.set_password("v12", "own-new-pw-12", by=v12)
    acc.remove_user("v13op", by=area1)
    with pytest.raises(NotFound):
        acc.get_user("v13op")


def test_list_users_is_scoped(acc):
    assert [u["name"] for u in acc.list_users()] == ["area1", "office", "v11", "v12"]
    assert [u["name"] for u in acc.list_users(me(acc, "area1"))] == ["area1", "v11", "v12"]
    assert [u["name"] for u in acc.list_users(me(acc, "v12"))] == ["v12"]
    assert all("pw_hash" not in u for u in acc.list_users())


def test_token_round_trip_and_expiry(acc, clock):
    issued = acc.issue_token("v11", 3600)
    assert issued.secret.startswith("bct_") and issued.id.startswith("tok_")
    assert issued.csrf is None
    p = acc.authenticate_token(issued.secret, "10.0.0.7")
    assert (p.name, p.scope, p.role, p.origin, p.kind) == (
        "v11",
        "v-01-01",
        "operator",
        "10.0.0.7",
        "user",
    )
    clock.t += 3599
    acc.authenticate_token(issued.secret)
    clock.t += 1
    with pytest.raises(Unauthorized, match="token expired"):
        acc.authenticate_token(issued.secret)
    forever = acc.issue_token("v11", None)
    clock.t += 10 * 365 * 86400
    assert acc.authenticate_token(forever.secret).name == "v11"
    with pytest.raises(Unauthorized, match="unknown token"):
        acc.authenticate_token("bct_" + "A" * 43)
    with pytest.raises(Unauthorized, match="unknown token"):
        acc.authenticate_token("")


def test_revocation_is_immediate(acc):
    one, two = acc.issue_token("v11", None), acc.issue_token("v11", None)
    acc.authenticate_token(one.secret)
    acc.revoke_token(one.id)
    with pytest.raises(Unauthorized, match="token revoked"):
        acc.authenticate_token(one.secret)
    assert acc.authenticate_token(two.secret).name == "v11"
    states = {t["id"]: t["state"] for t in acc.list_tokens("v11")}
    assert states == {one.id: "revoked", two.id: "active"}
    assert acc.revoke_all("v11") == 1
    with pytest.raises(Unauthorized, match="token revoked"):
        acc.authenticate_token(two.secret)
    with pytest.raises(NotFound):
        acc.revoke_token("tok_nothing")


def test_a_second_process_revoking_takes_effect(acc, store, site, clock):
    """The controller keeps its Accounts open while the CLI revokes through another Store."""
    issued = acc.issue_token("v11", None)
    acc.authenticate_token(issued.secret)
    other = Store(store.path)
    Accounts(other, site, clock=clock, kdf_params=FAST).revoke_token(issued.id)
    other.close()
    with pytest.raises(Unauthorized, match="token revoked"):
        acc.authenticate_token(issued.secret)


def test_removed_user_tokens_stop_at_once(acc):
    issued = acc.issue_token("v11", None)
    acc.remove_user("v11")
    with pytest.raises(Unauthorized, match="token revoked"):
        acc.authenticate_token(issued.secret)
    acc.add_user("v11", "a-new-password", "v-01-01", "operator")  # same name, new person
    with pytest.raises(Unauthorized):
        acc.authenticate_token(issued.secret)


def test_user_whose_scope_left_the_zones_file(store, site, clock, tmp_path):
    acc = Accounts(store, site, clock=clock, kdf_params=FAST)
    acc.add_user("v9", "village-nine", "v-09-01", "operator")
    token = acc.issue_token("v9", None)
    smaller = ZONES.read_text(encoding="utf-8").replace("id: v-09-01", "id: v-09-91")
    shrunk = Accounts(store, loads(smaller, "zones.yaml"), clock=clock, kdf_params=FAST)
    p = shrunk.authenticate_token(token.secret)
    assert p.scope == "v-09-01"
    assert shrunk.login("v9", "village-nine").scope == "v-09-01"
    assert shrunk.get_user("v9")["scope_exists"] is False


def test_sessions_carry_a_csrf_token_and_expire(acc, clock):
    session = acc.issue_token("area1", None, kind="session")
    assert session.csrf
    acc.check_csrf(session.secret, session.csrf)
    for bad in ("", "x", acc.issue_token("area1", None, kind="session").csrf):
        with pytest.raises(BroadcasterError) as err:
            acc.check_csrf(session.secret, bad)
        assert (err.value.code, err.value.status) == ("csrf_failed", 403)
    clock.t += 12 * 3600
    with pytest.raises(Unauthorized, match="expired"):
        acc.authenticate_token(session.secret)


def test_password_change_closes_sessions_not_tokens(acc):
    session = acc.issue_token("v11", None, kind="session")
    token = acc.issue_token("v11", None)
    acc.set_password("v11", "changed-pass-11")
    with pytest.raises(Unauthorized, match="revoked"):
        acc.authenticate_token(session.secret)
    assert acc.authenticate_token(token.secret).name == "v11"
    with pytest.raises(Unauthorized):
        acc.login("v11", PASSWORDS["v11"])
    assert acc.login("v11", "changed-pass-11").name == "v11"


def test_login_failure_is_generic(acc):
    with pytest.raises(Unauthorized) as wrong_pw:
        acc.login("v11", "not-the-password", "10.0.0.2")
    with pytest.raises(Unauthorized) as no_user:
        acc.login("nobody", "not-the-password", "10.0.0.3")
    assert wrong_pw.value.message == no_user.value.message == "login failed: wrong name or password"
    assert wrong_pw.value.status == 401


def test_throttle_by_name_kicks_in_grows_and_releases(acc, clock):
    assert [lockout(n) for n in (4, 5, 6, 7, 20)] == [0, 1, 2, 4, 900]
    for i in range(5):
        with pytest.raises(Unauthorized):
            acc.login("v11", f"guess-{i}", f"10.1.0.{i}")  # a new address each time
        clock.t += 0.1
    with pytest.raises(LoginThrottled) as err:
        acc.login("v11", PASSWORDS["v11"], "10.9.9.9")  # right password, still refused
    assert (err.value.code, err.value.status) == ("login_throttled", 429)
    clock.t += 1
    with pytest.raises(Unauthorized):
        acc.login("v11", "guess-6", "10.1.0.6")  # sixth failure: 2 s
    with pytest.raises(LoginThrottled):
        acc.login("v11", PASSWORDS["v11"])
    clock.t += 2
    assert acc.login("v11", PASSWORDS["v11"]).name == "v11"  # released
    with pytest.raises(Unauthorized):  # a success clears the name's count
        acc.login("v11", "guess-7")
    assert acc.throttled_for("v11") == 0


def test_throttle_by_address(acc, clock):
    for name in ("v11", "v12", "area1", "office", "ghost"):
        with pytest.raises(Unauthorized):
            acc.login(name, "wrong-password", "203.0.113.9")
    with pytest.raises(LoginThrottled):
        acc.login("area1", PASSWORDS["area1"], "203.0.113.9")
    assert acc.login("area1", PASSWORDS["area1"], "10.0.0.1").name == "area1"  # elsewhere: fine
    clock.t += 15 * 60 + 1  # the window passes
    assert acc.login("area1", PASSWORDS["area1"], "203.0.113.9").name == "area1"


def test_lockout_is_capped(acc, clock):
    for _ in range(30):
        clock.t += acc.throttled_for("v12", "") + 0.01
        with pytest.raises(Unauthorized):
            acc.login("v12", "wrong-password")
    assert acc.throttled_for("v12") <= 15 * 60


def test_no_secret_in_audit_rows_or_errors(acc, audit, store):
    secrets_seen: list[str] = list(PASSWORDS.values())
    errors: list[str] = []
    me(acc, "v11")
    token = acc.issue_token("v11", 60)
    session = acc.issue_token("v11", 60, kind="session")
    secrets_seen += [token.secret, session.secret, session.csrf]
    acc.revoke_token(token.id)
    for attempt in (
        lambda: acc.authenticate_token(token.secret),
        lambda: acc.login("v11", "typo-of-village-11"),
        lambda: acc.login("village-12-pw", "v12"),  # password typed as the name
        lambda: acc.add_user("new", "shortpw", "v-01-01", "operator"),
        lambda: acc.check_csrf(session.secret, "forged"),
    ):
        with pytest.raises(BroadcasterError) as err:
            attempt()
        errors.append(json.dumps(err.value.to_dict(), ensure_ascii=False))
    secrets_seen += ["typo-of-village-11", "shortpw"]
    hashes = [
        h for (h,) in store.run(lambda db: db.conn.execute("SELECT pw_hash FROM users").fetchall())
    ]
    hashes += [
        h for (h,) in store.run(lambda db: db.conn.execute("SELECT hash FROM tokens").fetchall())
    ]
    rows = json.dumps(audit.rows(limit=10_000), ensure_ascii=False)
    actions = [r["action"] for r in audit.rows(limit=10_000)]
    assert {"user_added", "login", "login_failed", "token_issued", "token_revoked"} <= set(actions)
    for secret in secrets_seen + hashes:
        assert secret not in rows, secret
        for text in errors:
            assert secret not in text
    assert "(unknown)" in rows  # the failed login under a password-like name is not named


def test_audit_records_user_changes_with_actor(acc, audit):
    area1 = me(acc, "area1")
    acc.add_user("v14", "password-14", "v-01-04", "operator", by=area1)
    row = audit.rows(limit=1)[0]
    assert (row["action"], row["actor"], row["actor_scope"], row["targets"]) == (
        "user_added",
        "area1",
        "area-01",
        ["v-01-04"],
    )
    assert row["what"] == {"user": "v14", "role": "operator"}
    first = audit.rows(limit=10_000)[-1]
    assert (first["actor"], first["origin"]) == ("local-cli", "cli")
    assert audit.verify().ok


def test_tables_survive_reopen(tmp_path, site, clock):
    store = Store.in_data_dir(tmp_path)
    Accounts(store, site, clock=clock, kdf_params=FAST).add_user(
        "a", "password1", "seat", "operator"
    )
    store.close()
    again = Store.in_data_dir(tmp_path)
    assert Accounts(again, site, clock=clock, kdf_params=FAST).login("a", "password1").name == "a"
    again.close()
    conn = sqlite3.connect(tmp_path / "broadcaster.sqlite3")
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "tokens", "login_failures"} <= names
    conn.close()
