"""Which speakers exist, where they are, and whether they answer; pure state, clock passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

OFFLINE_AFTER = 6.0  # seconds without an answer before a speaker is offline
SECURITY_COUNTERS = (
    "dropped_unauthenticated",
    "dropped_replay",
    "dropped_malformed",
    "control_refused",
    "dropped_clock",
)


@dataclass
class SpeakerState:
    """One speaker as the controller sees it."""

    id: str
    kind: str = ""
    zone_path: str = ""
    host: str | None = None
    port: int | None = None
    rtp_port: int | None = None
    source: str = ""  # "mdns", "static" or "dial-in"
    media: str = "udp"  # how its audio goes: "udp", or "channel" (a dial-in without UDP)
    clock: str = "udp"  # the way its clock exchange goes: "udp", or "channel" (a dial-in)
    driver: str = "bcspeaker"
    assigned: bool = True
    online: bool = False
    last_seen: float | None = None
    last_error: str | None = None
    playing: str | None = None
    clock_synced: bool = False
    counters: dict = field(default_factory=dict)
    attacks: dict = field(default_factory=dict)
    heartbeats: int = 0  # signed heartbeats taken (the speaker reported in)
    status_answers: int = 0  # whole status answers (polled: at first, on a change, when silent)

    def __setattr__(self, name: str, value: object) -> None:
        # every field set forgets the kept row (row() below): a Python call of ~0.4 µs, right for
        # a state made once and read often. (A broadcast's per-speaker results were kept this way
        # for a while: making 1,000 of them at set-up took 4.9 ms instead of 0.6.)
        d = self.__dict__
        d[name] = value
        d.pop("_row", None)

    def to_dict(self) -> dict:
        """The JSON form the API and CLI show: every field but the address's parts (shown as
        one) and the counters; the caller's own copy."""
        return dict(self.row())

    def row(self) -> dict:
        """The same, built once and kept until a field is set, and shared: read it, do not
        change it. The list of a thousand speakers is asked for again and again while only
        those that reported in since have changed. (`attacks` is replaced whole, never changed
        in place, so that the change is seen.)"""
        d = self.__dict__
        row = d.get("_row")
        if row is None:
            row = d.copy()
            host, port = row.pop("host"), row.pop("port")
            del row["counters"]
            row["address"] = f"{host}:{port}" if host else None
            d["_row"] = row
        return row


@dataclass
class Registry:
    """All speakers by id: those in zones.yaml and any unassigned ones that advertise."""

    speakers: dict[str, SpeakerState] = field(default_factory=dict)
    _order: list[SpeakerState] | None = field(default=None, init=False, repr=False)

    def get(self, sid: str) -> SpeakerState:
        """The state of one speaker, created (unassigned) if new."""
        if sid not in self.speakers:
            self.speakers[sid] = SpeakerState(sid, assigned=False)
            self._order = None
        return self.speakers[sid]

    def assign(self, sid: str, kind: str, zone_path: str, driver: str) -> SpeakerState:
        """A speaker of the zones file: where it is and which driver speaks to it."""
        st = self.get(sid)
        st.assigned, st.kind, st.zone_path, st.driver = True, kind, zone_path, driver
        self._order = None
        return st

    def ordered(self) -> list[SpeakerState]:
        """Every speaker, those of the zones file first, each part by id: sorted once and kept
        until a speaker is added or assigned (a list of a thousand is asked for often). Read
        it, do not change it."""
        if self._order is None:
            self._order = sorted(self.speakers.values(), key=lambda s: (not s.assigned, s.id))
        return self._order

    def seen(self, sid: str, status: dict, now: float) -> tuple[bool, dict[str, int]]:
        """Record an answer; returns (whether it came online now, security counters that grew).

        Fields of a malformed answer are ignored one by one, never raised.
        """
        st, came_online = self._heard(sid, {"playing": None, **status}, now)
        st.status_answers += 1
        rtp = status.get("rtp_port")
        st.rtp_port = rtp if isinstance(rtp, int) else st.rtp_port
        media = status.get("media")  # added by the driver, not the speaker
        st.media = media if media in ("udp", "channel") else "udp"
        clock = status.get("clock_way")  # (the same; "clock" is the speaker's clock report)
        st.clock = clock if clock in ("udp", "channel") else "udp"
        raw = status.get("counters")
        new = {k: v for k, v in raw.items() if isinstance(v, int)} if isinstance(raw, dict) else {}
        if not new:
            return came_online, {}
        grew = {
            k: new.get(k, 0) - st.counters.get(k, 0)
            for k in SECURITY_COUNTERS
            if new.get(k, 0) > st.counters.get(k, 0)
        }
        # on first contact st.counters is empty, so whatever the speaker counted before we knew it
        # counts too
        if grew:  # a new dict, not a change in place: the speaker's row must see it
            st.attacks = {**st.attacks, **{k: st.attacks.get(k, 0) + v for k, v in grew.items()}}
        st.counters = new
        return came_online, grew

    def alive(self, sid: str, status: dict, now: float) -> bool:
        """Record a heartbeat (part of a status); returns whether it came online now."""
        st, came_online = self._heard(sid, status, now)
        st.heartbeats += 1
        return came_online

    def _heard(self, sid: str, status: dict, now: float) -> tuple[SpeakerState, bool]:
        """What an answer and a heartbeat both say: online now, synced or not, and what plays
        (when the status says; a heartbeat whose broadcast the driver could not name does not)."""
        st = self.get(sid)
        came_online = not st.online
        st.online, st.last_seen, st.last_error = True, now, None
        clock = status.get("clock")
        st.clock_synced = bool(clock.get("synced")) if isinstance(clock, dict) else False
        if "playing" in status:
            playing = status["playing"]
            st.playing = playing if isinstance(playing, str) else None
        return st, came_online

    def failed(self, sid: str, error: str, now: float) -> bool:
        """Record a failed poll; returns True if this made the speaker go offline."""
        st = self.get(sid)
        st.last_error = error
        if st.online and (st.last_seen is None or now - st.last_seen >= OFFLINE_AFTER):
            st.online = False
            return True
        return False

    def counts(self) -> dict:
        """Online / total counts, assigned and unassigned."""
        assigned = [s for s in self.speakers.values() if s.assigned]
        return {
            "online": sum(s.online for s in assigned),
            "total": len(assigned),
            "unassigned": sum(not s.assigned for s in self.speakers.values()),
        }
