"""Who may reach which speakers, manage which users, and outrank whom: pure policy, no I/O.

Scopes are nodes of the zone tree. A caller acts on a target only when the whole target lies at or
below their scope; a group counts only if every member does. Priority is a number: the class
(emergency > live > announcement > background) first, then the caller's tier (subdistrict > area >
village), so a higher class always wins and the tier only breaks ties inside one class.
"""

from __future__ import annotations

from collections.abc import Iterable

from broadcaster.access.principal import ROLES, Principal
from broadcaster.errors import Forbidden, InvalidInput, UnknownTarget
from broadcaster.site import Site

TIER_RANK = {"village": 1, "area": 2, "subdistrict": 3}
CLASSES = ("background", "announcement", "live", "emergency")
CLASS_RANK = {name: i + 1 for i, name in enumerate(CLASSES)}
# The seat is run by the subdistrict's own office, so it shares the subdistrict's tier.
_TIER_OF_KIND = {
    "subdistrict": "subdistrict",
    "seat": "subdistrict",
    "area": "area",
    "village": "village",
}


def tier_of(site: Site, zone_id: str) -> str:
    """The permission tier of a scope: 'subdistrict' (root and seat), 'area' or 'village'."""
    zone = site.zones.get(zone_id)
    if zone is None:
        raise UnknownTarget(
            f"scope {zone_id!r} is not a zone of the site", detail={"scope": zone_id}
        )
    return _TIER_OF_KIND[zone.kind]


def covers(site: Site, scope: str, target: str) -> bool:
    """True when a zone or speaker lies at or below the scope zone (False for unknown ids)."""
    if scope not in site.zones or (target not in site.zones and target not in site.speakers):
        return False
    return scope in site.path(target)


def scope_speakers(site: Site, scope: str) -> frozenset[str]:
    """The speakers a scope reaches; none when the scope is no longer in the zones file."""
    if scope not in site.zones:
        return frozenset()
    return site.speakers_under(scope)


def first_outside(site: Site, scope: str, speaker_ids: Iterable[str]) -> str | None:
    """The first speaker id (sorted) that is not under the scope zone, or None."""
    inside = scope_speakers(site, scope)
    for sid in sorted(speaker_ids):
        if sid not in inside:
            return sid
    return None


def target_inside(site: Site, scope: str, target: str) -> bool:
    """True when every speaker (and zone) a target reaches lies at or below the scope."""
    group = site.groups.get(target)
    if group is None:
        return covers(site, scope, target)
    return all(covers(site, scope, z) for z in group.zones) and all(
        covers(site, scope, s) for s in group.speakers
    )


def scope_name(site: Site, scope: str) -> str:
    """A scope's display name, or its id when the zones file no longer has it."""
    zone = site.zones.get(scope)
    return zone.name if zone else scope


def target_name(site: Site, target: str) -> str:
    """A target's display name: the zone's, group's or speaker's name."""
    for table in (site.zones, site.groups, site.speakers):
        if target in table:
            return table[target].name
    return target


def check_targets(site: Site, principal: Principal, targets: Iterable[str]) -> frozenset[str]:
    """The speakers the targets reach; Forbidden naming the first target outside the scope."""
    if isinstance(targets, str):
        targets = (targets,)
    targets = list(targets)
    if not targets:
        raise InvalidInput(
            "no targets given: name a speaker, village, area, group or the subdistrict",
            code="no_targets",
        )
    speakers = site.resolve_many(targets)  # unknown ids are named before any scope question
    scope = principal.scope
    if scope not in site.zones:
        raise Forbidden(
            f"your scope {scope} is no longer in the zones file; ask an admin to "
            "give you a new one",
            code="scope_gone",
            detail={"scope": scope},
        )
    for target in targets:
        if not target_inside(site, scope, target):
            outside = first_outside(site, scope, site.resolve(target))
            where = ""
            if target in site.groups and outside:
                where = f": it reaches {outside} ({target_name(site, outside)})"
            raise Forbidden(
                f"target {target} ({target_name(site, target)}) is outside your scope "
                f"{scope_name(site, scope)}{where}",
                detail={"target": target, "scope": scope, "speaker": outside},
            )
    return speakers


