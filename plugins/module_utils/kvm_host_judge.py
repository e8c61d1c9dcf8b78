# -*- coding: utf-8 -*-
"""The judge: from the probe's facts and the role's settings, whether each concern of a host is
converged and, when it is not, what must change.

The one place these decisions are made. apply asks it which concern files to run, which units
to enable, start, mask or disable, and what to give /dev/kvm and oneadmin (action plugin
kvm_host_plan, on the controller, after the probe); check's controls ask it for their verdict
(plugins/plugin_utils/controls/). So a host check calls compliant is one apply leaves alone, and
the reverse.

Runs on the controller only: pure Python, standard library only, no Ansible import. Each
function takes the probe's fact group it judges (a mapping as the probe returns it) and plain
settings, and returns the changes as short sentences in the words of the concern ("mode 0600 ->
0660"): an empty list is converged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .kvm_host_layouts import LAYOUTS, LIBVIRTD_SOCKETS, is_active, is_enabled, is_masked

#: Distribution names of the group allowed to use the libvirt daemon, in order of preference,
#: when the settings leave it to the distribution and the distribution's value is not known.
LIBVIRT_GROUPS = ("libvirt", "libvirtd")
#: The login shell apply gives oneadmin: the drivers run commands through it over SSH.
ONEADMIN_SHELL = "/bin/bash"


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mode(value: Any) -> Optional[int]:
    """A file mode given as an octal string ("0660") or a number; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        return None


def mode_text(value: Any) -> str:
    """A mode as the four octal digits Linux tools print ("0660"), or as given when unreadable."""
    number = _mode(value)
    return "%04o" % number if number is not None else str(value)


@dataclass(frozen=True)
class Settings:
    """The role's settings the judge compares with, as apply uses them (role defaults applied,
    templated). Built with ``from_vars`` from ``kvm_host_<field>`` variables."""

    oneadmin_user: str
    oneadmin_group: str
    oneadmin_uid: int
    oneadmin_gid: int
    oneadmin_home: str
    #: "" leaves it to the distribution (the first of LIBVIRT_GROUPS the host has).
    libvirt_group: str
    kvm_device_group: str
    kvm_device_mode: str
    migration_transport: str
    #: "auto": the layout the probe found (socket activation when libvirt is not installed).
    libvirt_layout: str
    libvirt_tcp_allow_unauthenticated: bool
    apparmor_datastore_path: str
    one_node_install: str
    #: The libvirt configuration apply writes beside the fields above (tasks/config.yml).
    libvirt_tcp_auth: str
    libvirt_listen_addr: str
    libvirt_tls_allowed_dn_list: tuple
    qemu_conf_extra: Mapping[str, Any]

    @classmethod
    def from_vars(cls, values: Mapping[str, Any]) -> "Settings":
        """From ``{"kvm_host_<field>": value}``; every field is required (the role's defaults
        are applied by Ansible, never repeated here). Raises ValueError naming what is wrong."""
        kwargs = {}
        problems = []
        for name in cls.__dataclass_fields__:
            key = "kvm_host_" + name
            if key not in values or values[key] is None:
                problems.append("%s: not set" % key)
                continue
            value = values[key]
            kind = cls.__dataclass_fields__[name].type
            if kind == "int":
                number = _int(value)
                if number is None or isinstance(value, bool):
                    problems.append("%s: %r is not an integer" % (key, value))
                    continue
                value = number
            elif kind == "tuple":
                if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                    problems.append("%s: %r is not a list" % (key, value))
                    continue
                value = tuple(value)
            elif kind == "Mapping[str, Any]":
                if not isinstance(value, Mapping):
                    problems.append("%s: %r is not a dict" % (key, value))
                    continue
                value = dict(value)
            elif kind == "bool":
                if not isinstance(value, bool):
                    text = str(value).lower()
                    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                        problems.append("%s: %r is not a boolean" % (key, value))
                        continue
                    value = text in ("1", "true", "yes", "on")
            else:
                value = str(value)
            kwargs[name] = value
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**kwargs)


# --- /dev/kvm -------------------------------------------------------------------------------


