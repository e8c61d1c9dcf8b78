# -*- coding: utf-8 -*-
"""kvm_host_probe's AppArmor facts (in the libvirt group): whether AppArmor is on, the
libvirt-qemu abstraction's include points and the tree rules in it and its includes.
"""

import os
import re

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    BIN_DIRS,
    read_text,
    read_text_why,
)

AA_ABSTRACTION = "/etc/apparmor.d/abstractions/libvirt-qemu"
AA_ENABLED = "/sys/module/apparmor/parameters/enabled"


def apparmor_includes(text):
    """Return (dropin_dir, local_include) for the libvirt-qemu abstraction's text.

    AppArmor treats '#include <...>' as an include (legacy syntax), so it counts; '# include' with
    a space is a comment.
    """
    dropin = local = False
    rx = re.compile(r"^\s*(?:#include|include)\s+(?:if\s+exists\s+)?[<\"]([^>\"]+)[>\"]")
    for line in (text or "").splitlines():
        m = rx.match(line)
        if not m:
            continue
        target = m.group(1).rstrip("/")
        if target == "abstractions/libvirt-qemu.d":
            dropin = True
        elif target == "local/abstractions/libvirt-qemu":
            local = True
    return dropin, local


def apparmor_tree_rules(text):
    """The active 'PATH/** PERMS,' rules (with or without 'owner') of an AppArmor fragment that
    let QEMU read or write a whole tree: the datastore rule and any broader one that also opens
    oneadmin's home to every VM (AA-001 judges both)."""
    rx = re.compile(r"^\s*((?:owner\s+)?\"?/[^\s\"]*\*\*\"?\s+[a-zA-Z]*[rw][a-zA-Z]*\s*,)")
    return [m.group(1) for m in (rx.match(line) for line in (text or "").splitlines()) if m]


def gather_apparmor(module, enabled_path=AA_ENABLED, abstraction=AA_ABSTRACTION, errors=None):
    text = read_text(abstraction)
    dropin, local = apparmor_includes(text)
    enabled = read_text(enabled_path)
    rules = []
    dropin_dir = abstraction + ".d"
    try:
        dropins = sorted(os.path.join(dropin_dir, n) for n in os.listdir(dropin_dir))
    except OSError:
        dropins = []
    local_file = os.path.join(
        os.path.dirname(os.path.dirname(abstraction)),
        "local",
        "abstractions",
        os.path.basename(abstraction),
    )
    for path in [abstraction, local_file, *dropins]:
        content, why = read_text_why(path)
        if content is None and errors is not None and os.path.exists(path):
            errors.append("%s: %s" % (path, why))
        rules.extend({"file": path, "rule": r} for r in apparmor_tree_rules(content))
    return {
        "enabled": bool(enabled and enabled.strip().upper().startswith("Y")),
        "parser": module.get_bin_path("apparmor_parser", opt_dirs=BIN_DIRS) is not None,
        "abstraction": os.path.isfile(abstraction),
        "dropin_dir": dropin,
        "local_include": local,
        "rules": rules,
    }
