"""Judges of the package controls: the libvirt daemon, QEMU and the drivers' tools."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact

MIN_LIBVIRT = (0, 4, 0)
# The seed guide: libvirt 0.8.7 breaks OpenNebula's KVM driver; it must not be used.
KNOWN_BAD_LIBVIRT = {(0, 8, 7): "a known-bad release for OpenNebula (seed guide)"}


def version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+(?:\.\d+)*)", text or "")
    if not match:
        return None
    parts = tuple(int(p) for p in match.group(1).split("."))
    return parts + (0,) * (3 - len(parts))


def libvirt_version(facts: Mapping[str, Any], expect: Expect) -> Result:
    """PKG-001."""
    text = fact(facts, "packages", "daemon_version")
    if not text:
        return Result.fail("no libvirt daemon (libvirtd or virtqemud --version gave nothing)")
    version = version_tuple(text)
    if version is None:
        return Result.error(f"cannot read the libvirt version {text!r}")
    if version < MIN_LIBVIRT:
        return Result.fail(f"libvirt {text} is older than 0.4.0")
    if version[:3] in KNOWN_BAD_LIBVIRT:
        return Result.fail(f"libvirt {text}: {KNOWN_BAD_LIBVIRT[version[:3]]}")
    return Result.passed(f"libvirt {text}")


def qemu_and_tools(facts: Mapping[str, Any], expect: Expect) -> Result:
    """PKG-002."""
    packages = fact(facts, "packages")
    missing = []
    if not fact(packages, "qemu_system"):
        missing.append("qemu-system-*")
    missing += [name for name in ("qemu_img", "ruby", "rsync") if not fact(packages, name)]
    if missing:
        return Result.fail("missing: " + ", ".join(m.replace("_", "-") for m in missing))
    return Result.passed(f"{len(packages['qemu_system'])} QEMU emulator(s), qemu-img, ruby, rsync")
