"""Judges of the KVM controls: CPU extensions, kernel modules, /dev/kvm, network devices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact

_DENIED = ("Permission denied", "Operation not permitted")
# The only KVM API version Linux has answered since 2.6.22.
KVM_API_VERSION = 12


def cpu_extensions(facts: Mapping[str, Any], expect: Expect) -> Result:
    """KVM-001. Flags alone give false negatives on nested/paravirtual hosts: ask /dev/kvm too."""
    flags = fact(facts, "kvm", "vt_flags")
    if flags:
        return Result.passed(", ".join(flags))
    dev = fact(facts, "kvm", "dev_kvm")
    if fact(facts, "kvm", "usable"):
        return Result.warn(
            "no vmx/svm in /proc/cpuinfo, but /dev/kvm creates VMs (nested or paravirtual KVM)"
        )
    if dev.get("exists") and dev.get("error") in _DENIED:
        return Result.error(
            f"no vmx/svm in /proc/cpuinfo and /dev/kvm cannot be opened to test it "
            f"({dev['error']}): run as root"
        )
    reason = dev.get("error") or "KVM_CREATE_VM failed"
    return Result.fail(f"no vmx/svm in /proc/cpuinfo and /dev/kvm is not usable ({reason})")


def kvm_modules(facts: Mapping[str, Any], expect: Expect) -> Result:
    """KVM-002. /sys/module shows built-in modules too; any kvm_* backend counts (kvm_pvm)."""
    modules: Mapping[str, str] = fact(facts, "kvm", "modules")
    present = {name: state for name, state in modules.items() if state in ("loaded", "builtin")}
    if "kvm" not in present:
        return Result.fail("the kvm module is neither loaded nor built into the kernel")
    backends = sorted(name for name in present if name.startswith("kvm_"))
    if not backends:
        return Result.fail("kvm is present but no vendor backend (kvm_intel, kvm_amd, ...)")
    return Result.passed(", ".join(f"{name} ({present[name]})" for name in ["kvm", *backends]))


def dev_kvm(facts: Mapping[str, Any], expect: Expect) -> Result:
    """KVM-003. What differs is what apply changes (the judge's kvm_device)."""
    dev = fact(facts, "kvm", "dev_kvm")
    if not dev.get("exists"):
        return Result.fail(f"/dev/kvm: {dev.get('error') or 'missing'}")
    if not dev.get("char_device"):
        return Result.fail("/dev/kvm is not a character device")
    changes = kvm_host_judge.kvm_device(dev, expect.settings())
    if changes:
        return Result.fail("apply would change " + ", ".join(changes))
    return Result.passed(f"{dev['owner']}:{dev['group']} {dev['mode']}")


def net_devices(facts: Mapping[str, Any], expect: Expect) -> Result:
    """KVM-005. Without tun no VM gets a network; without vhost-net it is only slower."""
    devices = fact(facts, "devices")
    tun = fact(devices, "/dev/net/tun")
    vhost = fact(devices, "/dev/vhost-net")
    if not (tun.get("exists") and tun.get("char_device")):
        return Result.fail(f"/dev/net/tun: {tun.get('error') or 'not a character device'}")
    if not (vhost.get("exists") and vhost.get("char_device")):
        return Result.warn(
            f"/dev/vhost-net: {vhost.get('error') or 'not a character device'} "
            "(VM networking works, slower)"
        )
    return Result.passed("/dev/net/tun, /dev/vhost-net")


def dev_kvm_for_user(facts: Mapping[str, Any], expect: Expect) -> Result:
    """KVM-004. Root can always open /dev/kvm; what counts is QEMU's user, with its groups."""
    probe = fact(facts, "access", "kvm_as_user")
    user = probe.get("user") or expect.oneadmin_user
    if probe.get("error") == f"no user {user}":
        return Result.fail(f"user {user} does not exist")
    if not probe.get("evaluated"):
        return Result.error(f"/dev/kvm as {user}: {probe.get('error') or 'not evaluated'}")
    version = probe.get("api_version")
    groups = ", ".join(probe.get("groups") or []) or "none"
    if version == KVM_API_VERSION:
        return Result.passed(f"{user} (groups {groups}) opens /dev/kvm, API version {version}")
    reason = probe.get("error") or f"API version {version}, want {KVM_API_VERSION}"
    return Result.fail(f"{user} (groups {groups}) cannot use /dev/kvm: {reason}")