def kvm_device(dev: Mapping[str, Any], settings: Settings) -> list:
    """What apply changes on /dev/kvm: its owner, group and mode (the udev rule keeps them at
    boot). Nothing when the device does not exist (loading the module is preflight's)."""
    if not dev.get("exists"):
        return []
    changes = []
    if dev.get("owner") != "root":
        changes.append("/dev/kvm owner %s -> root" % dev.get("owner"))
    if dev.get("group") != settings.kvm_device_group:
        changes.append("/dev/kvm group %s -> %s" % (dev.get("group"), settings.kvm_device_group))
    if _mode(dev.get("mode")) != _mode(settings.kvm_device_mode):
        changes.append(
            "/dev/kvm mode %s -> %s"
            % (mode_text(dev.get("mode")), mode_text(settings.kvm_device_mode))
        )
    return changes


# --- oneadmin -------------------------------------------------------------------------------


def libvirt_group(accounts: Mapping[str, Any], settings: Settings) -> Optional[str]:
    """The group that may use libvirt's socket: the setting, else the distribution's (the
    first of LIBVIRT_GROUPS the host has); None when neither is known."""
    if settings.libvirt_group:
        return settings.libvirt_group
    groups = accounts.get("groups") or {}
    return next((g for g in LIBVIRT_GROUPS if groups.get(g) is not None), None)


@dataclass(frozen=True)
class AccountsPlan:
    """What apply's tasks/oneadmin.yml (and tasks/files.yml for the home) does."""

    #: The kvm group must be created.
    kvm_group: bool
    #: oneadmin's primary group must be created or given its gid.
    oneadmin_group: bool
    #: What the user module must change on oneadmin (empty: nothing).
    oneadmin: list = field(default_factory=list)
    #: The supplementary groups oneadmin must be in.
    groups: list = field(default_factory=list)
    #: What tasks/files.yml changes on oneadmin's home directory itself.
    home: list = field(default_factory=list)
    #: The groups' own changes, as sentences.
    group_changes: list = field(default_factory=list)
    #: The groups this run creates (in check mode the user module cannot be asked about them).
    created: list = field(default_factory=list)

    @property
    def changes(self) -> list:
        return self.group_changes + self.oneadmin + self.home

    def as_dict(self) -> dict:
        return {
            "kvm_group": self.kvm_group,
            "oneadmin_group": self.oneadmin_group,
            "oneadmin": list(self.oneadmin),
            "groups": list(self.groups),
            "home": list(self.home),
            "created": list(self.created),
        }


def accounts(
    facts: Mapping[str, Any],
    settings: Settings,
    libvirt_group_name: Optional[str] = None,
    pending: bool = False,
) -> AccountsPlan:
    """oneadmin, its group and the kvm group as apply leaves them. ``libvirt_group_name``:
    the group apply puts oneadmin in beside kvm (None: ``libvirt_group()`` of the facts).
    ``pending``: the packages that bring the libvirt group are not installed yet (check mode)."""
    groups = facts.get("groups") or {}
    user = facts.get("user")
    home = facts.get("home") or {}
    group_changes = []
    kvm_group = groups.get(settings.kvm_device_group) is None
    if kvm_group:
        group_changes.append("group %s created" % settings.kvm_device_group)
    primary = groups.get(settings.oneadmin_group)
    if (
        settings.oneadmin_group not in groups
        and user
        and user.get("primary_group") == settings.oneadmin_group
    ):
        # Not asked about by name: oneadmin's own entry says what its primary group is.
        primary = {"gid": user.get("gid")}
    oneadmin_group = primary is None or _int(primary.get("gid")) != settings.oneadmin_gid
    if primary is None:
        group_changes.append(
            "group %s created (gid %s)" % (settings.oneadmin_group, settings.oneadmin_gid)
        )
    elif oneadmin_group:
        group_changes.append(
            "group %s gid %s -> %s"
            % (settings.oneadmin_group, primary.get("gid"), settings.oneadmin_gid)
        )
    created = ([settings.kvm_device_group] if kvm_group else []) + (
        [settings.oneadmin_group] if primary is None else []
    )
    wanted = [settings.kvm_device_group]
    name = None if pending else (libvirt_group_name or libvirt_group(facts, settings))
    if name and name not in wanted:
        wanted.append(name)
    changes = []
    if user is None:
        changes.append("user %s created" % settings.oneadmin_user)
    else:
        who = user.get("name") or settings.oneadmin_user
        if _int(user.get("uid")) != settings.oneadmin_uid:
            changes.append("%s uid %s -> %s" % (who, user.get("uid"), settings.oneadmin_uid))
        if user.get("primary_group") != settings.oneadmin_group:
            changes.append(
                "%s primary group %s -> %s"
                % (who, user.get("primary_group"), settings.oneadmin_group)
            )
        if user.get("home") != settings.oneadmin_home:
            changes.append("%s home %s -> %s" % (who, user.get("home"), settings.oneadmin_home))
        if user.get("shell") != ONEADMIN_SHELL:
            changes.append("%s shell %s -> %s" % (who, user.get("shell"), ONEADMIN_SHELL))
        member_of = set(facts.get("user_groups") or [])
        changes.extend("%s added to %s" % (who, g) for g in wanted if g not in member_of)
        if not home.get("exists"):
            changes.append("%s created" % (user.get("home") or settings.oneadmin_home))
    home_changes = []
    if user is not None and home.get("exists") and home.get("owner") != settings.oneadmin_user:
        home_changes.append(
            "%s owner %s -> %s"
            % (home.get("path") or user.get("home"), home.get("owner"), settings.oneadmin_user)
        )
    return AccountsPlan(
        kvm_group, oneadmin_group, changes, wanted, home_changes, group_changes, created
    )


