"""Start-up faults are plain errors: `broadcaster serve` run as a real process against a damaged
data directory prints one line naming the file and what to do, and exits non-zero.

And the key store is never minted over: only a new store, or speakers new in zones.yaml, get
keys on start; re-keying is `broadcaster keys rekey`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.protocol.auth import KeyStore, fingerprint
from tests.support.net import free_port
from tests.support.sites import small_site

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "broadcaster.cli.main"]
SPEAKERS = ["col-1", "h1-1", "h1-2"]


@pytest.fixture
def zones(tmp_path) -> Path:
    return small_site(tmp_path / "zones.yaml", villages=1, horns=2, columns=1)


def serve(
    data: Path, zones: Path, prefix: list[str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run `broadcaster serve`; if it comes up, stop it with SIGINT. (rc, stdout, stderr)."""
    cmd = (
        (prefix or [])
        + CLI
        + [
            "--data",
            str(data),
            "serve",
            "--zones",
            str(zones),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--no-mdns",
        ]
    )
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the banner, or "" when it exited
    if first:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, first + out, err


def keys_cmd(data: Path, zones: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + ["--data", str(data), "keys", *args, "--zones", str(zones)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line(rc: int, err: str, *names: str) -> str:
    assert rc != 0, "serve started despite the fault"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def valid_store(data: Path) -> dict[str, bytes]:
    return KeyStore(data / "speaker-keys.json").ensure(SPEAKERS)


# --- the key store ------------------------------------------------------------------------------

DAMAGED_STORES = {
    "truncated": b'{"speakers": {"col-1": "0011',
    "not_json": b"\x00\x9f\xffnot json at all",
    "a_list": b"[]",
    "speakers_a_list": b'{"speakers": ["col-1"]}',
    "key_a_number": b'{"speakers": {"col-1": 12345}}',
    "key_too_short": b'{"speakers": {"col-1": "00112233"}}',
    "key_not_hex": b'{"speakers": {"col-1": "' + b"zz" * 32 + b'"}}',
}


@pytest.mark.parametrize("content", DAMAGED_STORES.values(), ids=DAMAGED_STORES.keys())
def test_a_damaged_key_store_is_one_line_and_is_left_alone(data, zones, content):
    store = data / "speaker-keys.json"
    store.write_bytes(content)
    rc, _, err = serve(data, zones)
    line = assert_one_line(rc, err, str(store))
    assert "restore" in line and "broadcaster keys rekey" in line
    assert store.read_bytes() == content, "the damaged store was overwritten"


def test_an_empty_key_store_is_an_error_never_113_new_keys(data, zones):
    store = data / "speaker-keys.json"
    store.write_text("{}")
    rc, _, err = serve(data, zones)
    line = assert_one_line(
        rc,
        err,
        str(store),
        "no keys for 3 speakers of zones.yaml",
        "broadcaster keys init",
        "broadcaster keys rekey",
    )
    assert store.read_text() == "{}"
    # the operator says it is a new site: then it starts
    r = keys_cmd(data, zones, "init")
    assert r.returncode == 0, r.stderr
    assert set(KeyStore(store).load()) == set(SPEAKERS)
    rc, out, err = serve(data, zones)
    assert "broadcaster controller for" in out, err + line


def test_first_start_mints_every_key_and_a_new_speaker_gets_one(data, zones, tmp_path):
    store = data / "speaker-keys.json"
    rc, out, err = serve(data, zones)
    assert rc == 0 and "broadcaster controller for" in out, err
    first = KeyStore(store).load()
    assert set(first) == set(SPEAKERS) and oct(store.stat().st_mode & 0o777) == "0o600"
    # a speaker added to zones.yaml gets a key; nobody else's changes
    bigger = small_site(tmp_path / "zones3.yaml", villages=1, horns=3, columns=1)
    rc, out, err = serve(data, bigger)
    assert rc == 0 and "broadcaster controller for" in out, err
    after = KeyStore(store).load()
    assert set(after) == set(SPEAKERS) | {"h1-3"}
    assert {s: after[s] for s in SPEAKERS} == first


def test_keys_list_shows_fingerprints_never_keys(data, zones):
    keys = valid_store(data)
    r = keys_cmd(data, zones, "list")
    assert r.returncode == 0, r.stderr
    for sid, key in keys.items():
        assert f"{sid}" in r.stdout and fingerprint(key) in r.stdout
        assert key.hex() not in r.stdout + r.stderr
    rows = json.loads(keys_cmd(data, zones, "list", "--json").stdout)
    assert {r["speaker"]: r["fingerprint"] for r in rows} == {
        s: fingerprint(k) for s, k in keys.items()
    }


def test_rekey_replaces_only_the_named_keys_and_says_who_to_repair(data, zones):
    store = data / "speaker-keys.json"
    old = valid_store(data)
    r = keys_cmd(data, zones, "rekey", "h1-1")
    assert r.returncode == 0, r.stderr
    new = KeyStore(store).load()
    assert new["h1-1"] != old["h1-1"]
    assert {s: new[s] for s in ("col-1", "h1-2")} == {s: old[s] for s in ("col-1", "h1-2")}
    assert "broadcaster speaker pair h1-1" in r.stdout and "h1-2" not in r.stdout
    assert new["h1-1"].hex() not in r.stdout and oct(store.stat().st_mode & 0o777) == "0o600"
    r = keys_cmd(data, zones, "rekey", "--all")
    assert r.returncode == 0, r.stderr
    every = KeyStore(store).load()
    assert set(every) == set(SPEAKERS) and all(every[s] != new[s] for s in SPEAKERS)
    assert all(f"broadcaster speaker pair {s}" in r.stdout for s in SPEAKERS)
    bad = keys_cmd(data, zones, "rekey", "nobody")
    assert bad.returncode == 2 and "nobody" in bad.stderr and KeyStore(store).load() == every


def test_rekey_repairs_a_damaged_key(data, zones):
    store = data / "speaker-keys.json"
    keys = valid_store(data)
    raw = json.loads(store.read_text())
    raw["speakers"]["h1-2"] = "00"
    store.write_text(json.dumps(raw))
    rc, _, err = serve(data, zones)
    assert_one_line(rc, err, str(store), "h1-2", "broadcaster keys rekey h1-2")
    assert keys_cmd(data, zones, "rekey", "h1-2").returncode == 0
    fixed = KeyStore(store).load()
    assert fixed["col-1"] == keys["col-1"] and len(fixed["h1-2"]) == 32


# --- zones.yaml, the database, the data directory -----------------------------------------------


def test_damaged_zones_file_lists_every_problem_and_exits_2(data, tmp_path, zones):
    bad = tmp_path / "bad.yaml"
    text = zones.read_text().replace("kind: horn", "kind: siren").replace("kind: column", "knd: x")
    bad.write_text(text)
    rc, _, err = serve(data, bad)
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) >= 3 and all(ln.startswith(f"error: {bad}:") for ln in lines), err
    for content in (b"site: [\n", b"\xff\xfe garbage"):
        bad.write_bytes(content)
        rc, _, err = serve(data, bad)
        assert rc == 2 and "Traceback" not in err and str(bad) in err


def test_unreadable_zones_file(data, tmp_path):
    for path in (tmp_path / "missing.yaml", tmp_path):
        rc, _, err = serve(data, path)
        assert rc == 2 and "Traceback" not in err and str(path) in err


def test_garbage_database_is_one_line_naming_it(data, zones):
    valid_store(data)
    db = data / "broadcaster.sqlite3"
    db.write_bytes(os.urandom(8192))
    rc, _, err = serve(data, zones)
    assert_one_line(rc, err, str(db), "backup")
    assert db.stat().st_size == 8192


def test_data_dir_under_a_regular_file(tmp_path, zones):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    rc, _, err = serve(blocker / "data", zones)
    assert_one_line(rc, err, str(blocker), "--data")


@pytest.mark.parametrize("where", ["log", "library", "speaker-keys.json"])
def test_a_file_or_directory_in_the_way(data, zones, where):
    if where == "speaker-keys.json":
        (data / where).mkdir()
    else:
        (data / where).write_text("x")
    rc, _, err = serve(data, zones)
    assert_one_line(rc, err, str(data / where), "move it aside")


def test_read_only_data_directory(data, zones):
    """A real read-only file system (a read-only bind mount in a private mount namespace): as
    root, chmod would not stop writes."""
    unshare = shutil.which("unshare")
    if (
        os.geteuid() != 0
        or unshare is None
        or subprocess.run([unshare, "-m", "true"], check=False, capture_output=True).returncode != 0
    ):
        pytest.skip("needs root and unshare -m for a read-only bind mount")
    valid_store(data)
    prefix = [
        unshare,
        "-m",
        "sh",
        "-c",
        (f'mount --bind "{data}" "{data}" && mount -o remount,bind,ro "{data}" && exec "$@"'),
        "sh",
    ]
    rc, _, err = serve(data, zones, prefix=prefix)
    line = assert_one_line(rc, err, str(data))
    assert "read-only" in line.lower() and "--data" in line
    assert not (data / "broadcaster.sqlite3").exists()
