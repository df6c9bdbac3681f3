"""The namespace NAT the village-link tests stand on: horns behind a real masquerading router.

What a village horn lives with: it can reach the controller and is answered, the controller sees
only the router's address, nothing from outside can open a connection to the horn, the uplink can
fail and come back, and the test leaves nothing behind on the machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.support import netns
from tests.support.netns import Village, village

pytestmark = pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")

CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"hello from the village")
try:
    reply = s.recv(1500).decode()
except OSError as exc:
    reply = "no reply: " + type(exc).__name__
print(json.dumps({"local": s.getsockname()[0], "reply": reply}))
"""


@contextlib.contextmanager
def udp_echo(host: str) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A UDP echo server on the host's side; yields its port and the peers it heard."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.2)
    peers: list[tuple[str, int]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(1500)
            except TimeoutError:
                continue
            except OSError:
                return
            peers.append(peer)
            sock.sendto(b"echo: " + data, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1], peers
    finally:
        stop.set()
        t.join()
        sock.close()


def ask(v: Village, host: str, port: int, timeout: float = 2.0) -> dict:
    """A horn in the village sends one datagram to the host and reports what came back."""
    out = v.run([sys.executable, "-c", CLIENT, host, str(port), str(timeout)], timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def leftovers(prefix: str) -> list[str]:
    """Anything of this village still on the machine: namespaces, links, routes."""
    found = [n for n in netns.sh("ip", "netns", "list").stdout.split() if n.startswith(prefix)]
    links = netns.sh("ip", "-o", "link", "show").stdout
    found += [line.split(":")[1].strip() for line in links.splitlines() if prefix in line]
    return found


def test_village_reaches_the_host_through_the_nat():
    """A horn's datagram reaches the controller from the router's address and is answered."""
    with village(horns=2) as v, udp_echo(v.host_addr) as (port, peers):
        got = ask(v, v.host_addr, port)
        assert got["reply"] == "echo: hello from the village"
        assert got["local"] in v.horn_addrs, "the horn sends from its village address"
        assert [p[0] for p in peers] == [v.router_uplink], (
            f"the controller saw {peers}, not the router's masqueraded address"
        )


def test_host_cannot_connect_to_a_horn():
    """Nothing on the controller's side can open a TCP connection to a listener in the village."""
    with village(horns=1) as v:
        listener = v.socket(kind=socket.SOCK_STREAM)
        listener.bind((v.horn_addrs[0], 0))
        listener.listen()
        port = listener.getsockname()[1]
        try:
            # it is a real listener: the router (inside the NAT) reaches it
            inside = v.socket(kind=socket.SOCK_STREAM, ns=v.router_ns)
            inside.settimeout(2)
            inside.connect((v.horn_addrs[0], port))
            inside.close()

            with pytest.raises(OSError), socket.create_connection((v.horn_addrs[0], port), 1):
                pass  # no route from the host
            # even a host that routes the village subnet to the router is stopped by the NAT
            netns.sh("ip", "route", "replace", v.village_subnet, "via", v.router_uplink)
            try:
                with pytest.raises(OSError), socket.create_connection((v.horn_addrs[0], port), 1):
                    pass
            finally:
                netns.sh("ip", "route", "replace", "unreachable", v.village_subnet)
        finally:
            listener.close()


def test_cut_and_restore_the_uplink():
    """A cut uplink silences the village; restored, it is answered again."""
    with village(horns=1) as v, udp_echo(v.host_addr) as (port, peers):
        assert ask(v, v.host_addr, port)["reply"].startswith("echo")
        v.cut()
        assert ask(v, v.host_addr, port, timeout=0.5)["reply"].startswith("no reply")
        v.restore()
        assert ask(v, v.host_addr, port)["reply"].startswith("echo")
        assert len(peers) == 2


def test_popen_runs_inside_and_is_reaped():
    """A process started in the village sees only the village's addresses and dies with it."""
    with village(horns=3) as v:
        proc = v.popen(["sleep", "60"])
        addrs = v.run([netns.tool("ip") or "ip", "-o", "-4", "addr", "show"]).stdout
        assert all(a in addrs for a in v.horn_addrs)
        assert v.host_addr not in addrs
        prefix = v.prefix
    assert proc.poll() is not None, "the village's process was killed"
    assert leftovers(prefix) == []


def test_nothing_left_after_a_failure():
    """Namespaces, veths and routes go away even when the test inside fails."""
    with pytest.raises(RuntimeError, match="boom"), village(horns=1) as v:
        prefix, subnet = v.prefix, v.village_subnet
        raise RuntimeError("boom")
    assert leftovers(prefix) == []
    assert subnet not in netns.sh("ip", "route", "show", "table", "all").stdout


def test_stale_namespaces_of_dead_runs_are_removed():
    """A namespace left by a run that was killed is cleaned up by the next run."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"bn{dead.pid:x}x0-rtr"
    netns.sh("ip", "netns", "add", stale)
    try:
        with village(horns=1):
            assert stale not in netns.sh("ip", "netns", "list").stdout
    finally:
        netns.sh("ip", "netns", "del", stale, check=False)