# --- libvirt's units ------------------------------------------------------------------------


def layout(settings: Settings, libvirt: Mapping[str, Any]) -> str:
    """The daemon layout apply converges to: the setting's, or the one the probe found (socket
    activation where libvirt is not installed yet)."""
    if settings.libvirt_layout != "auto":
        return settings.libvirt_layout
    found = libvirt.get("layout")
    return found if found in LAYOUTS else "socket"


def wanted_units(name: str, transport: str) -> dict:
    """The units a converged host of layout ``name`` runs: ``enabled`` at boot and ``running``."""
    units = LAYOUTS[name]
    listener = [units["listener"][transport]] if transport in units["listener"] else []
    enabled = [units["service"], *list(units["sockets"]), *listener]
    # With sockets, the daemon runs on demand (and may exit when idle): the sockets must run.
    running = list(units["sockets"]) + listener + ([] if units["sockets"] else [units["service"]])
    return {"enabled": enabled, "running": running, "listener": listener}


@dataclass(frozen=True)
class UnitsPlan:
    """What apply's tasks/listener.yml does to libvirt's units, unit by unit."""

    layout: str
    to_mask: list = field(default_factory=list)
    to_unmask: list = field(default_factory=list)
    to_enable: list = field(default_factory=list)
    to_disable: list = field(default_factory=list)
    to_start: list = field(default_factory=list)

    @property
    def changes(self) -> list:
        return (
            ["%s masked" % u for u in self.to_mask]
            + ["%s unmasked" % u for u in self.to_unmask]
            + ["%s enabled" % u for u in self.to_enable]
            + ["%s stopped and disabled" % u for u in self.to_disable]
            + ["%s started" % u for u in self.to_start]
        )

    def as_dict(self) -> dict:
        daemon = LAYOUTS[self.layout]
        return {
            "layout": self.layout,
            # The layout's units, for the tasks that configure and restart them.
            "daemon": {
                key: (
                    list(value)
                    if isinstance(value, list)
                    else dict(value)
                    if isinstance(value, dict)
                    else value
                )
                for key, value in daemon.items()
            },
            "to_mask": list(self.to_mask),
            "to_unmask": list(self.to_unmask),
            "to_enable": list(self.to_enable),
            "to_disable": list(self.to_disable),
            "to_start": list(self.to_start),
        }


def _state(units: Mapping[str, Any], unit: str, what: str) -> str:
    # A unit the probe did not report is unknown: never taken as converged.
    return str((units.get(unit) or {}).get(what) or "unknown")


def _other_daemon_units(name: str) -> list:
    if name == "modular":
        return [
            "libvirtd.service",
            "libvirtd.socket",
            "libvirtd-ro.socket",
            "libvirtd-admin.socket",
        ]
    modular = LAYOUTS["modular"]
    return [modular["service"], *list(modular["sockets"])]


def _on(states: Mapping[str, Any], unit: str) -> bool:
    # "static" is not "on" here: such a unit only starts when something asks for it.
    enabled = _state(states, unit, "enabled")
    return (is_enabled(enabled) and enabled != "static") or is_active(
        _state(states, unit, "active")
    )


