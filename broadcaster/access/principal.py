"""Who is asking: every command is called with a principal, and permissions are checked on it."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("operator", "admin")


@dataclass(frozen=True)
class Principal:
    """A caller of the command surface: a user (from a session or token), or the system itself.

    `scope` is one node of the zone tree (the subdistrict, a management area, or a village): the
    caller may act on the speakers under it and nowhere else. `origin` is where the request came
    from (an address, "cli", "schedule:<id>"), kept for the audit log.
    """

    name: str
    scope: str
    role: str = "operator"
    origin: str = ""
    kind: str = "user"  # user | system | schedule

    @classmethod
    def system(cls, root_scope: str, origin: str = "system") -> Principal:
        """The controller itself (demo set-up, start-up tasks): the whole site, admin."""
        return cls("system", root_scope, "admin", origin, "system")

    @property
    def is_admin(self) -> bool:
        """True for admins, who also manage users inside their own scope."""
        return self.role == "admin"

    def to_dict(self) -> dict:
        """JSON form (never carries a secret)."""
        return {"name": self.name, "scope": self.scope, "role": self.role, "kind": self.kind}
