# -*- coding: utf-8 -*-
"""kvm_host_probe's identity group: where libvirt takes the host UUID from when host_uuid is
not set.
"""

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import read_text_why

# libvirt's getDMISystemUUID order (host_uuid_source = "smbios", the default).
DMI_UUID_FILES = ("/sys/devices/virtual/dmi/id/product_uuid", "/sys/class/dmi/id/product_uuid")
MACHINE_ID = "/etc/machine-id"


def read_source(path):
    text, why = read_text_why(path)
    return {"path": path, "value": None if text is None else text.strip(), "error": why}


def gather_identity(dmi_files=DMI_UUID_FILES, machine_id=MACHINE_ID):
    return {"dmi": [read_source(p) for p in dmi_files], "machine_id": read_source(machine_id)}
