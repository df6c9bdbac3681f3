"""Which driver serves which speaker family: the names zones.yaml may give in `driver:`."""

from __future__ import annotations

from typing import Any

from broadcaster.drivers.base import Driver
from broadcaster.site import Site


def make_driver(name: str, site: Site, keys: dict[str, bytes], options: Any) -> Driver:
    """Build the driver called `name` (its module is imported only when a site uses it)."""
    if name == "bcspeaker":
        from broadcaster.drivers.bcspeaker.driver import BcSpeakerDriver

        return BcSpeakerDriver(site, keys, options)
    if name == "rtp":
        from broadcaster.drivers.rtp.driver import RtpDriver

        return RtpDriver(site, options)
    raise ValueError(f"unknown speaker driver {name!r}")