def units(libvirt: Mapping[str, Any], settings: Settings, managed: bool = True) -> UnitsPlan:
    """The units apply masks, unmasks, enables, disables and starts. ``managed``: systemd runs
    the host and the packages are installed (otherwise apply leaves the units alone)."""
    name = layout(settings, libvirt)
    if not managed or not libvirt.get("systemd"):
        return UnitsPlan(name)
    states = libvirt.get("units") or {}
    present = [u for u, s in states.items() if (s or {}).get("present")]
    transport = settings.migration_transport
    want = wanted_units(name, transport)
    to_mask = []
    to_unmask = []
    if name == "classic":
        # A socket that is masked and stopped is done; any other present one is masked.
        to_mask = [
            u
            for u in LIBVIRTD_SOCKETS
            if u in present
            and not (
                is_masked(_state(states, u, "enabled"))
                and _state(states, u, "active") == "inactive"
            )
        ]
    elif name == "socket":
        to_unmask = [u for u in LIBVIRTD_SOCKETS if is_masked(_state(states, u, "enabled"))]
    # A masked unit of the layout cannot be enabled before it is unmasked.
    to_unmask += [
        u for u in want["enabled"] if u not in to_unmask and is_masked(_state(states, u, "enabled"))
    ]
    to_enable = [u for u in want["enabled"] if not is_enabled(_state(states, u, "enabled"))]
    other_listeners = [
        u for t, u in sorted(LAYOUTS[name]["listener"].items()) if t != transport and u in present
    ]
    to_disable = [
        u
        for u in other_listeners
        if not (
            _state(states, u, "enabled") == "disabled" and _state(states, u, "active") == "inactive"
        )
    ]
    # The other daemon family's units, when they run or start at boot: two daemons running QEMU
    # domains is a mixed layout libvirt does not support.
    to_disable += [u for u in _other_daemon_units(name) if u in present and _on(states, u)]
    to_start = [u for u in want["running"] if not is_active(_state(states, u, "active"))]
    return UnitsPlan(name, to_mask, to_unmask, to_enable, to_disable, to_start)


# --- packages -------------------------------------------------------------------------------


def packages(installed: Mapping[str, Any], wanted: Sequence[str]) -> list:
    """The packages of ``wanted`` the probe found not installed, in the list's order."""
    missing = set(installed.get("missing") or [])
    out = []
    for name in wanted:
        if name in missing and name not in out:
            out.append(name)
    return out


# --- the SASL account of the TCP listener ---------------------------------------------------


def sasl(facts: Mapping[str, Any], db: Mapping[str, Any]) -> dict:
    """Whether the SASL password must be set (sasldb cannot be asked whether it matches: the
    probe compares the hash apply recorded) and whether the database's owner/mode differ."""
    password = not (facts.get("user_present") and facts.get("fingerprint_matches"))
    differs = [db.get("exists"), db.get("owner"), db.get("group"), db.get("mode")] != [
        True,
        "root",
        "root",
        "0600",
    ]
    return {"password": password, "db_differs": differs}


# --- what the drivers need on the host ------------------------------------------------------


RUNTIME_ITEMS = ("ruby_dir_missing", "emulator_missing", "remotes_dir_foreign", "sudoers_leftover")


def node_runtime(
    facts: Mapping[str, Any],
    settings: Settings,
    emulator: str,
    remotes_dir: str,
    pending: bool = False,
    oneadmin_exists: bool = True,
) -> dict:
    """tasks/node_runtime.yml, task by task: Ruby's site directory (manual mode), the emulator
    link's target, the remotes directory's owner, a sudoers file of kvmprep's left over when the
    node package's own rules replaced it."""
    paths = facts.get("paths") or {}
    ruby_dir = (
        not pending
        and settings.one_node_install == "manual"
        and (facts.get("ruby_dir") or {}).get("dir") is None
    )
    emulator_missing = not pending and not (paths.get(emulator) or {}).get("exists")
    remotes = paths.get(remotes_dir) or {}
    foreign = bool(
        remotes.get("exists") and remotes.get("owner") != settings.oneadmin_user and oneadmin_exists
    )
    leftover = bool(
        settings.one_node_install == "package"
        and (paths.get("/etc/sudoers.d/kvmprep-oneadmin") or {}).get("exists")
    )
    return {
        "ruby_dir_missing": ruby_dir,
        "emulator_missing": emulator_missing,
        "remotes_dir_foreign": foreign,
        "sudoers_leftover": leftover,
    }


