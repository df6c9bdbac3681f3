"""A real NAT on one machine: a village of horns behind a masquerading router (network namespaces).

    host (the controller's side)        <prefix>-rtr (the village router)      <prefix>-vil
    <prefix>h 10.233.X.1/30 ───veth─── <prefix>u 10.233.X.2/30   (uplink)
                                        <prefix>d 10.233.X.33/27 ───veth─── <prefix>v 10.233.X.34..
                                        ip_forward=1, MASQUERADE out of the uplink, and a
                                        stateful filter: nothing new enters from the uplink

The host has a route to the router's uplink only (the connected /30). The village subnet gets an
`unreachable` route in the host so that nothing addressed to it can leave through the machine's
default route: the controller can neither reach the horns nor leak packets to a real network.
Everything is named `bn<pid hex>x<n>`; at start, leftovers of runs whose process is gone are
deleted, and on exit everything this run made is deleted, even after a failure.

Needs root and `ip`/`iptables` (scripts/setup installs iproute2 and iptables).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
_NAME = re.compile(r"^bn([0-9a-f]+)x[0-9a-f]+")
_COUNTER = itertools.count()
_CLONE_NEWNET = 0x40000000
MAX_HORNS = 29  # a /27 minus network, broadcast and the router


def tool(name: str) -> str | None:
    """Full path of a system tool, looking in sbin too (not on every user's PATH)."""
    return shutil.which(name, path=_PATH)


def unavailable() -> str | None:
    """Why a NAT cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in ("ip", "iptables") if tool(t) is None]
    if missing:
        return f"{' and '.join(missing)} missing: run scripts/setup (installs iproute2, iptables)"
    return None


def need_netns() -> None:
    """Skip the calling test, with the reason, when a NAT cannot be built on this machine."""
    why = unavailable()
    if why:
        pytest.skip(why)


def sh(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    """Run `ip`/`iptables`/… (optionally inside a namespace); raise with its stderr on failure."""
    cmd = ([tool("ip") or "ip", "netns", "exec", ns] if ns else []) + list(args)
    if not ns:
        cmd[0] = tool(cmd[0]) or cmd[0]
    out = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env={**os.environ, "PATH": _PATH}
    )
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> None:
    """Delete namespaces, links and routes left by earlier runs whose process has exited."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not _alive(int(m.group(1), 16)):
            _delete_ns(name)
    live_nets = set()
    for line in sh("ip", "-o", "-4", "addr", "show", check=False).stdout.splitlines():
        parts = line.split()
        m = _NAME.match(parts[1]) if len(parts) > 1 else None
        if not m:
            continue
        if _alive(int(m.group(1), 16)):
            live_nets.add(parts[3].split(".")[2])
        else:
            sh("ip", "link", "del", parts[1].split("@")[0], check=False)
    for line in sh(
        "ip", "-4", "route", "show", "type", "unreachable", check=False
    ).stdout.splitlines():
        m = re.search(r"10\.233\.(\d+)\.32/27", line)
        if m and m.group(1) not in live_nets:
            sh("ip", "route", "del", "unreachable", f"10.233.{m.group(1)}.32/27", check=False)


def _delete_ns(name: str) -> None:
    # a namespace outlives `ip netns del` while a process still runs in it
    for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    sh("ip", "netns", "del", name, check=False)


def _pick_subnet() -> int:
    """A third octet of 10.233.X.0/24 that no address or route on the host uses yet."""
    used = (
        sh("ip", "-4", "addr", "show", check=False).stdout
        + sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
    )
    taken = {int(x) for x in re.findall(r"10\.233\.(\d+)\.", used)}
    free = [x for x in range(256) if x not in taken]
    if not free:
        raise RuntimeError("no free 10.233.X.0/24 for a test village")
    return random.choice(free)


@dataclass
class Village:
    """A NATed village: where the host, the router and the horns are, and how to act inside."""

    prefix: str
    host_addr: str  # the controller's side of the uplink (bind servers here)
    router_uplink: str  # the router's public face: what the host sees as the source
    router_lan: str  # the horns' default gateway
    horn_addrs: list[str]  # addresses on the village interface, one per horn
    village_subnet: str
    router_ns: str
    village_ns: str
    uplink: str  # the router's uplink interface (cut() sets it down)
    host_if: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, cmd: list[str], ns: str | None = None) -> list[str]:
        """The argv that runs `cmd` inside the village namespace (or another of ours)."""
        return [tool("ip") or "ip", "netns", "exec", ns or self.village_ns, *cmd]

    def run(self, cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a command inside the village and wait for it (output captured as text)."""
        check = kw.pop("check", False)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(cmd), check=check, timeout=timeout, **kw)

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        """Start a process inside the village; it is killed when the village is torn down."""
        proc = subprocess.Popen(self.command(cmd), **kw)
        self.procs.append(proc)
        return proc

    def socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM, ns: str | None = None
    ) -> socket.socket:
        """A socket created inside the village namespace (it stays there), for in-process peers."""
        box: list[socket.socket | OSError] = []
        target = ns or self.village_ns

        def make() -> None:  # setns changes only this thread's namespace; the thread then ends
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{target}") as f:
                    if libc.setns(f.fileno(), _CLONE_NEWNET):
                        raise OSError(ctypes.get_errno(), f"setns {target}")
                box.append(socket.socket(family, kind))
            except OSError as exc:  # handed to the caller's thread
                box.append(exc)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(box[0], OSError):
            raise box[0]
        return box[0]

    def cut(self) -> None:
        """Take the router's uplink down: the village drops off the network."""
        sh("ip", "-n", self.router_ns, "link", "set", self.uplink, "down")

    def restore(self) -> None:
        """Bring the uplink back (and the router's default route, which went with it)."""
        sh("ip", "-n", self.router_ns, "link", "set", self.uplink, "up")
        sh("ip", "-n", self.router_ns, "route", "replace", "default", "via", self.host_addr)

    def block_udp(self) -> None:
        """The router drops every UDP datagram it would forward, either way (TCP still passes):
        a village network that lets only web traffic out."""
        sh("iptables", "-I", "FORWARD", "1", "-p", "udp", "-j", "DROP", ns=self.router_ns)

    def allow_udp(self) -> None:
        """Undo block_udp."""
        sh("iptables", "-D", "FORWARD", "-p", "udp", "-j", "DROP", ns=self.router_ns)


@contextlib.contextmanager
def village(horns: int = 3) -> Iterator[Village]:
    """Build a village of `horns` addresses behind a NAT router; tear it all down on exit."""
    need_netns()
    if not 1 <= horns <= MAX_HORNS:
        raise ValueError(f"horns={horns}: a village has 1 to {MAX_HORNS}")
    clean_stale()
    prefix = f"bn{os.getpid():x}x{next(_COUNTER):x}"
    x = _pick_subnet()
    net = f"10.233.{x}"
    v = Village(
        prefix=prefix,
        host_addr=f"{net}.1",
        router_uplink=f"{net}.2",
        router_lan=f"{net}.33",
        horn_addrs=[f"{net}.{34 + i}" for i in range(horns)],
        village_subnet=f"{net}.32/27",
        router_ns=f"{prefix}-rtr",
        village_ns=f"{prefix}-vil",
        uplink=f"{prefix}u",
        host_if=f"{prefix}h",
    )
    assert len(v.host_if) <= 15, "interface names are at most 15 characters"
    rtr, vil, down, lan = v.router_ns, v.village_ns, f"{prefix}d", f"{prefix}v"
    try:
        sh("ip", "netns", "add", rtr)
        sh("ip", "netns", "add", vil)
        # host <-> router uplink
        sh("ip", "link", "add", v.host_if, "type", "veth", "peer", "name", v.uplink, "netns", rtr)
        sh("ip", "addr", "add", f"{v.host_addr}/30", "dev", v.host_if)
        sh("ip", "link", "set", v.host_if, "up")
        sh("ip", "route", "add", "unreachable", v.village_subnet)
        # router <-> village
        sh("ip", "-n", rtr, "link", "add", down, "type", "veth", "peer", "name", lan, "netns", vil)
        sh("ip", "-n", rtr, "addr", "add", f"{v.router_uplink}/30", "dev", v.uplink)
        sh("ip", "-n", rtr, "addr", "add", f"{v.router_lan}/27", "dev", down)
        for dev in ("lo", v.uplink, down):
            sh("ip", "-n", rtr, "link", "set", dev, "up")
        sh("ip", "-n", rtr, "route", "add", "default", "via", v.host_addr)
        sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", ns=rtr)
        sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", v.uplink, "-j", "MASQUERADE", ns=rtr)
        # like any village router: replies come back in, nothing new does
        sh(
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            v.uplink,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
            ns=rtr,
        )
        sh("iptables", "-A", "FORWARD", "-i", v.uplink, "-j", "DROP", ns=rtr)
        for addr in v.horn_addrs:
            sh("ip", "-n", vil, "addr", "add", f"{addr}/27", "dev", lan)
        for dev in ("lo", lan):
            sh("ip", "-n", vil, "link", "set", dev, "up")
        sh("ip", "-n", vil, "route", "add", "default", "via", v.router_lan)
        yield v
    finally:
        for proc in v.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        _delete_ns(vil)
        _delete_ns(rtr)  # takes the host's end of the uplink veth with it
        sh("ip", "link", "del", v.host_if, check=False)
        sh("ip", "route", "del", "unreachable", v.village_subnet, check=False)
