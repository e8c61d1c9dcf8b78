"""Judges of the oneadmin account controls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvmprep.controls.model import Expect, Result, fact

# Distribution names of the group allowed to use the libvirt daemon, in order of preference.
LIBVIRT_GROUPS = ("libvirt", "libvirtd")


def oneadmin_account(facts: Mapping[str, Any], expect: Expect) -> Result:
    """USR-001. Same uid/gid on every host: shared datastores and migration depend on it."""
    user = fact(facts, "accounts", "user")
    if user is None:
        return Result.fail(f"user {expect.oneadmin_user} does not exist")
    wrong = []
    if user.get("uid") != expect.oneadmin_uid:
        wrong.append(f"uid {user.get('uid')} (want {expect.oneadmin_uid})")
    if user.get("gid") != expect.oneadmin_gid:
        wrong.append(f"gid {user.get('gid')} (want {expect.oneadmin_gid})")
    if user.get("home") != expect.oneadmin_home:
        wrong.append(f"home {user.get('home')} (want {expect.oneadmin_home})")
    home = fact(facts, "accounts", "home") or {}
    if not home.get("exists"):
        wrong.append(f"{user.get('home')}: {home.get('error') or 'missing'}")
    elif home.get("owner") != expect.oneadmin_user:
        wrong.append(f"{user.get('home')} owned by {home.get('owner')}")
    if wrong:
        return Result.fail(", ".join(wrong))
    return Result.passed(f"uid {user['uid']}, gid {user['gid']}, home {user['home']}")


def oneadmin_groups(facts: Mapping[str, Any], expect: Expect) -> Result:
    """USR-002."""
    accounts = fact(facts, "accounts")
    user = fact(accounts, "user")
    if user is None:
        return Result.fail(f"user {expect.oneadmin_user} does not exist")
    groups = fact(accounts, "groups")
    libvirt_group = expect.libvirt_group or next(
        (g for g in LIBVIRT_GROUPS if groups.get(g) is not None), None
    )
    if libvirt_group is None:
        return Result.fail("no libvirt group on this host (libvirt not installed?)")
    member_of = set(fact(accounts, "user_groups"))
    missing = [g for g in (expect.kvm_device_group, libvirt_group) if g not in member_of]
    if missing:
        return Result.fail(f"{user['name']} is not in {', '.join(missing)}")
    return Result.passed(f"in {expect.kvm_device_group}, {libvirt_group}")