# --- AppArmor -------------------------------------------------------------------------------

#: Where apply writes the datastores' rule, by what the host's libvirt-qemu abstraction reads:
#: Debian 13 (libvirt 11) reads drop-ins from libvirt-qemu.d; Debian 12 (libvirt 9) includes
#: local/abstractions/libvirt-qemu; older abstractions only allow an edit of the file itself.
APPARMOR_DROPIN = "/etc/apparmor.d/abstractions/libvirt-qemu.d/kvmprep-oneadmin"
APPARMOR_LOCAL = "/etc/apparmor.d/local/abstractions/libvirt-qemu"
APPARMOR_ABSTRACTION = "/etc/apparmor.d/abstractions/libvirt-qemu"
APPARMOR_FILES = (APPARMOR_DROPIN, APPARMOR_LOCAL, APPARMOR_ABSTRACTION)


def apparmor_file(apparmor: Mapping[str, Any]) -> str:
    if apparmor.get("dropin_dir"):
        return APPARMOR_DROPIN
    if apparmor.get("local_include"):
        return APPARMOR_LOCAL
    return APPARMOR_ABSTRACTION


def apparmor(
    apparmor_facts: Mapping[str, Any], blocks: Mapping[str, Any], pending: bool = False
) -> dict:
    """The datastores' rule as apply writes it: kvmprep's block, in the file the abstraction
    reads, root's and 0644. ``changes`` empty: converged (or nothing to confine: no abstraction
    while the packages are installed, which apply's tasks look at again)."""
    path = apparmor_file(apparmor_facts)
    block = blocks.get(path) or {}
    changes = []
    if pending or not apparmor_facts.get("abstraction"):
        todo = True
    else:
        if not block.get("present"):
            changes.append("AppArmor rule for the datastores written to %s" % path)
        elif [block.get("owner"), block.get("group"), block.get("mode")] != [
            "root",
            "root",
            "0644",
        ]:
            changes.append(
                "%s owner/mode %s:%s %s -> root:root 0644"
                % (path, block.get("owner"), block.get("group"), block.get("mode"))
            )
        todo = bool(changes)
    return {"file": path, "todo": todo, "converged": not changes and not todo, "changes": changes}


# --- libvirt's configuration files ---------------------------------------------------------

#: Who may use the daemon that runs QEMU, as apply sets it (socket group aside): oneadmin
#: reaches qemu:///system through the socket's group, no polkit rule needed.
ACCESS_SETTINGS = {"unix_sock_rw_perms": "0770", "auth_unix_rw": "none"}
#: The keys of the access settings (LV-004's part of the daemon's file; the rest is the
#: migration listener's, LV-005's).
ACCESS_KEYS = frozenset(ACCESS_SETTINGS) | {"unix_sock_group"}


def socket_group(settings: Settings, libvirt_group_name: Optional[str]) -> str:
    """The group given libvirt's socket. OpenNebula's node package gives it to oneadmin's
    group (its postinst, on every install and upgrade): in package mode kvmprep agrees, so
    that an upgrade and the next apply do not undo each other."""
    if settings.libvirt_group:
        return settings.libvirt_group
    if settings.one_node_install == "package":
        return settings.oneadmin_group
    return libvirt_group_name or LIBVIRT_GROUPS[0]


def listener_settings(settings: Settings, layout_name: str) -> dict:
    """The migration listener's keys of the daemon that owns it. Under socket activation
    systemd owns the sockets (listen_tcp is ignored there, listen_addr too: the listener
    unit's drop-in binds it); only the classic daemon reads listen_*."""
    transport = settings.migration_transport
    wanted: dict = {}
    if transport == "tcp":
        wanted["auth_tcp"] = settings.libvirt_tcp_auth
    if transport == "tls":
        wanted["auth_tls"] = "none"
        if settings.libvirt_tls_allowed_dn_list:
            wanted["tls_allowed_dn_list"] = list(settings.libvirt_tls_allowed_dn_list)
    if layout_name == "classic":
        wanted["listen_tcp"] = 1 if transport == "tcp" else 0
        wanted["listen_tls"] = 1 if transport == "tls" else 0
        if settings.libvirt_listen_addr:
            wanted["listen_addr"] = settings.libvirt_listen_addr
    return wanted


