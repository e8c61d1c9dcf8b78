"""Judge of the AppArmor control."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kvmprep.controls.model import Expect, Result, fact


def datastore_rule(facts: Mapping[str, Any], expect: Expect) -> Result:
    """AA-001. libvirt builds each VM's profile from the libvirt-qemu abstraction."""
    aa = fact(facts, "libvirt", "apparmor")
    if not aa.get("enabled"):
        return Result.skip("AppArmor is not enabled in this kernel")
    if not aa.get("abstraction"):
        return Result.skip("no libvirt-qemu AppArmor abstraction: libvirt does not confine QEMU")
    want = re.compile(rf"owner\s+{re.escape(expect.apparmor_datastore_path.rstrip('/'))}/\*\*\s")
    for entry in aa.get("rules") or []:
        if want.match(str(entry.get("rule"))):
            return Result.passed(f"{entry['rule']} in {entry['file']}")
    return Result.fail(f"no 'owner {expect.apparmor_datastore_path}/** rw,' rule for libvirt-qemu")
