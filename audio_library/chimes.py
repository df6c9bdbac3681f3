"""Built-in pre-announcement chimes, synthesized as decaying bell tones (nothing is downloaded)."""

from __future__ import annotations

import array
import math
import sys
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidRequestError

# Bell-like partials: (frequency multiple, relative amplitude, decay rate per second).
PARTIALS = ((1.0, 1.0, 1.6), (2.0, 0.35, 2.8), (3.0, 0.12, 4.0), (4.2, 0.05, 6.0))
ATTACK_SECONDS = 0.004


@dataclass(frozen=True)
class Chime:
    """A chime: a name, a description and its notes as (frequency Hz, start s, length s)."""

    name: str
    description: str
    notes: tuple[tuple[float, float, float], ...]

    @property
    def seconds(self) -> float:
        """Total length of the chime."""
        return max(start + length for _, start, length in self.notes)


# Note frequencies: A4 = 440 Hz equal temperament.
_C5, _E5, _G4, _G5, _A4, _F4 = 523.25, 659.26, 392.00, 783.99, 440.00, 349.23
CHIMES: dict[str, Chime] = {
    chime.name: chime
    for chime in (
        Chime(
            "two-tone",
            "two falling notes (ding-dong), E5 then C5",
            ((_E5, 0.0, 1.1), (_C5, 0.55, 1.5)),
        ),
        Chime(
            "four-tone",
            "four rising notes G4 C5 E5 G5, the classic station chime",
            ((_G4, 0.0, 0.9), (_C5, 0.35, 0.9), (_E5, 0.70, 0.9), (_G5, 1.05, 1.6)),
        ),
        Chime(
            "four-tone-down",
            "four falling notes G5 E5 C5 G4, played after an announcement",
            ((_G5, 0.0, 0.9), (_E5, 0.35, 0.9), (_C5, 0.70, 0.9), (_G4, 1.05, 1.6)),
        ),
    )
}


def chime_names() -> list[str]:
    """Names of the built-in chimes."""
    return sorted(CHIMES)


def lookup(name: str) -> Chime:
    """The chime called `name`."""
    try:
        return CHIMES[name]
    except KeyError:
        raise InvalidRequestError(
            f"no chime called {name!r} (choose from {', '.join(chime_names())})"
        ) from None


@lru_cache(maxsize=16)
def synthesize(name: str, rate: int, peak: float = 0.7) -> bytes:
    """The chime as mono s16le PCM at `rate`, peaking at `peak` of full scale."""
    chime = lookup(name)
    count = int(chime.seconds * rate) + 1
    mix = [0.0] * count
    nyquist = rate / 2
    for freq, start, length in chime.notes:
        first = int(start * rate)
        n = min(int(length * rate), count - first)
        # Partials at or above 45% of the rate are left out: generated at the output rate, so
        # nothing above Nyquist is ever made and there is nothing to alias.
        partials = [
            (2 * math.pi * freq * m / rate, amp, decay / rate)
            for m, amp, decay in PARTIALS
            if freq * m < 0.9 * nyquist
        ]
        attack = max(1, int(ATTACK_SECONDS * rate))
        fade = max(1, int(0.02 * rate))
        for i in range(n):
            value = 0.0
            for step, amp, decay in partials:
                value += amp * math.exp(-decay * i) * math.sin(step * i)
            if i < attack:
                value *= i / attack
            if i > n - fade:
                value *= (n - i) / fade
            mix[first + i] += value
    top = max(abs(v) for v in mix) or 1.0
    scale = peak * 32767 / top
    out = array.array("h", (int(round(v * scale)) for v in mix))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()
