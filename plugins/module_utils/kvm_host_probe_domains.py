# -*- coding: utf-8 -*-
"""kvm_host_probe's domains group: the QEMU domains running here and their machine types."""

import os
import xml.etree.ElementTree as ET

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    errtext,
    read_text_why,
)

LIBVIRT_QEMU_STATE = "/run/libvirt/qemu"


def parse_domain_status(text):
    """(name, machine, state, pid) of a status XML libvirt keeps per running QEMU domain
    (``<domstatus state= pid=><domain><name/><os><type machine=/>``); ValueError when it is
    not one."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError("not well-formed XML: %s" % exc) from None
    domain = root.find("domain") if root.tag == "domstatus" else None
    name = domain.findtext("name") if domain is not None else None
    if not name:
        raise ValueError("no <domstatus><domain><name>")
    os_type = domain.find("os/type")
    machine = os_type.get("machine") if os_type is not None else None
    pid = root.get("pid")
    return (
        name.strip(),
        machine or None,
        root.get("state"),
        int(pid) if pid and pid.isdigit() else None,
    )


def one_vm_id(name):
    """OpenNebula's VM id of a domain it named one-<id>, else None."""
    prefix, _sep, number = (name or "").partition("-")
    return int(number) if prefix == "one" and number.isdigit() else None


def gather_domains(state_dir=LIBVIRT_QEMU_STATE, errors=None):
    """The QEMU domains libvirt runs here, read from the status XML it keeps for each (root
    only) instead of asking the daemon: ``running`` lists per domain its name, the
    OpenNebula VM id (one-<id>), the machine type it started with (what it keeps until it is
    powered off), its state and QEMU's pid; a file that cannot be read or parsed is listed
    with ``error``. The directory is absent when libvirt never ran a QEMU domain."""
    res = {"path": state_dir, "exists": os.path.isdir(state_dir), "error": None, "running": []}
    if not res["exists"]:
        return res
    try:
        names = sorted(n for n in os.listdir(state_dir) if n.endswith(".xml"))
    except OSError as exc:
        res["error"] = errtext(exc)
        if errors is not None:
            errors.append("%s: %s" % (state_dir, res["error"]))
        return res
    for filename in names:
        path = os.path.join(state_dir, filename)
        if not os.path.isfile(path):
            continue
        entry = {"file": filename, "name": filename[: -len(".xml")], "machine": None}
        entry.update(state=None, pid=None, error=None)
        text, why = read_text_why(path)
        if text is None:
            entry["error"] = why
            if errors is not None:
                errors.append("%s: %s" % (path, why))
        else:
            try:
                entry["name"], entry["machine"], entry["state"], entry["pid"] = parse_domain_status(
                    text
                )
            except ValueError as exc:
                entry["error"] = str(exc)
                if errors is not None:
                    errors.append("%s: %s" % (path, exc))
        entry["vm_id"] = one_vm_id(entry["name"])
        res["running"].append(entry)
    return res
