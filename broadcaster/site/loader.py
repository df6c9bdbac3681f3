"""Loading and checking zones.yaml: every problem reported as file:line: key.path: message."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any

import yaml

from broadcaster.errors import ZonesError

from .model import (
    _ID_RE,
    _LABEL_RE,
    _RESERVED_MULTICAST,
    DEFAULT_DRIVER,
    DEFAULT_TIMEZONE,
    DEFAULT_VOLUME,
    DRIVERS,
    SPEAKER_KINDS,
    Group,
    Problem,
    Site,
    Speaker,
    Zone,
    format_hostport,
)

_KEYS = {
    "top": ("site", "groups"),
    "subdistrict": ("id", "name", "timezone", "multicast", "seat", "areas"),
    "seat": ("id", "name", "multicast", "speakers"),
    "area": ("id", "name", "multicast", "villages"),
    "village": ("id", "name", "multicast", "speakers"),
    "speaker": ("id", "name", "kind", "address", "volume", "driver"),
    "group": ("id", "name", "zones", "speakers"),
}


def load(path: str | os.PathLike[str]) -> Site:
    """Read and check a zones file; raise ZonesError listing every problem."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ZonesError([Problem(source, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ZonesError([Problem(source, None, "", "is a directory, not a zones file")]) from None
    except OSError as exc:
        raise ZonesError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        msg = (
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        )
        raise ZonesError([Problem(source, line, "", msg)]) from None
    return loads(text, source=source)


def loads(text: str, source: str = "<string>") -> Site:
    """Check zones YAML text; raise ZonesError listing every problem."""
    return _Checker(source).run(text)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag.endswith(":null"):
        return "nothing"
    if node.tag.endswith(":str"):
        return repr(node.value)
    return f"{node.value!r} (a {node.tag.rsplit(':', 1)[-1]})"


def _split_hostport(text: str) -> tuple[str, str] | None:
    if text.startswith("["):
        end = text.find("]:")
        return (text[1:end], text[end + 2 :]) if end > 0 else None
    host, sep, port = text.rpartition(":")
    return (host, port) if sep and host and port else None


