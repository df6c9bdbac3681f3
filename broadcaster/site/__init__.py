"""The site: the zone tree of zones.yaml (subdistrict, seat, areas, villages, speakers, groups)."""

from .loader import load, loads
from .model import (
    DEFAULT_TIMEZONE,
    DEFAULT_VOLUME,
    SPEAKER_KINDS,
    ZONE_KINDS,
    Group,
    Problem,
    Site,
    Speaker,
    Zone,
    format_hostport,
)

__all__ = [
    "DEFAULT_TIMEZONE",
    "DEFAULT_VOLUME",
    "SPEAKER_KINDS",
    "ZONE_KINDS",
    "Group",
    "Problem",
    "Site",
    "Speaker",
    "Zone",
    "format_hostport",
    "load",
    "loads",
]
