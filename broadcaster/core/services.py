"""What the command surface works with: the controller, the audio library, and later accounts,
the audit log, the history and the scheduler — built once per controller process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audio_library import Library
from broadcaster.core.controller import Controller
from broadcaster.sources.recorded import DEFAULT_MAX_SECONDS


@dataclass
class Services:
    """Everything a command may use."""

    controller: Controller
    library: Library
    max_upload_seconds: float = DEFAULT_MAX_SECONDS
    accounts: Any = None
    audit: Any = None
    history: Any = None

    @classmethod
    def for_controller(cls, controller: Controller, **kw: Any) -> "Services":
        """Services around a controller, with the library in its data directory."""
        return cls(controller, Library(controller.config.data_dir), **kw)

    def storage_health(self) -> dict:
        """The history store's state (ok, or the fault that stops it writing)."""
        if self.history is None:
            return {"ok": True, "error": None}
        return dict(self.history.health())

    def close(self) -> None:
        """Close the library (and the stores)."""
        self.library.close()
