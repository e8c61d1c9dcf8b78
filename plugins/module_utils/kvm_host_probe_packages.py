# -*- coding: utf-8 -*-
"""kvm_host_probe's packages group: the daemon version and the QEMU, qemu-img, ruby and rsync
programs found.
"""

import os

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    UNSET,
    find_program,
    search_dirs,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_libvirt import (
    daemon_version,
)


def find_qemu_system(dirs):
    """Sorted paths of the executable qemu-system-* (and qemu-kvm) in dirs."""
    found = set()
    seen = set()
    for d in dirs:
        # /bin is /usr/bin on merged-/usr systems: list each real directory once.
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith("qemu-system-") or name == "qemu-kvm":
                path = os.path.join(d, name)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    found.add(path)
    return sorted(found)


def gather_packages(module, version=UNSET):
    dirs = search_dirs(os.environ.get("PATH"))
    return {
        "daemon_version": daemon_version(module) if version is UNSET else version,
        "qemu_system": find_qemu_system(dirs),
        "qemu_img": find_program("qemu-img", dirs),
        "ruby": find_program("ruby", dirs),
        "rsync": find_program("rsync", dirs),
    }
