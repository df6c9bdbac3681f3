"""What the command surface works with, built once per controller process: the controller, the
audio library, accounts, the audit log and the durable history, and the wiring between them.

The history and the audit log follow the event bus: every broadcast change is saved as it
happens (a writer thread, never the event loop), and every broadcast's start and end is an
audit row with its per-speaker outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audio_library import Library
from broadcaster.access.accounts import Accounts
from broadcaster.access.audit import AuditLog
from broadcaster.access.principal import Principal
from broadcaster.core.controller import Controller
from broadcaster.core.events import Event
from broadcaster.sources.recorded import DEFAULT_MAX_SECONDS
from broadcaster.storage.db import Store
from broadcaster.storage.history import History

log = logging.getLogger(__name__)
AUDITED_ENDS = {
    "done": "broadcast_ended",
    "stopped": "broadcast_stopped",
    "cut": "broadcast_cut",
    "failed": "broadcast_failed",
}


@dataclass
class Services:
    """Everything a command may use."""

    controller: Controller
    library: Library
    max_upload_seconds: float = DEFAULT_MAX_SECONDS
    store: Store | None = None
    accounts: Accounts | None = None
    audit: AuditLog | None = None
    history: History | None = None
    scheduler: Any = None
    _audit_pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, "audit")
    )

    @classmethod
    def for_controller(
        cls, controller: Controller, *, accounts: bool = True, **kw: Any
    ) -> Services:
        """Services around a controller, with the library, store, accounts, audit and history
        in its data directory (accounts=False: an open controller for tests of other parts)."""
        data = controller.config.data_dir
        store = Store.in_data_dir(data)
        audit = AuditLog(store)
        svc = cls(
            controller,
            Library(data),
            store=store,
            audit=audit,
            accounts=Accounts(store, controller.site, audit=audit) if accounts else None,
            history=History(store, on_fault=controller.storage_fault),
            **kw,
        )
        controller.events.subscribe(svc._on_event)
        return svc

    def start(self) -> None:
        """Start the history writer and the audit thread; mark broadcasts a killed controller
        left open."""
        self._audit_pool.submit(int)  # its thread started now, not at the first row (a wait then)
        if self.history is None:
            return
        self.history.start()
        for bid in self.history.mark_interrupted(self.controller.now()):
            self._append(
                "broadcast_interrupted",
                None,
                broadcast=bid,
                what={"why": "the controller stopped during this broadcast"},
            )

    def _on_event(self, ev: Event) -> None:
        if self.history is not None:
            self.history.save_event(ev.to_dict())
        bid = ev.detail.get("broadcast")
        if not bid or ev.kind not in ("broadcast", "broadcast_ended"):
            return
        b = self.controller.broadcasts.get(bid)
        if b is None:
            return
        if self.history is not None:
            self.history.track_broadcast(b.id, b.to_dict)  # built on the writer's thread
        owner = Principal(b.owner, b.owner_scope, origin="controller")
        if ev.kind == "broadcast" and ev.detail.get("state") == "playing":
            self._append(
                "broadcast_started",
                owner,
                targets=b.targets,
                what=b.source,
                broadcast=b.id,
                outcome={"lead": b.lead, "speakers": len(b.results)},
            )
        elif ev.kind == "broadcast_ended":

            def outcome() -> dict[str, Any]:  # on the audit thread: the broadcast is final
                return {
                    "outcome": {
                        "state": b.state,
                        "summary": b.summary()["states"],
                        "speakers": {
                            r.speaker: {
                                "state": r.state,
                                "cut_by": r.cut_by,
                                "packets": r.packets,
                                "lost": r.lost,
                            }
                            for r in b.results.values()
                        },
                    }
                }

            self._append(
                AUDITED_ENDS.get(b.state, "broadcast_ended"),
                owner,
                later=outcome,
                targets=b.targets,
                what=b.source,
                broadcast=b.id,
            )

    def _append(
        self,
        action: str,
        who: Principal | None,
        later: Callable[[], dict[str, Any]] | None = None,
        **kw: Any,
    ) -> None:
        """An audit row, written in order on the audit thread (never on the event loop); what
        `later` returns is added to it there (a thousand speakers' outcomes, built off the loop)."""
        audit = self.audit
        if audit is None:
            return

        def row() -> Any:
            return audit.append(action, who, **kw, **(later() if later else {}))

        fut = self._audit_pool.submit(row)

        def logged(f: concurrent.futures.Future[Any]) -> None:
            if f.exception():
                log.error("audit row %s not written: %s", action, f.exception())

        fut.add_done_callback(logged)

    def audit_later(self, action: str, who: Principal | None, **kw: Any) -> None:
        """An audit row queued on the audit thread (written in order, never on the loop)."""
        self._append(action, who, **kw)

    async def audit_now(self, action: str, who: Principal | None, **kw: Any) -> None:
        """An audit row, awaited (commands that must not answer before the row exists)."""
        audit = self.audit
        if audit is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._audit_pool, lambda: audit.append(action, who, **kw)
            )

    def storage_health(self) -> dict:
        """The history store's state (ok, or the fault that stops it writing)."""
        if self.history is None:
            return {"ok": True, "error": None}
        return dict(self.history.health())

    def close(self) -> None:
        """Flush and close the history, the audit thread, the library and the store."""
        if self.history is not None:
            self.history.close()
        self._audit_pool.shutdown(wait=True)
        self.library.close()
        if self.store is not None:
            self.store.close()
