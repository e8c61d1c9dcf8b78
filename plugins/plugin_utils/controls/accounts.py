"""Judges of the oneadmin account controls: what the judge says apply changes on oneadmin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact


def _plan(facts: Mapping[str, Any], expect: Expect) -> Any:
    return kvm_host_judge.accounts(fact(facts, "accounts"), expect.settings())


def oneadmin_account(facts: Mapping[str, Any], expect: Expect) -> Result:
    """USR-001. Same uid/gid on every host: shared datastores and migration depend on it."""
    user = fact(facts, "accounts", "user")
    if user is None:
        return Result.fail(f"user {expect.oneadmin_user} does not exist")
    plan = _plan(facts, expect)
    membership = {f"{user.get('name')} added to {group}" for group in plan.groups}
    wrong = [c for c in plan.changes if c not in membership]
    if wrong:
        return Result.fail("apply would change " + ", ".join(wrong))
    return Result.passed(f"uid {user['uid']}, gid {user['gid']}, home {user['home']}")


def oneadmin_groups(facts: Mapping[str, Any], expect: Expect) -> Result:
    """USR-002."""
    accounts = fact(facts, "accounts")
    user = fact(accounts, "user")
    if user is None:
        return Result.fail(f"user {expect.oneadmin_user} does not exist")
    if kvm_host_judge.libvirt_group(accounts, expect.settings()) is None:
        return Result.fail("no libvirt group on this host (libvirt not installed?)")
    plan = _plan(facts, expect)
    member_of = set(fact(accounts, "user_groups"))
    missing = [g for g in plan.groups if g not in member_of]
    if missing:
        return Result.fail(f"{user['name']} is not in {', '.join(missing)}")
    return Result.passed(f"in {', '.join(plan.groups)}")
