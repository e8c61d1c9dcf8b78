# -*- coding: utf-8 -*-
"""kvm_host_probe's kvm and devices groups: the CPU, the kvm kernel modules, /dev/kvm (with
the KVM_GET_API_VERSION and KVM_CREATE_VM ioctls), /dev/net/tun and /dev/vhost-net.
"""

import fcntl
import os

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    errtext,
    read_text,
    stat_path,
)

KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd")
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


def parse_cpuinfo(text):
    """Return (vendor, vt_flags) from /proc/cpuinfo text (vendor None when not found)."""
    vendor = None
    flags = set()
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if name == "vendor_id" and vendor is None:
            vendor = value.strip() or None
        elif name == "flags":
            flags.update(f for f in value.split() if f in ("vmx", "svm"))
    return vendor, sorted(flags)


def module_state(name, sys_module="/sys/module"):
    """'loaded' (loadable module), 'builtin' (built into the kernel) or 'absent'."""
    base = os.path.join(sys_module, name)
    if os.path.exists(os.path.join(base, "initstate")):
        return "loaded"
    if os.path.isdir(base):
        return "builtin"
    return "absent"


def kvm_module_states(sys_module="/sys/module"):
    """States of kvm, kvm_intel, kvm_amd, plus any other kvm_* module present."""
    names = list(KVM_MODULES)
    try:
        extra = sorted(n for n in os.listdir(sys_module) if n.startswith("kvm_"))
    except OSError:
        extra = []
    names.extend(n for n in extra if n not in names)
    return {n: module_state(n, sys_module) for n in names}


def probe_dev_kvm(path="/dev/kvm"):
    """Stat /dev/kvm, open it and ask for the API version and an empty VM."""
    res = stat_path(path)
    del res["path"]
    res.update(api_version=None, create_vm=False)
    if not res["exists"]:
        return res
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        res["error"] = errtext(exc)
        return res
    try:
        res["api_version"] = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        if vm_fd >= 0:
            os.close(vm_fd)
            res["create_vm"] = True
    except OSError as exc:
        res["error"] = errtext(exc)
    finally:
        os.close(fd)
    return res


def gather_kvm(cpuinfo_path="/proc/cpuinfo", sys_module="/sys/module", dev_kvm="/dev/kvm"):
    vendor, vt_flags = parse_cpuinfo(read_text(cpuinfo_path))
    dev = probe_dev_kvm(dev_kvm)
    return {
        "cpu_vendor": vendor,
        "vt_flags": vt_flags,
        "modules": kvm_module_states(sys_module),
        "dev_kvm": dev,
        "usable": bool(dev["api_version"] == KVM_API_VERSION and dev["create_vm"]),
    }


DEVICES = ("/dev/net/tun", "/dev/vhost-net")


def gather_devices(paths=DEVICES):
    return {path: stat_path(path) for path in paths}
