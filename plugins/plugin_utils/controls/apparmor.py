"""Judge of the AppArmor control."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact

#: The permissions OpenNebula documents for the datastores (read, write, lock: QEMU locks its
#: disk images).
WANT_PERMS = "rwk"

_RULE = re.compile(r"^(owner\s+)?\"?(/[^\s\"]*?)/?\*\*\"?\s+([a-zA-Z]+)\s*,$")


class TreeRule(NamedTuple):
    text: str
    file: str
    tree: str  # the directory the rule covers, without a trailing slash ("" for /**)
    perms: str


def _tree_rules(aa: Mapping[str, Any]) -> list[TreeRule]:
    rules = []
    for entry in aa.get("rules") or []:
        text = str(entry.get("rule") or "").strip()
        m = _RULE.match(text)
        if m:
            rules.append(TreeRule(text, str(entry.get("file")), m.group(2).rstrip("/"), m.group(3)))
    return rules


def datastore_rule(facts: Mapping[str, Any], expect: Expect) -> Result:
    """AA-001. libvirt builds each VM's profile from the libvirt-qemu abstraction.

    The datastores need their own rule with OpenNebula's permissions; a rule over a directory
    above them (the seed's `owner /var/lib/one/** rw,`) also gives every QEMU process oneadmin's
    home: the SASL password in auth.conf, the TLS client key, the SSH keys.
    """
    aa = fact(facts, "libvirt", "apparmor")
    want = expect.apparmor_datastore_path.rstrip("/")
    wanted_rule = f"owner {want}/** {WANT_PERMS},"
    if "blocks" in facts and aa.get("abstraction"):
        # kvmprep's own block, as apply writes it (enabled or not: a kernel that enables
        # AppArmor later confines QEMU with it).
        changes = kvm_host_judge.apparmor(aa, facts["blocks"])["changes"]
        if changes:
            return Result.fail(
                "apply would change: " + ", ".join(changes), f"kvmprep apply writes {wanted_rule!r}"
            )
    if not aa.get("enabled"):
        return Result.skip("AppArmor is not enabled in this kernel")
    if not aa.get("abstraction"):
        return Result.skip("no libvirt-qemu AppArmor abstraction: libvirt does not confine QEMU")
    rules = _tree_rules(aa)
    exact = [r for r in rules if r.tree == want]
    complete = [r for r in exact if set(WANT_PERMS) <= set(r.perms)]
    broader = [r for r in rules if r.tree != want and (want + "/").startswith(r.tree + "/")]
    fix = f"kvmprep apply writes {wanted_rule!r}"
    if not complete:
        if exact:
            found = exact[0]
            return Result.fail(
                f"{found.text} in {found.file} lacks "
                f"{''.join(sorted(set(WANT_PERMS) - set(found.perms)))!r}: want {wanted_rule!r}",
                fix,
            )
        return Result.fail(f"no {wanted_rule!r} rule for libvirt-qemu", fix)
    if broader:
        names = "; ".join(f"{r.text} in {r.file}" for r in broader)
        return Result.warn(
            f"{complete[0].text} in {complete[0].file}, but also {names}: every VM's QEMU may "
            "read oneadmin's home (SASL password, TLS client key, SSH keys)",
            "remove the broader rule; the datastores need only their own",
        )
    return Result.passed(f"{complete[0].text} in {complete[0].file}")
