# -*- coding: utf-8 -*-
"""kvm_host_probe's config group: what libvirt reads from its configuration files, with the
parser kvm_host_conf edits them with (kvm_host_libvirt_conf)."""

import os

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_libvirt_conf import read_conf
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import read_text_why

CONF_FILES = (
    ("qemu.conf", "/etc/libvirt/qemu.conf"),
    ("libvirtd.conf", "/etc/libvirt/libvirtd.conf"),
    ("virtqemud.conf", "/etc/libvirt/virtqemud.conf"),
    ("virtproxyd.conf", "/etc/libvirt/virtproxyd.conf"),
)


def gather_config(errors, files=CONF_FILES):
    result = {}
    for name, path in files:
        entry = {
            "path": path,
            "exists": os.path.exists(path),
            "keys": None,
            "invalid": [],
            "syntax_error": None,
            "error": None,
        }
        if entry["exists"]:
            text, why = read_text_why(path)
            if text is None:
                entry["error"] = why
                errors.append("%s: %s" % (path, why))
            else:
                entry["keys"], entry["invalid"], entry["syntax_error"] = read_conf(text)
        result[name] = entry
    return result