def config_edits(
    settings: Settings,
    layout_name: str,
    libvirt: Mapping[str, Any],
    libvirt_group_name: Optional[str] = None,
    defaults_file: str = "",
    defaults_key: str = "LIBVIRTD_ARGS",
) -> list:
    """The edits apply's kvm_host_conf makes (tasks/config.yml), one per file:
    ``{path, style, settings[, create]}``. qemu.conf (the seed: QEMU changes no file ownership
    and runs as oneadmin), the daemon that runs QEMU (access) and the one that owns the
    migration listener, and the daemon defaults file (``--listen`` for the classic daemon,
    none otherwise) where it exists or is needed. ``defaults_file``/``defaults_key``: the
    distribution's, used when the probe found none."""
    units = LAYOUTS[layout_name]
    qemu = {
        "dynamic_ownership": 0,
        "user": settings.oneadmin_user,
        "group": settings.oneadmin_group,
    }
    qemu.update(settings.qemu_conf_extra)
    access = dict(ACCESS_SETTINGS, unix_sock_group=socket_group(settings, libvirt_group_name))
    listener = listener_settings(settings, layout_name)
    edits = [{"path": "/etc/libvirt/qemu.conf", "style": "libvirt", "settings": qemu}]
    if units["proxy_conf"] == units["conf"]:
        edits.append(
            {"path": units["conf"], "style": "libvirt", "settings": dict(access, **listener)}
        )
    else:
        edits.append({"path": units["conf"], "style": "libvirt", "settings": access})
        edits.append({"path": units["proxy_conf"], "style": "libvirt", "settings": listener})
    found = libvirt.get("defaults_file")
    classic = layout_name == "classic"
    path = found or defaults_file
    if path and (found or classic):
        key = "libvirtd_opts" if path.endswith("libvirt-bin") else defaults_key
        words = (
            {"add_words": ["--listen"]}
            if classic and settings.migration_transport != "ssh"
            else {"remove_words": ["--listen", "-l"]}
        )
        edits.append({"path": path, "style": "shell", "settings": {key: words}, "create": classic})
    for edit in edits:
        edit["backup"] = True
    return edits