def _is_multicast_literal(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_multicast
    except ValueError:
        return False


def _host_error(host: str) -> str | None:
    """Why a host is not a usable speaker address, or None."""
    if ":" in host:  # only bracketed IPv6 gets here with a colon
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            return "not an IPv4 address"
        if ip.is_multicast or ip.is_unspecified:
            return "not a unicast address"
        return None
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return "not an IPv4 address or host name"
    return None


class _Checker:
    """Walks the composed YAML node tree once, collecting every problem before building a Site."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.owners: dict[str, tuple[str, int, str, str]] = {}  # id -> (what, line, key, place)
        self.zones: dict[str, dict[str, Any]] = {}
        self.speakers: dict[str, Speaker] = {}
        self.groups: dict[str, Group] = {}
        self.refs: list[tuple[str, str, str, yaml.Node, str]] = []  # group, list, id, node, key
        self.multicasts: dict[tuple[str, int], tuple[str, int]] = {}
        self.timezone = DEFAULT_TIMEZONE
        # address -> (speaker, line, driver): who claimed it first
        self.addresses: dict[tuple[str, int], tuple[str, int, str]] = {}
        self.rtp_groups: list[tuple[tuple[str, int], yaml.Node, str]] = []  # address, node, key
        self.constructor = yaml.constructor.SafeConstructor()

    def add(self, where: yaml.Node | int | None, key: str, message: str) -> None:
        line = _line(where) if isinstance(where, yaml.Node) else where
        self.problems.append(Problem(self.source, line, key, message))

    def run(self, text: str) -> Site:
        try:
            document = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            msg = f"YAML syntax error: {exc.problem or exc.context}"
            if exc.context and exc.problem and exc.context_mark is not None:
                msg += f" ({exc.context} at line {exc.context_mark.line + 1})"
            self.add(mark.line + 1 if mark else None, "", msg)
            raise ZonesError(self.problems) from None
        except yaml.reader.ReaderError as exc:
            line = text[: exc.position].count("\n") + 1
            self.add(line, "", f"unreadable character {exc.character!r}: {exc.reason}")
            raise ZonesError(self.problems) from None
        if document is None:
            self.add(1, "", "the file is empty; it must hold a 'site' mapping")
            raise ZonesError(self.problems)
        top = self.mapping(document, "", "top", ("site",))
        if top is not None and "site" in top:
            self.zone(top["site"], "site", "subdistrict", None)
        if top is not None and "groups" in top:
            for i, node in enumerate(self.seq(top["groups"], "groups")):
                self.group(node, f"groups[{i}]")
        self.check_refs()
        self.check_rtp_groups()
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise ZonesError(self.problems)
        return self.build()

    # -- typed readers ---------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, key: str, what: str, required: tuple[str, ...]
    ) -> dict[str, yaml.Node] | None:
        allowed = _KEYS[what]
        if not isinstance(node, yaml.MappingNode):
            self.add(
                node,
                key,
                f"expected a mapping with keys {', '.join(allowed)}, got {_describe(node)}",
            )
            return None
        out: dict[str, yaml.Node] = {}
        first: dict[str, int] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.add(knode, key, f"a key must be a word, got {_describe(knode)}")
                continue
            name = knode.value
            path = f"{key}.{name}" if key else name
            if name in first:
                self.add(
                    knode,
                    path,
                    f"duplicate key {name!r} (first at line {first[name]}); "
                    "YAML would silently keep only the last",
                )
                continue
            first[name] = _line(knode)
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(
                    knode, path, f"unknown key {name!r}{hint}; allowed keys: {', '.join(allowed)}"
                )
                continue
            out[name] = vnode
        for name in required:
            if name not in first:
                path = f"{key}.{name}" if key else name
                self.add(node, path, f"missing required key {name!r}")
        return out

    def text(self, node: yaml.Node | None, key: str, required: bool = False) -> str | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":null"):
                if required:
                    self.add(node, key, "missing value")
                return None
            return node.value  # the raw text: `name: yes` stays 'yes', `1:30` is not 90
        self.add(node, key, f"expected a string, got {_describe(node)}")
        return None

    def ident(self, node: yaml.Node | None, key: str) -> str | None:
        value = self.text(node, key, required=True)
        if value is not None and not _ID_RE.fullmatch(value):
            self.add(
                node,
                key,
                f"bad id {value!r}: use lowercase ASCII letters, digits, '-' and "
                "'_', starting with a letter or digit, at most 64 characters",
            )
        return value

    def integer(self, node: yaml.Node, key: str, low: int, high: int) -> int | None:
        if not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int")):
            self.add(node, key, f"expected a whole number {low}–{high}, got {_describe(node)}")
            return None
        value = self.constructor.construct_yaml_int(node)
        if not low <= value <= high:
            self.add(node, key, f"{value} is out of range {low}–{high}")
            return None
        return value

    def seq(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []  # `speakers:` left empty means none yet
        if not isinstance(node, yaml.SequenceNode):
            self.add(node, key, f"expected a list, got {_describe(node)}")
            return []
        return node.value

    def claim(self, ident: str, what: str, node: yaml.Node, key: str, place: str = "") -> bool:
        prior = self.owners.get(ident)
        if prior is None:
            self.owners[ident] = (what, _line(node), key, place)
            return True
        p_what, p_line, p_key, p_place = prior
        if what == p_what == "speaker":
            self.add(
                node,
                key,
                f"speaker {ident!r} is placed twice: already in {p_place!r} at "
                f"line {p_line} ({p_key}); a speaker belongs to exactly one place "
                "— use a group to reach it from elsewhere",
            )
        else:
            self.add(
                node,
                key,
                f"duplicate id {ident!r}: already used by {p_what} at line "
                f"{p_line} ({p_key}); zones, groups and speakers share one "
                "namespace",
            )
        return False

    def hostport(self, node: yaml.Node, key: str, multicast: bool) -> tuple[str, int] | None:
        value = self.text(node, key)
        if value is None:
            return None
        example = "'239.10.0.1:50000'" if multicast else "'10.20.1.31:8080'"
        parts = _split_hostport(value.strip())
        if parts is None:
            form = "group:port" if multicast else "host:port"
            self.add(node, key, f"{value!r} is not {form} (e.g. {example})")
            return None
        host, port_text = parts
        if not port_text.isdigit():
            self.add(node, key, f"{value!r}: port {port_text!r} is not a number")
            return None
        port = int(port_text)
        if multicast:
            return self.check_multicast(node, key, value, host, port)
        if not 1 <= port <= 65535:
            self.add(node, key, f"{value!r}: port {port} is out of range 1–65535")
            return None
        why = _host_error(host)
        if why:
            self.add(node, key, f"{value!r}: host {host!r} is {why}")
            return None
        return host, port

    def check_multicast(
        self, node: yaml.Node, key: str, value: str, host: str, port: int
    ) -> tuple[str, int] | None:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            self.add(
                node,
                key,
                f"{value!r}: {host!r} is not an IPv4 multicast address "
                "(224.0.0.0–239.255.255.255; 239.x.y.z for a private site)",
            )
            return None
        if not ip.is_multicast:
            self.add(
                node,
                key,
                f"{value!r}: {host} is not a multicast address "
                "(224.0.0.0–239.255.255.255; 239.x.y.z for a private site)",
            )
            return None
        if ip in _RESERVED_MULTICAST:
            self.add(
                node,
                key,
                f"{value!r}: {host} is reserved for network control (224.0.0.0/24); use 239.x.y.z",
            )
            return None
        if not 1024 <= port <= 65534:
            self.add(node, key, f"{value!r}: port {port} is out of range 1024–65534")
            return None
        if port % 2:
            self.add(
                node,
                key,
                f"{value!r}: port {port} is odd; RTP uses an even port and RTCP the next one",
            )
            return None
        return host, port

    # -- the tree --------------------------------------------------------------------------

    def zone(self, node: yaml.Node, key: str, kind: str, parent: str | None) -> str | None:
        m = self.mapping(node, key, kind, ("id", "name"))
        if m is None:
            return None
        zone_id = self.ident(m.get("id"), f"{key}.id")
        name = self.text(m.get("name"), f"{key}.name", required=True)
        # Without a usable id, still walk the children so every problem is reported.
        here = zone_id if zone_id is not None else f"<{key}>"
        owned = zone_id is not None and self.claim(zone_id, f"{kind} zone", m["id"], f"{key}.id")
        multicast = None
        if "multicast" in m:
            multicast = self.hostport(m["multicast"], f"{key}.multicast", multicast=True)
            if multicast is not None:
                prior = self.multicasts.setdefault(multicast, (here, _line(m["multicast"])))
                if prior[0] != here:
                    self.add(
                        m["multicast"],
                        f"{key}.multicast",
                        f"{format_hostport(multicast)} is already used by zone {prior[0]!r} "
                        f"at line {prior[1]}; two zones on one group and port get mixed",
                    )
        if kind == "subdistrict" and "timezone" in m:
            tz = self.text(m["timezone"], f"{key}.timezone")
            if tz is not None:
                try:
                    zoneinfo.ZoneInfo(tz)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                    self.add(
                        m["timezone"],
                        f"{key}.timezone",
                        f"unknown timezone {tz!r}; use an IANA name such as {DEFAULT_TIMEZONE!r}",
                    )
                    tz = None
            self.timezone = tz or DEFAULT_TIMEZONE
        children: list[str | None] = []
        if "seat" in m:
            children.append(self.zone(m["seat"], f"{key}.seat", "seat", here))
        sub = {"subdistrict": ("areas", "area"), "area": ("villages", "village")}.get(kind)
        if sub and sub[0] in m:
            for i, child in enumerate(self.seq(m[sub[0]], f"{key}.{sub[0]}")):
                children.append(self.zone(child, f"{key}.{sub[0]}[{i}]", sub[1], here))
        speakers: list[str | None] = []
        if "speakers" in m:
            for i, child in enumerate(self.seq(m["speakers"], f"{key}.speakers")):
                speakers.append(self.speaker(child, f"{key}.speakers[{i}]", here))
        if owned:
            self.zones[here] = {
                "id": here,
                "name": name or here,
                "kind": kind,
                "parent": parent,
                "children": tuple(c for c in children if c is not None),
                "speakers": tuple(s for s in speakers if s is not None),
                "multicast": multicast,
            }
        return zone_id

    def speaker(self, node: yaml.Node, key: str, place: str) -> str | None:
        m = self.mapping(node, key, "speaker", ("id", "kind"))
        if m is None:
            return None
        speaker_id = self.ident(m.get("id"), f"{key}.id")
        name = self.text(m.get("name"), f"{key}.name")
        kind = self.text(m.get("kind"), f"{key}.kind", required=True)
        if kind is not None and kind not in SPEAKER_KINDS:
            close = difflib.get_close_matches(kind, SPEAKER_KINDS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.add(
                m["kind"],
                f"{key}.kind",
                f"bad kind {kind!r}{hint}; a speaker is one of {', '.join(SPEAKER_KINDS)}",
            )
        driver = self.driver(m.get("driver"), f"{key}.driver")
        address = None
        if "address" in m:
            akey = f"{key}.address"
            if driver == "rtp":
                address = self.rtp_address(m["address"], akey)
            else:
                address = self.hostport(m["address"], akey, multicast=False)
            if address is not None and speaker_id is not None:
                self.claim_address(address, speaker_id, driver, m["address"], akey)
        elif driver == "rtp":
            self.add(
                node,
                f"{key}.address",
                "missing required key 'address': an rtp speaker cannot be discovered; give "
                "HOST:PORT where its RTP goes (a unicast address or a multicast group, "
                "even port, e.g. '239.10.5.1:50000')",
            )
        volume = DEFAULT_VOLUME
        if "volume" in m and not (
            isinstance(m["volume"], yaml.ScalarNode) and m["volume"].tag.endswith(":null")
        ):
            checked = self.integer(m["volume"], f"{key}.volume", 0, 100)
            volume = volume if checked is None else checked
        if speaker_id is None or not self.claim(speaker_id, "speaker", m["id"], f"{key}.id", place):
            return None
        self.speakers[speaker_id] = Speaker(
            speaker_id, name or speaker_id, kind or "", place, address, volume, driver
        )
        return speaker_id

    def driver(self, node: yaml.Node | None, key: str) -> str:
        """The speaker's driver name; the default when absent or wrong (the fault is reported)."""
        if node is None:
            return DEFAULT_DRIVER
        name = self.text(node, key, required=True)
        if name is None:
            return DEFAULT_DRIVER
        if name not in DRIVERS:
            close = difflib.get_close_matches(name, DRIVERS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.add(
                node,
                key,
                f"unknown driver {name!r}{hint}; a speaker's driver is one of {', '.join(DRIVERS)}",
            )
            return DEFAULT_DRIVER
        return name

    def rtp_address(self, node: yaml.Node, key: str) -> tuple[str, int] | None:
        """Where an rtp speaker's RTP goes: a multicast group or a unicast host, on an even port."""
        value = self.text(node, key, required=True)
        if value is None:
            return None
        parts = _split_hostport(value.strip())
        if parts is not None and _is_multicast_literal(parts[0]):
            return self.hostport(node, key, multicast=True)
        address = self.hostport(node, key, multicast=False)
        if address is not None and address[1] % 2:
            self.add(
                node,
                key,
                f"{value!r}: port {address[1]} is odd; RTP uses an even port and RTCP the next one",
            )
            return None
        return address

    def claim_address(
        self, address: tuple[str, int], speaker_id: str, driver: str, node: yaml.Node, key: str
    ) -> None:
        """One address, one speaker — except rtp speakers paged together on a multicast group."""
        prior = self.addresses.setdefault(address, (speaker_id, _line(node), driver))
        group = _is_multicast_literal(address[0])  # only rtp speakers may have a group address
        if group:
            self.rtp_groups.append((address, node, key))
        if prior[0] == speaker_id or group:
            return
        why = ""
        if driver == prior[2] == "rtp":
            why = "; only a multicast group may be shared (a unicast address is one device)"
        self.add(
            node,
            key,
            f"{format_hostport(address)} is already the address of speaker "
            f"{prior[0]!r} at line {prior[1]}{why}",
        )

    def check_rtp_groups(self) -> None:
        """An rtp group must not be a zone's group: two streams on one group and port get mixed."""
        for address, node, key in self.rtp_groups:
            zone = self.multicasts.get(address)
            if zone is not None:
                self.add(
                    node,
                    key,
                    f"{format_hostport(address)} is the multicast group of zone "
                    f"{zone[0]!r} at line {zone[1]}; two streams on one group and "
                    "port get mixed — give the rtp speakers a group of their own",
                )

    def group(self, node: yaml.Node, key: str) -> None:
        m = self.mapping(node, key, "group", ("id",))
        if m is None:
            return
        group_id = self.ident(m.get("id"), f"{key}.id")
        name = self.text(m.get("name"), f"{key}.name")
        members: dict[str, list[str]] = {"zones": [], "speakers": []}
        for field, listed in members.items():
            if field not in m:
                continue
            for i, item in enumerate(self.seq(m[field], f"{key}.{field}")):
                ref = self.text(item, f"{key}.{field}[{i}]", required=True)
                if ref is None:
                    continue
                if ref in listed:
                    self.add(item, f"{key}.{field}[{i}]", f"{ref!r} is listed twice")
                    continue
                listed.append(ref)
                self.refs.append((group_id or key, field, ref, item, f"{key}.{field}[{i}]"))
        if not members["zones"] and not members["speakers"]:
            self.add(node, key, f"group {group_id or key!r} lists no zones and no speakers")
        if group_id is None or not self.claim(group_id, "group", m["id"], f"{key}.id"):
            return
        self.groups[group_id] = Group(
            group_id, name or group_id, tuple(members["zones"]), tuple(members["speakers"])
        )

    def check_refs(self) -> None:
        zone_ids = [i for i, o in self.owners.items() if o[0].endswith("zone")]
        speaker_ids = [i for i, o in self.owners.items() if o[0] == "speaker"]
        for group_id, field, ref, node, key in self.refs:
            owner = self.owners.get(ref)
            wanted = "zone" if field == "zones" else "speaker"
            if owner is None:
                pool = zone_ids if field == "zones" else speaker_ids
                close = difflib.get_close_matches(ref, pool, 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(
                    node,
                    key,
                    f"group {group_id!r} names {wanted} {ref!r}, which is not in the site{hint}",
                )
            elif owner[0] == "group":
                self.add(
                    node,
                    key,
                    f"{ref!r} is a group; a group lists zones and speakers, not other groups",
                )
            elif field == "zones" and owner[0] == "speaker":
                self.add(node, key, f"{ref!r} is a speaker; list it under speakers, not zones")
            elif field == "speakers" and owner[0] != "speaker":
                self.add(node, key, f"{ref!r} is a {owner[0]}; list it under zones, not speakers")

    def build(self) -> Site:
        zones = {zid: Zone(**fields) for zid, fields in self.zones.items()}
        root = next(z for z in zones.values() if z.kind == "subdistrict")
        return Site(
            id=root.id,
            name=root.name,
            timezone=self.timezone,
            root=root,
            zones=zones,
            speakers=dict(self.speakers),
            groups=dict(self.groups),
            source=self.source,
        )
