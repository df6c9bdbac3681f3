"""Scope, tier and priority policy on the real zones.yaml tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.access import policy
from broadcaster.access.principal import Principal
from broadcaster.errors import Forbidden, InvalidInput, UnknownTarget
from broadcaster.site import load

ZONES = Path(__file__).resolve().parents[2] / "zones.yaml"


@pytest.fixture(scope="module")
def site():
    return load(ZONES)


def user(scope: str, role: str = "operator", name: str = "u") -> Principal:
    return Principal(name, scope, role, "test")


def test_tiers(site):
    assert policy.tier_of(site, "subdistrict") == "subdistrict"
    assert policy.tier_of(site, "seat") == "subdistrict"
    assert policy.tier_of(site, "area-01") == "area"
    assert policy.tier_of(site, "v-01-01") == "village"
    with pytest.raises(UnknownTarget):
        policy.tier_of(site, "v-99-99")


# (scope, target, allowed) over the real tree: a village user, an area user, the seat, the root.
MATRIX = [
    ("v-01-01", "v-01-01", True),
    ("v-01-01", "horn-01-01-2", True),
    ("v-01-01", "v-01-02", False),  # a neighbouring village in the same area
    ("v-01-01", "horn-01-02-1", False),
    ("v-01-01", "area-01", False),  # their own area is above them
    ("v-01-01", "subdistrict", False),
    ("v-01-01", "seat", False),
    ("v-03-01", "road-1", False),  # a group spanning two villages and the seat
    ("v-07-01", "flood-watch", False),  # a group holding their village and two more
    ("area-01", "area-01", True),
    ("area-01", "v-01-04", True),
    ("area-01", "horn-01-03-1", True),
    ("area-01", "v-02-01", False),
    ("area-01", "seat-columns", False),
    ("area-03", "road-1", False),  # v-03-01/02 are inside, horn-04-01-* and columns not
    ("area-01", "all-horns", False),
    ("seat", "seat-columns", True),
    ("seat", "col-07", True),
    ("seat", "v-01-01", False),
    ("subdistrict", "subdistrict", True),
    ("subdistrict", "road-1", True),
    ("subdistrict", "all-horns", True),
    ("subdistrict", "flood-watch", True),
    ("subdistrict", "horn-09-01-1", True),
]


@pytest.mark.parametrize(("scope", "target", "allowed"), MATRIX)
def test_scope_matrix(site, scope, target, allowed):
    if allowed:
        assert policy.check_targets(site, user(scope), [target]) == site.resolve(target)
        return
    with pytest.raises(Forbidden) as err:
        policy.check_targets(site, user(scope), [target])
    assert err.value.status == 403
    assert err.value.detail["target"] == target
    assert f"target {target} " in err.value.message


def test_every_target_against_every_scope(site):
    """Allowed exactly when every speaker the target reaches is under the scope."""
    targets = [*site.zones, *site.groups]
    for scope in site.zones:
        inside = site.speakers_under(scope)
        for target in targets:
            reach = site.resolve(target)
            expected = reach <= inside and (target in site.groups or scope in site.path(target))
            try:
                policy.check_targets(site, user(scope), [target])
                got = True
            except Forbidden:
                got = False
            assert got == expected, (scope, target)


def test_message_names_first_target_outside(site):
    with pytest.raises(Forbidden) as err:
        policy.check_targets(site, user("v-01-01"), ["horn-01-01-1", "v-02-01", "v-02-02"])
    assert err.value.message == "target v-02-01 (示例五村) is outside your scope 示例一村"
    assert err.value.code == "forbidden"


def test_group_message_names_the_speaker_outside(site):
    with pytest.raises(Forbidden) as err:
        policy.check_targets(site, user("area-03"), ["road-1"])
    assert "road-1 (示例大道沿线)" in err.value.message
    assert err.value.detail["speaker"] == "col-14"  # first outside, sorted


def test_unknown_target_beats_scope(site):
    with pytest.raises(UnknownTarget):
        policy.check_targets(site, user("v-01-01"), ["v-01-01", "nowhere"])
    with pytest.raises(InvalidInput):
        policy.check_targets(site, user("subdistrict"), [])


def test_gone_scope_is_refused(site):
    with pytest.raises(Forbidden) as err:
        policy.check_targets(site, user("v-99-01"), ["v-01-01"])
    assert err.value.code == "scope_gone"


def test_first_outside_and_visible(site):
    speakers = ["horn-01-02-1", "horn-01-01-1", "col-01"]
    assert policy.first_outside(site, "v-01-01", speakers) == "col-01"
    assert policy.first_outside(site, "subdistrict", speakers) is None
    assert policy.visible(site, "v-01-01", speakers)
    assert not policy.visible(site, "v-02-01", speakers)
    assert policy.visible(site, "area-01", ["horn-01-04-3"])
    assert policy.visible(site, "subdistrict", ["unplaced-speaker"])
    assert not policy.visible(site, "v-01-01", [])


def test_touches(site):
    assert policy.touches(site, "v-01-01", ["subdistrict"])  # the whole network reaches it
    assert policy.touches(site, "v-03-01", ["road-1"])
    assert not policy.touches(site, "v-01-01", ["road-1", "ghost"])
    assert policy.touches(site, "area-04", ["horn-04-01-2"])


def test_admin_manages_at_or_below_only(site):
    village_admin = user("v-01-01", "admin")
    area_admin = user("area-01", "admin")
    policy.can_manage(site, village_admin, "v-01-01", "operator")
    policy.can_manage(site, village_admin, "v-01-01", "admin")
    policy.can_manage(site, area_admin, "v-01-03", "admin")
    policy.can_manage(site, area_admin, "area-01", "operator")
    for admin, scope in [
        (village_admin, "area-01"),
        (village_admin, "v-01-02"),
        (village_admin, "subdistrict"),
        (area_admin, "subdistrict"),
        (area_admin, "v-02-01"),
        (area_admin, "seat"),
    ]:
        with pytest.raises(Forbidden):
            policy.can_manage(site, admin, scope, "operator")
    with pytest.raises(Forbidden):
        policy.can_manage(site, user("subdistrict", "operator"), "v-01-01", "operator")
    with pytest.raises(InvalidInput):
        policy.can_manage(site, area_admin, "v-01-01", "root")
    policy.can_manage(site, Principal.system("subdistrict"), "subdistrict", "admin")


def test_rank_orders_class_then_tier(site):
    order = [(c, t) for c in policy.CLASSES for t in ("village", "area", "subdistrict")]
    ranks = [policy.rank(c, t) for c, t in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    # A village's live page outranks the subdistrict's announcement.
    assert policy.outranks(
        policy.rank("live", "village"), policy.rank("announcement", "subdistrict")
    )
    assert not policy.outranks(policy.rank("live", "area"), policy.rank("live", "area"))
    with pytest.raises(InvalidInput):
        policy.rank("urgent", "village")


def test_only_subdistrict_starts_emergency(site):
    assert policy.check_priority(site, user("subdistrict"), "emergency") == 43
    assert policy.check_priority(site, user("seat"), "emergency") == 43
    for scope in ("area-01", "v-01-01"):
        with pytest.raises(Forbidden):
            policy.check_priority(site, user(scope), "emergency")
    assert policy.check_priority(site, user("v-01-01"), "live") == 31
    assert policy.check_priority(site, user("area-02"), "background") == 12
