"""The site model: zones, speakers and groups of the subdistrict, loaded and checked from YAML."""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field

from broadcaster.errors import Problem as Problem  # re-exported: the site package names it
from broadcaster.errors import UnknownTarget

ZONE_KINDS = ("subdistrict", "seat", "area", "village")
SPEAKER_KINDS = ("column", "horn")
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_VOLUME = 80
DRIVERS = ("bcspeaker", "rtp")  # speaker families a zones file may name (broadcaster.drivers)
DEFAULT_DRIVER = "bcspeaker"

# Lowercase only: ids end up in mDNS instance names and URLs, where case is not reliably kept.
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_RESERVED_MULTICAST = ipaddress.IPv4Network("224.0.0.0/24")  # link-local control, never forwarded


@dataclass(frozen=True)
class Speaker:
    """One speaker: a column at the seat or a horn in a village."""

    id: str
    name: str
    kind: str
    place: str
    address: tuple[str, int] | None = None
    volume: int = DEFAULT_VOLUME
    driver: str = DEFAULT_DRIVER


@dataclass(frozen=True)
class Zone:
    """A node of the site tree: the subdistrict, its seat, an area or a village."""

    id: str
    name: str
    kind: str
    parent: str | None
    children: tuple[str, ...]
    speakers: tuple[str, ...]
    multicast: tuple[str, int] | None = None


@dataclass(frozen=True)
class Group:
    """A named set of zones and speakers outside the tree, such as the speakers along a road."""

    id: str
    name: str
    zones: tuple[str, ...]
    speakers: tuple[str, ...]


