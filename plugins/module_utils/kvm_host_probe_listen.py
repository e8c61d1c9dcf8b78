# -*- coding: utf-8 -*-
"""kvm_host_probe's listen group: the TCP sockets listening on libvirt's ports."""

import ipaddress
import sys

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import read_text_why

LIBVIRT_PORTS = (16509, 16514)
TCP_LISTEN = "0A"


def _proc_net_address(text, byteorder=sys.byteorder):
    """The address of /proc/net/tcp{,6}: 32-bit words printed in host byte order."""
    raw = b""
    for i in range(0, len(text), 8):
        word = bytes.fromhex(text[i : i + 8])
        raw += word[::-1] if byteorder == "little" else word
    return str(ipaddress.ip_address(raw))


def parse_proc_net_tcp(text, family, ports=LIBVIRT_PORTS, byteorder=sys.byteorder):
    """Sockets in LISTEN state on one of ports, from /proc/net/tcp or /proc/net/tcp6 text."""
    sockets = []
    for line in (text or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        address, _sep, port_hex = fields[1].partition(":")
        try:
            port = int(port_hex, 16)
            if port not in ports:
                continue
            if len(address) != (8 if family == "ipv4" else 32):
                continue
            host = _proc_net_address(address, byteorder)
        except ValueError:
            continue
        sockets.append({"address": host, "port": port, "family": family})
    return sockets


def gather_listen(errors, files=(("/proc/net/tcp", "ipv4"), ("/proc/net/tcp6", "ipv6"))):
    sockets = []
    read_any = False
    reasons = []
    for path, family in files:
        text, why = read_text_why(path)
        if text is None:
            # No tcp6 on a kernel without IPv6 is normal; only say why when nothing was read.
            reasons.append("%s: %s" % (path, why))
            continue
        read_any = True
        sockets.extend(parse_proc_net_tcp(text, family))
    if not read_any:
        errors.extend(reasons)
        return {"sockets": None, "error": "; ".join(reasons)}
    return {"sockets": sockets, "error": None}