def visible(site: Site, scope: str, speaker_ids: Iterable[str]) -> bool:
    """True when a broadcast or event on these speakers shows in the scope's listings."""
    if scope == site.root.id:
        return True  # the subdistrict also sees speakers the zones file does not (yet) place
    inside = scope_speakers(site, scope)
    return any(sid in inside for sid in speaker_ids)


def touches(site: Site, scope: str, targets: Iterable[str]) -> bool:
    """True when any target (zone, group or speaker) reaches into the scope; unknown ids skip."""
    if scope == site.root.id:
        return True
    inside = scope_speakers(site, scope)
    for target in targets:
        if covers(site, scope, target):
            return True
        try:
            if site.resolve(target) & inside:
                return True
        except UnknownTarget:
            continue
    return False


def can_manage(site: Site, admin: Principal, user_scope: str, role: str) -> None:
    """Forbidden unless the admin may create, change or remove a user with this scope and role."""
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}", code="bad_role")
    if admin.kind == "system":
        return
    if not admin.is_admin:
        raise Forbidden(f"{admin.name} is an operator; only an admin manages users")
    if admin.scope not in site.zones:
        raise Forbidden(
            f"your scope {admin.scope} is no longer in the zones file",
            code="scope_gone",
            detail={"scope": admin.scope},
        )
    if not covers(site, admin.scope, user_scope):
        raise Forbidden(
            f"scope {user_scope} ({scope_name(site, user_scope)}) is not at or below your scope "
            f"{scope_name(site, admin.scope)}",
            detail={"scope": user_scope, "admin_scope": admin.scope},
        )


def rank(priority_class: str, tier: str) -> int:
    """A comparable priority: class first (×10), then tier; a larger number wins."""
    if priority_class not in CLASS_RANK:
        raise InvalidInput(
            f"priority {priority_class!r} is not one of {', '.join(CLASSES)}",
            code="bad_priority",
            detail={"priority": priority_class},
        )
    if tier not in TIER_RANK:
        raise InvalidInput(f"tier {tier!r} is not one of {', '.join(TIER_RANK)}")
    return CLASS_RANK[priority_class] * 10 + TIER_RANK[tier]


def check_priority(site: Site, principal: Principal, priority_class: str) -> int:
    """The caller's rank for a class; Forbidden if emergency is asked below the subdistrict."""
    if principal.scope not in site.zones:
        raise Forbidden(
            f"your scope {principal.scope} is no longer in the zones file",
            code="scope_gone",
            detail={"scope": principal.scope},
        )
    tier = tier_of(site, principal.scope)
    value = rank(priority_class, tier)
    if priority_class == "emergency" and tier != "subdistrict":
        raise Forbidden(
            f"only the subdistrict may start an emergency broadcast; your scope "
            f"{scope_name(site, principal.scope)} is {tier} tier",
            detail={"priority": priority_class, "tier": tier},
        )
    return value


def outranks(challenger: int, holder: int) -> bool:
    """True when a request of rank `challenger` may take a speaker held at rank `holder`."""
    return challenger > holder


def check_stop(site: Site, principal: Principal, owner: str, owner_scope: str) -> None:
    """A user stops what they started; an admin also what users inside their scope started."""
    if principal.name == owner or principal.kind == "system":
        return
    if principal.is_admin and owner_scope and covers(site, principal.scope, owner_scope):
        return
    raise Forbidden(
        f"this broadcast was started by {owner}; only they, or an admin whose scope "
        f"covers {scope_name(site, owner_scope) if owner_scope else 'it'}, may stop it",
        code="not_yours",
    )


def check_library_admin(site: Site, principal: Principal) -> None:
    """Removing clips from the shared library is for subdistrict-scope admins."""
    if principal.kind == "system" or (principal.is_admin and principal.scope == site.root.id):
        return
    raise Forbidden(
        "only a subdistrict admin may remove clips from the shared library", code="forbidden"
    )