def format_hostport(value: tuple[str, int] | None) -> str | None:
    """Write (host, port) back as 'host:port' ('[v6]:port' for IPv6), or None."""
    if value is None:
        return None
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Site:
    """The whole site: a tree of zones rooted at the subdistrict, its speakers and its groups."""

    id: str
    name: str
    timezone: str
    root: Zone
    zones: dict[str, Zone]
    speakers: dict[str, Speaker]
    groups: dict[str, Group]
    source: str
    # zone id → its speakers (the site never changes once loaded; every API request of a scope
    # asks, and a district's tree is a thousand speakers deep)
    _under: dict[str, frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        """The site's time zone, for schedules."""
        return zoneinfo.ZoneInfo(self.timezone)

    def kind_of(self, target: str) -> str:
        """'speaker', 'group' or the zone kind of an id."""
        if target in self.speakers:
            return "speaker"
        if target in self.zones:
            return self.zones[target].kind
        if target in self.groups:
            return "group"
        raise _unknown(target)

    def resolve(self, target: str) -> frozenset[str]:
        """The speaker ids a speaker, zone, group or the subdistrict id reaches."""
        if target in self.speakers:
            return frozenset((target,))
        if target in self.zones:
            return self.speakers_under(target)
        group = self.groups.get(target)
        if group is None:
            raise _unknown(target)
        found = set(group.speakers)
        for zone_id in group.zones:
            found |= self.speakers_under(zone_id)
        return frozenset(found)

    def resolve_many(self, targets: Iterable[str]) -> frozenset[str]:
        """The union of resolve() over targets; names every unknown target at once."""
        if isinstance(targets, str):  # a lone id must not be iterated character by character
            targets = (targets,)
        found: set[str] = set()
        unknown = []
        for target in targets:
            try:
                found |= self.resolve(target)
            except UnknownTarget:
                unknown.append(target)
        if len(unknown) == 1:
            raise _unknown(unknown[0])
        if unknown:
            names = ", ".join(repr(t) for t in unknown)
            raise UnknownTarget(
                f"unknown targets {names}: no zone, group or speaker has these ids",
                detail={"targets": unknown},
            )
        return frozenset(found)

    def speakers_under(self, zone_id: str) -> frozenset[str]:
        """Every speaker placed in the zone or below it."""
        if zone_id not in self.zones:
            if zone_id in self.speakers or zone_id in self.groups:
                raise UnknownTarget(
                    f"{zone_id!r} is a {self.kind_of(zone_id)}, not a zone",
                    detail={"target": zone_id},
                )
            raise _unknown(zone_id)
        known = self._under.get(zone_id)
        if known is not None:
            return known
        found: set[str] = set()
        stack = [zone_id]
        while stack:
            zone = self.zones[stack.pop()]
            found.update(zone.speakers)
            stack.extend(zone.children)
        self._under[zone_id] = frozenset(found)
        return self._under[zone_id]

    def path(self, target: str) -> list[str]:
        """Zone ids from the root down to the zone, or to a speaker's place; [] for a group."""
        if target in self.speakers:
            target = self.speakers[target].place
        elif target in self.groups:
            return []
        elif target not in self.zones:
            raise _unknown(target)
        out = []
        zone_id: str | None = target
        while zone_id is not None:
            out.append(zone_id)
            zone_id = self.zones[zone_id].parent
        return out[::-1]

    def path_names(self, target: str) -> str:
        """Names along path(), e.g. '示例街道/第一管区/示例一村'; a group gives its own name."""
        if target in self.groups:
            return self.groups[target].name
        return "/".join(self.zones[z].name for z in self.path(target))

    def groups_of(self, speaker_id: str) -> tuple[str, ...]:
        """Ids of the groups that reach a speaker."""
        if speaker_id not in self.speakers:
            raise _unknown(speaker_id)
        return tuple(g for g in self.groups if speaker_id in self.resolve(g))

    def zone_multicast(self, zone_id: str) -> tuple[str, int] | None:
        """The zone's own multicast (group, port), or None; it is not inherited from parents."""
        if zone_id not in self.zones:
            raise _unknown(zone_id)
        return self.zones[zone_id].multicast

    def multicast_for(self, speaker_id: str) -> dict[str, tuple[str, int]]:
        """The multicast groups a speaker should join: zone id -> (group, port), root first."""
        if speaker_id not in self.speakers:
            raise _unknown(speaker_id)
        out: dict[str, tuple[str, int]] = {}
        for zone_id in self.path(speaker_id):
            group = self.zones[zone_id].multicast
            if group is not None:
                out[zone_id] = group
        return out

    def counts(self) -> dict:
        """Zones by kind, speakers by kind and the number of groups."""
        zones = dict.fromkeys(ZONE_KINDS, 0)
        for zone in self.zones.values():
            zones[zone.kind] += 1
        speakers = dict.fromkeys(SPEAKER_KINDS, 0)
        for speaker in self.speakers.values():
            speakers[speaker.kind] += 1
        return {"zones": zones, "speakers": speakers, "groups": len(self.groups)}

    def to_tree(self) -> dict:
        """The site as JSON-ready nested zones, with timezone and groups on the root."""
        tree = self._zone_tree(self.root.id)
        tree["timezone"] = self.timezone
        tree["source"] = self.source
        tree["groups"] = [
            {
                "id": g.id,
                "name": g.name,
                "zones": list(g.zones),
                "speakers": list(g.speakers),
                "speaker_count": len(self.resolve(g.id)),
            }
            for g in self.groups.values()
        ]
        return tree

    def _zone_tree(self, zone_id: str) -> dict:
        zone = self.zones[zone_id]
        return {
            "id": zone.id,
            "name": zone.name,
            "kind": zone.kind,
            "multicast": format_hostport(zone.multicast),
            "speaker_count": len(self.speakers_under(zone_id)),
            "children": [self._zone_tree(c) for c in zone.children],
            "speakers": [self._speaker_json(s) for s in zone.speakers],
        }

    def _speaker_json(self, speaker_id: str) -> dict:
        s = self.speakers[speaker_id]
        return {
            "id": s.id,
            "name": s.name,
            "kind": s.kind,
            "place": s.place,
            "address": format_hostport(s.address),
            "volume": s.volume,
            "driver": s.driver,
        }

    def render_text(self, speakers: bool = True) -> str:
        """An indented tree with counts per zone (and each speaker unless speakers=False)."""
        lines: list[str] = []
        self._render_zone(self.root.id, 0, speakers, lines)
        if self.groups:
            lines.append("groups:")
            for g in self.groups.values():
                members = [f"zones {', '.join(g.zones)}"] if g.zones else []
                members += [f"speakers {', '.join(g.speakers)}"] if g.speakers else []
                n = len(self.resolve(g.id))
                lines.append(f"  {g.name} ({g.id}) — {n} speakers: {'; '.join(members)}")
        lines.append(f"timezone {self.timezone}; source {self.source}")
        return "\n".join(lines) + "\n"

    def _render_zone(self, zone_id: str, depth: int, speakers: bool, lines: list[str]) -> None:
        zone = self.zones[zone_id]
        pad = "  " * depth
        children = {k: 0 for k in ZONE_KINDS}
        stack = list(zone.children)
        while stack:
            child = self.zones[stack.pop()]
            children[child.kind] += 1
            stack.extend(child.children)
        parts = [_plural(n, k) for k, n in children.items() if n]
        under = self.speakers_under(zone_id)
        kinds = {k: sum(1 for s in under if self.speakers[s].kind == k) for k in SPEAKER_KINDS}
        by_kind = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        parts.append(f"{_plural(len(under), 'speaker')}" + (f" ({by_kind})" if by_kind else ""))
        extra = f"; multicast {format_hostport(zone.multicast)}" if zone.multicast else ""
        lines.append(f"{pad}{zone.kind} {zone.name} ({zone.id}) — {', '.join(parts)}{extra}")
        if speakers:
            for sid in zone.speakers:
                s = self.speakers[sid]
                addr = f", {format_hostport(s.address)}" if s.address else ""
                drv = f", driver {s.driver}" if s.driver != DEFAULT_DRIVER else ""
                lines.append(f"{pad}  - {s.id} {s.name} ({s.kind}, volume {s.volume}{addr}{drv})")
        for child_id in zone.children:
            self._render_zone(child_id, depth + 1, speakers, lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _unknown(target: object) -> UnknownTarget:
    return UnknownTarget(
        f"unknown target {target!r}: no zone, group or speaker has this id",
        detail={"target": target},
    )