def _canonical(value: Any) -> Any:
    """A wanted value as libvirt's parser reads it back (kvm_host_conf writes a boolean as
    1/0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, str):
        return '"%s"' % value
    if isinstance(value, list):
        return "[%s]" % ", ".join(_shown(v) for v in value)
    return str(value)


def _words(value: Any, settings: Mapping[str, Any]) -> list:
    words = [w for w in (value or "").split() if w not in set(settings.get("remove_words") or ())]
    for word in settings.get("add_words") or ():
        if word not in words:
            words.append(word)
    return words


def config(facts: Mapping[str, Any], libvirt: Mapping[str, Any], edits: Sequence[Mapping]) -> list:
    """What kvm_host_conf changes for ``edits`` (config_edits) in the files the probe read
    (its ``config`` group, and the defaults file of its ``libvirt`` group), as
    ``(path, key, sentence)``: empty when every file is converged. A file the probe could not
    read or parse, or did not gather, is all change (kvm_host_conf decides on the host)."""
    changes = []
    for edit in edits:
        path = edit["path"]
        name = path.rsplit("/", 1)[-1]
        if edit["style"] == "shell":
            if libvirt.get("defaults_file") != path and not edit.get("create"):
                continue
            current = libvirt.get("defaults_args") if libvirt.get("defaults_file") == path else None
            for key, words in edit["settings"].items():
                old = (current or "").split()
                new = _words(current, words)
                if old != new:
                    added = [w for w in new if w not in old]
                    removed = [w for w in old if w not in new]
                    what = ", ".join(
                        ["%s added" % w for w in added] + ["%s removed" % w for w in removed]
                    )
                    changes.append((path, key, "%s: %s %s" % (path, key, what)))
            continue
        entry = facts.get(name)  # the probe names each file it reads by its base name
        if entry is None or entry.get("keys") is None:
            why = "not read" if entry is None else (entry.get("error") or "missing")
            for key in edit["settings"]:
                changes.append((path, key, "%s: %s set (%s)" % (name, key, why)))
            continue
        keys = entry["keys"]
        invalid = set(entry.get("invalid") or ())
        for key, value in edit["settings"].items():
            wanted = _canonical(value)
            if key in invalid:
                changes.append(
                    (path, key, "%s: %s does not parse -> %s" % (name, key, _shown(wanted)))
                )
            elif keys.get(key) != wanted:
                changes.append(
                    (
                        path,
                        key,
                        "%s: %s %s -> %s" % (name, key, _shown(keys.get(key)), _shown(wanted)),
                    )
                )
    return changes


# --- the whole host -------------------------------------------------------------------------


def plan(
    facts: Mapping[str, Any],
    settings: Settings,
    libvirt_group_name: Optional[str] = None,
    pending: bool = False,
    packages_wanted: Sequence[str] = (),
    sasl_enabled: bool = False,
    sasl_db: str = "/etc/libvirt/passwd.db",
    emulator: str = "",
    remotes_dir: str = "",
    oneadmin_exists: Optional[bool] = None,
    defaults_file: str = "",
    defaults_key: str = "LIBVIRTD_ARGS",
) -> dict:
    """Every decision apply takes from one probe, as plain data (JSON): one entry per concern,
    and ``changes``, each concern's changes as sentences. ``pending``: check mode found packages
    to install (their units and groups do not exist yet). The groups a probe did not gather
    (check's audit gathers no ``installed``, ``paths``, ``blocks``, ``sasl``) are judged as
    having nothing to do, but ``config``: without it kvm_host_conf decides on the host.
    ``defaults_file``/``defaults_key``: the distribution's daemon defaults file and variable."""
    kvm = facts.get("kvm") or {}
    dev_changes = kvm_device(kvm.get("dev_kvm") or {}, settings)
    account_facts = facts.get("accounts") or {}
    account_plan = accounts(account_facts, settings, libvirt_group_name, pending)
    libvirt = facts.get("libvirt") or {}
    unit_plan = units(libvirt, settings, managed=not pending)
    to_install = (
        packages(facts.get("installed") or {}, packages_wanted) if "installed" in facts else []
    )
    sasl_plan = (
        sasl(facts.get("sasl") or {}, (facts.get("paths") or {}).get(sasl_db) or {})
        if sasl_enabled and "sasl" in facts
        else {"password": False, "db_differs": False}
    )
    if oneadmin_exists is None:
        oneadmin_exists = account_facts.get("user") is not None
    runtime = (
        node_runtime(facts, settings, emulator, remotes_dir, pending, oneadmin_exists)
        if "paths" in facts
        else dict.fromkeys(
            ("ruby_dir_missing", "emulator_missing", "remotes_dir_foreign", "sudoers_leftover"),
            False,
        )
    )
    aa = (
        apparmor(libvirt.get("apparmor") or {}, facts.get("blocks") or {}, pending)
        if "blocks" in facts
        else {
            "file": apparmor_file(libvirt.get("apparmor") or {}),
            "todo": False,
            "converged": True,
            "changes": [],
        }
    )
    edits = config_edits(
        settings, unit_plan.layout, libvirt, libvirt_group_name, defaults_file, defaults_key
    )
    config_changes = (
        [sentence for _path, _key, sentence in config(facts["config"] or {}, libvirt, edits)]
        if "config" in facts
        else []
    )
    return {
        "kvm_device": {"differs": bool(dev_changes), "usable": bool(kvm.get("usable"))},
        "accounts": account_plan.as_dict(),
        "units": unit_plan.as_dict(),
        "packages": {"to_install": to_install},
        "sasl": sasl_plan,
        "node_runtime": runtime,
        "apparmor": aa,
        "config": {
            "edits": edits,
            "todo": bool(config_changes) or "config" not in facts,
            "socket_group": socket_group(settings, libvirt_group_name),
        },
        "changes": {
            "packages": ["%s installed" % name for name in to_install],
            "kvm_device": dev_changes,
            "accounts": account_plan.changes,
            "units": unit_plan.changes,
            "sasl": (["SASL password of the TCP listener set"] if sasl_plan["password"] else [])
            + (["%s owner/mode set" % sasl_db] if sasl_plan["db_differs"] else []),
            "node_runtime": [k.replace("_", " ") for k, v in runtime.items() if v],
            "apparmor": aa["changes"],
            "config": config_changes,
        },
    }


def converged(changes: Mapping[str, Sequence[str]]) -> bool:
    """Whether a plan's ``changes`` leave nothing to do."""
    return not any(changes.values())
