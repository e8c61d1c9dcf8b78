# -*- coding: utf-8 -*-
"""libvirt's daemon layouts and systemd's unit states: the one table the probe (which units it
asks systemd about), apply (which units it enables, starts, masks) and check (which units a
compliant host runs) all read.

Pure data and small pure functions, standard library only: imported by the probe on the host
(as the collection's module_utils) and by the judge on the controller.
"""

from __future__ import annotations

# Units per daemon layout: the daemon that runs QEMU domains (service, configured by conf),
# the sockets that give access to it (started and enabled; none for the classic daemon), the
# daemon that owns the migration listener (proxy_service, configured by proxy_conf), and the
# socket unit that listens for migration per transport (none for ssh and for the classic
# daemon, which opens its listener itself with --listen).
LAYOUTS = {
    "socket": {
        "service": "libvirtd.service",
        "conf": "/etc/libvirt/libvirtd.conf",
        "proxy_conf": "/etc/libvirt/libvirtd.conf",
        "proxy_service": "libvirtd.service",
        "sockets": ["libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket"],
        "listener": {"tcp": "libvirtd-tcp.socket", "tls": "libvirtd-tls.socket"},
    },
    "classic": {
        "service": "libvirtd.service",
        "conf": "/etc/libvirt/libvirtd.conf",
        "proxy_conf": "/etc/libvirt/libvirtd.conf",
        "proxy_service": "libvirtd.service",
        "sockets": [],
        "listener": {},
    },
    "modular": {
        "service": "virtqemud.service",
        "conf": "/etc/libvirt/virtqemud.conf",
        "proxy_conf": "/etc/libvirt/virtproxyd.conf",
        "proxy_service": "virtproxyd.service",
        "sockets": ["virtqemud.socket", "virtqemud-ro.socket", "virtqemud-admin.socket"],
        "listener": {"tcp": "virtproxyd-tcp.socket", "tls": "virtproxyd-tls.socket"},
    },
}

# libvirt's documented way from socket activation back to the classic daemon: mask its sockets
# (libvirtd refuses --listen while systemd hands it sockets).
LIBVIRTD_SOCKETS = [
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirtd-tcp.socket",
    "libvirtd-tls.socket",
]

# The port each transport's listener listens on (libvirt's defaults).
LISTENER_PORTS = {"tcp": 16509, "tls": 16514}


def _all_units():
    units = []
    for layout in LAYOUTS.values():
        for unit in [layout["service"], layout["proxy_service"]] + layout["sockets"]:
            units.append(unit)
        units.extend(layout["listener"][t] for t in sorted(layout["listener"]))
    units.extend(LIBVIRTD_SOCKETS)
    # virtproxyd's own sockets: present on a modular host, never managed, but their state tells
    # the layout apart.
    units.append("virtproxyd.socket")
    seen = []
    for unit in units:
        if unit not in seen:
            seen.append(unit)
    return tuple(seen)


# Every unit the probe asks systemd about: each unit any layout above may enable, start, mask
# or disable, so apply never decides on a unit the probe did not look at.
UNITS = _all_units()

# `systemctl is-enabled` states that start the unit at boot. "static" counts: such a unit has
# no [Install] section and is started by what depends on it (a socket), so apply cannot
# enable it and must not try on every run.
ENABLED_STATES = frozenset(
    ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias", "static")
)
ACTIVE_STATES = frozenset(("active", "activating", "reloading"))
MASKED_STATES = frozenset(("masked", "masked-runtime"))


def is_enabled(state):
    return state in ENABLED_STATES


def is_active(state):
    return state in ACTIVE_STATES


def is_masked(state):
    return state in MASKED_STATES
