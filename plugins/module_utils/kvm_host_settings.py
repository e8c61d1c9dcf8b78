"""The roles' settings, judged before anything changes on any host.

Pure Python, standard library only, no Ansible import: the controller-side action plugin
(plugins/action/kvm_host_settings.py) and the unit tests import it as it is, and one_frontend's
trust tasks can use ``host_name_problem`` for the names the hosts report.

``validate`` takes the values as the inventory gives them (templated, but not converted the way
argument_specs converts them: a dict given for a str is a dict here) and returns one line per
problem: ``VARIABLE: value REPR: problem``. A secret's value is never part of a line.
"""

from __future__ import annotations

import ipaddress
import re

# Ansible's spellings of a boolean (what argument_specs' type bool accepts from ``-e k=v``).
_TRUE = frozenset(("1", "true", "yes", "on", "y", "t"))
_FALSE = frozenset(("0", "false", "no", "off", "n", "f"))

# POSIX portable user and group names as useradd/groupadd take them by default (NAME_REGEX of
# Debian's adduser.conf and shadow's default), at most 32 characters (the utmp field).
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Names with a meaning of their own where these names are written: sudoers (ALL) and root.
_RESERVED_NAMES = frozenset(("all", "root"))

# A host name or address as it goes into known_hosts, /etc/hosts and OpenNebula: letters,
# digits and . _ - : only, so that no known_hosts pattern (* ? ! , [ ] @) or line break fits.
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9_.])?$")

# Unit and package names end up in command lines as single arguments.
_UNIT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9:_.@\\-]*$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._:=~-]*$")
# Keys of configuration files the roles write (qemu.conf, kvmrc, vmm_exec_kvm.conf).
_CONF_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_DEVICE_MODE_RE = re.compile(r"^0[0-7]{3}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_OR_CONTROL_RE = re.compile(r"[\s\x00-\x1f\x7f]")

# Pseudo file systems: nothing of the roles belongs there.
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
# The system's own trees: a directory the roles give to oneadmin (chown) is never in them.
_SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/root")
# Directories other things live in: one of their subdirectories is fine, they themselves not.
_SHARED_DIRS = frozenset(
    (
        *("/var", "/var/lib", "/var/tmp", "/var/cache", "/var/log", "/tmp", "/home", "/run"),
        *("/srv", "/opt", "/mnt", "/media"),
    )
)

# The system's own directories that a link or a configuration directory must not replace.
_SYSTEM_DIRS = frozenset(
    (
        *_SYSTEM_TREES,
        *_SHARED_DIRS,
        *("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/share"),
        *("/usr/local", "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib", "/etc/systemd"),
    )
)

# SASL mechanisms with a security layer (SSF > 0) that libvirt accepts over plain TCP
# (tcp_min_ssf: 56 on Debian 12, 112 on Debian 13). The others authenticate only; libvirt then
# refuses them, or (tcp_min_ssf = 0) every migration's data and the password go in clear.
# libvirt's and QEMU's sasl2 configuration say so: only GSSAPI and DIGEST-MD5 offer session
# encryption; SCRAM is for a TLS transport (its Cyrus SASL plugin has no security layer).
SASL_SECURE_MECHS = frozenset(("digest-md5", "gssapi"))
_SASL_NO_LAYER = {
    "plain": "sends the password in clear and has no security layer",
    "login": "sends the password in clear and has no security layer",
    "anonymous": "does not authenticate anybody",
    "external": "takes the identity from the transport, which plain TCP does not have",
    "cram-md5": "has no security layer",
    "ntlm": "has no security layer",
    "otp": "has no security layer",
}

UID_MAX = 2**31 - 2
_REPR_MAX = 60


def type_name(value: object) -> str:
    """The YAML/JSON name of a value's type (Ansible's tagged str is a str)."""
    for kind, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (dict, "dict"),
        (list, "list"),
        (tuple, "list"),
    ):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _plain(value: object) -> object:
    # Tagged subclasses (Ansible's) print their class in repr: back to the plain types first.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def shown(value: object) -> str:
    """A value as one short line (repr: a newline shows as \\n)."""
    text = repr(_plain(value))
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def line(name: str, value: object, problem: str, secret: bool = False) -> str:
    """``VARIABLE: value REPR: problem``; a secret's value is not shown."""
    return f"{name}: {'value hidden' if secret else 'value ' + shown(value)}: {problem}"


# --- Types, as the role's argument_specs declares them -------------------------------------


def as_bool(value: object) -> bool | None:
    """Ansible's reading of a boolean, None if it is none."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
    return None


def as_int(value: object) -> int | None:
    """An int, or a string of decimal digits (``-e k=v`` gives strings); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,19}", value.strip()):
        return int(value)
    return None


def type_problem(value: object, spec: dict) -> str | None:
    """What is wrong with the value's type (and choices) for an argument_specs option."""
    kind = spec.get("type", "str")
    if value is None:
        return f"must be a {kind}, got null (an empty value in YAML)"
    if kind in ("str", "path"):
        if not isinstance(value, str):
            return f"must be a string (got {type_name(value)})"
    elif kind == "int":
        if as_int(value) is None:
            return f"must be an integer (got {type_name(value)})"
    elif kind == "bool":
        if as_bool(value) is None:
            return f"must be true or false (got {type_name(value)})"
    elif kind == "list":
        if not isinstance(value, list):
            return f"must be a list (got {type_name(value)})"
        element = spec.get("elements")
        if element == "str" and not all(isinstance(item, str) for item in value):
            bad = next(item for item in value if not isinstance(item, str))
            return f"must be a list of strings (it holds {type_name(bad)})"
    elif kind == "dict" and not isinstance(value, dict):
        return f"must be a mapping (got {type_name(value)})"
    choices = spec.get("choices")
    if choices and value not in choices:
        return "must be one of " + ", ".join(str(choice) for choice in choices)
    return None


# --- Values ------------------------------------------------------------------------------


def name_problem(value: str, what: str = "name") -> str | None:
    """A POSIX portable user or group name, none with a meaning of its own (ALL, root)."""
    if value.lower() in _RESERVED_NAMES:
        return f"{value!r} is not allowed as this {what}: it would give every user or root's rights"
    if not _NAME_RE.match(value):
        return (
            f"not a portable {what} (a lower-case letter or _, then up to 31 lower-case"
            " letters, digits, _ or -)"
        )
    return None


def id_problem(value: object) -> str | None:
    """A uid or gid: 1 to 2^31-2 (0 is root, -1 and 2^31-1 mean "no id" to the kernel)."""
    number = as_int(value)
    if number is None:
        return f"must be an integer (got {type_name(value)})"
    if not 0 < number <= UID_MAX:
        return f"must be between 1 and {UID_MAX} (0 is root's)"
    return None


def path_problem(value: str) -> str | None:
    """An absolute, normalised path, outside the kernel's pseudo file systems."""
    if not value:
        return "must not be empty"
    if _WHITESPACE_OR_CONTROL_RE.search(value):
        return "must not contain whitespace or control characters"
    if not value.startswith("/"):
        return "must be an absolute path"
    if value == "/":
        return "must not be / itself"
    if value.endswith("/") or "//" in value:
        return "must be normalised (no trailing / and no //)"
    if any(part in (".", "..") for part in value.split("/")):
        return "must be normalised (no . or .. component)"
    for root in _PSEUDO_ROOTS:
        if value == root or value.startswith(root + "/"):
            return f"must not be under {root}"
    return None


def owned_dir_problem(value: str) -> str | None:
    """A directory the roles give to oneadmin: also not a system tree or a shared directory."""
    problem = path_problem(value)
    if problem:
        return problem
    for tree in _SYSTEM_TREES:
        if value == tree or value.startswith(tree + "/"):
            return f"must not be in {tree} (the roles give this directory to oneadmin)"
    if value in _SHARED_DIRS:
        return "must not be a shared system directory (the roles give it to oneadmin)"
    return None


def link_path_problem(value: str) -> str | None:
    """A path the role makes a symlink (the emulator): not a directory of the system."""
    problem = path_problem(value)
    if problem:
        return problem
    if value in _SYSTEM_DIRS:
        return "must be a file's path, not a system directory"
    for tree in ("/etc", "/boot", "/root"):
        if value.startswith(tree + "/"):
            return f"must not be in {tree}"
    return None


def config_dir_problem(value: str) -> str | None:
    """A directory root writes configuration into (OpenNebula's /etc/one): not a system one."""
    problem = path_problem(value)
    if problem:
        return problem
    if value in _SYSTEM_DIRS:
        return "must be a directory of its own, not a system directory"
    return None


def sasl_user_problem(value: str) -> str | None:
    """The SASL user of the sasldb and of oneadmin's auth.conf: a portable name."""
    if not _NAME_RE.match(value):
        return "not a portable name (a lower-case letter or _, then a-z, 0-9, _ or -)"
    return None


def host_name_problem(value: str) -> str | None:
    """A host name or address as the roles write it (known_hosts, /etc/hosts, OpenNebula)."""
    if _WHITESPACE_OR_CONTROL_RE.search(value):
        return "must not contain whitespace or control characters"
    if not _HOST_NAME_RE.match(value):
        return "not a host name or address (letters, digits and . _ - : only)"
    return None


def sasl_mech_problem(value: str) -> str | None:
    """One SASL mechanism with a security layer over plain TCP."""
    mech = value.strip().lower()
    if mech in SASL_SECURE_MECHS:
        return None
    reason = _SASL_NO_LAYER.get(mech)
    if reason is None and mech.startswith("scram-"):
        reason = "has no security layer in Cyrus SASL"
    if reason is None:
        reason = "is not one kvmprep knows to have a security layer"
    return f"this mechanism {reason}; use digest-md5 or gssapi (libvirt's TCP transport)"


def listen_addr_problem(value: str) -> str | None:
    """Empty (every interface) or one IP address."""
    if value == "":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address (or empty for every interface)"
    return None


def dn_list_problem(value: list) -> str | None:
    """libvirt's tls_allowed_dn_list: DN patterns, one line each, within libvirt's quotes."""
    for item in value:
        if not item.strip():
            return "holds an empty DN"
        if _CONTROL_RE.search(item) or '"' in item or "\\" in item:
            return 'a DN must not contain control characters, " or \\'
    return None


def device_mode_problem(value: str) -> str | None:
    """The mode of /dev/kvm as udev and check read it: four octal digits, no special bits."""
    if not _DEVICE_MODE_RE.match(value):
        return 'must be four octal digits starting with 0, such as "0660"'
    return None


def single_line_problem(value: str) -> str | None:
    """Any one-line setting: a line break would start a line of its own in the file."""
    if _CONTROL_RE.search(value):
        return "must not contain control characters (a line break, a tab...)"
    return None


def conf_mapping_problem(value: dict) -> str | None:
    """Keys and values of a configuration file the roles write (qemu.conf, kvmrc...)."""
    for key, item in value.items():
        if not isinstance(key, str) or not _CONF_KEY_RE.match(key):
            return f"key {shown(key)} is not a configuration key (letters, digits, _)"
        problem = _conf_value_problem(item)
        if problem:
            return f"key {key}: {problem}"
    return None


def _conf_value_problem(value: object) -> str | None:
    if isinstance(value, dict):
        return conf_mapping_problem(value)
    if isinstance(value, list):
        for item in value:
            problem = _conf_value_problem(item)
            if problem:
                return problem
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, str):
        return single_line_problem(value)
    return f"a {type_name(value)} cannot be written to the file"


# --- Which rule for which variable -----------------------------------------------------------

_USER = "user name"
_GROUP = "group name"

# Variable -> (rule, whether empty means "not set": the role's own default applies then).
_VALUE_RULES = {
    "kvm_host_oneadmin_user": (lambda v: name_problem(v, _USER), False),
    "kvm_host_oneadmin_group": (lambda v: name_problem(v, _GROUP), False),
    "kvm_host_libvirt_group": (lambda v: name_problem(v, _GROUP), True),
    "kvm_host_kvm_device_group": (lambda v: name_problem(v, _GROUP), False),
    "kvm_host_libvirt_sasl_username": (sasl_user_problem, False),
    "one_frontend_oneadmin_user": (lambda v: name_problem(v, _USER), False),
    "one_frontend_oneadmin_group": (lambda v: name_problem(v, _GROUP), False),
    "kvm_host_oneadmin_uid": (id_problem, False),
    "kvm_host_oneadmin_gid": (id_problem, False),
    "kvm_host_oneadmin_home": (owned_dir_problem, False),
    "kvm_host_remotes_dir": (owned_dir_problem, False),
    "kvm_host_apparmor_datastore_path": (owned_dir_problem, False),
    "kvm_host_emulator_link": (link_path_problem, False),
    "one_frontend_oneadmin_home": (owned_dir_problem, False),
    "one_frontend_remotes_dir": (owned_dir_problem, False),
    "one_frontend_remote_dir": (owned_dir_problem, True),
    "one_frontend_etc_dir": (config_dir_problem, False),
    "one_frontend_host_name": (host_name_problem, True),
    "kvm_host_libvirt_sasl_mech": (sasl_mech_problem, False),
    "kvm_host_libvirt_listen_addr": (listen_addr_problem, True),
    "kvm_host_libvirt_tls_allowed_dn_list": (dn_list_problem, False),
    "kvm_host_kvm_device_mode": (device_mode_problem, False),
    "kvm_host_one_node_package": (
        lambda v: None if _PACKAGE_RE.match(v) else "not a package name",
        False,
    ),
    "one_frontend_oned_service": (
        lambda v: None if _UNIT_RE.match(v) else "not a systemd unit name",
        False,
    ),
    "one_frontend_wait_monitored": (
        lambda v: None if 0 <= int(v) <= 86400 else "must be between 0 and 86400 seconds",
        False,
    ),
    "kvm_host_qemu_conf_extra": (conf_mapping_problem, False),
    "one_frontend_kvmrc": (conf_mapping_problem, False),
    "one_frontend_vmm_defaults": (conf_mapping_problem, False),
}

#: PEM text: the only strings that may span lines.
MULTILINE = frozenset(
    (
        "kvm_host_libvirt_tls_ca_cert",
        "kvm_host_libvirt_tls_server_cert",
        "kvm_host_libvirt_tls_server_key",
        "kvm_host_libvirt_tls_client_cert",
        "kvm_host_libvirt_tls_client_key",
    )
)

#: Every variable with a rule of its own (the README's table "What is validated" lists them).
VALIDATED = frozenset(_VALUE_RULES)


def value_problem(name: str, value: object) -> str | None:
    """The rule of one variable, for a value of the right type."""
    rule = _VALUE_RULES.get(name)
    if rule is not None:
        check, empty_ok = rule
        if empty_ok and value == "":
            return None
        return check(value)
    if isinstance(value, str) and name not in MULTILINE:
        return single_line_problem(value)
    return None


def _apply_problems(values: dict) -> list[str]:
    # What the kvm_host role cannot apply as a whole (not one variable's value).
    out = []
    transport = values.get("kvm_host_migration_transport")
    tcp_auth = values.get("kvm_host_libvirt_tcp_auth")
    if (
        transport == "tcp"
        and tcp_auth == "none"
        and not as_bool(values.get("kvm_host_libvirt_tcp_allow_unauthenticated"))
    ):
        out.append(
            "kvm_host_libvirt_tcp_auth: value 'none': anyone who reaches port 16509 would"
            " control every VM on this host; keep sasl, or also set"
            " kvm_host_libvirt_tcp_allow_unauthenticated: true"
        )
    if (
        transport == "tcp"
        and tcp_auth == "sasl"
        and not values.get("kvm_host_libvirt_sasl_password")
    ):
        out.append(
            "kvm_host_libvirt_sasl_password: value hidden: is empty; the TCP migration listener"
            " authenticates with SASL and every host needs the same password (Ansible Vault or"
            " an inventory vars file)"
        )
    if transport == "tls":
        missing = [name for name in sorted(MULTILINE) if not values.get(name)]
        if missing:
            out.append(
                f"{missing[0]}: value hidden: is empty; kvm_host_migration_transport tls needs"
                " kvm_host_libvirt_tls_ca_cert, _server_cert, _server_key, _client_cert and"
                " _client_key (PEM text)"
            )
    return out


def validate(values: dict, specs: dict, apply: bool = True) -> list[str]:
    """Every problem of ``values`` (variable -> value) against ``specs`` (variable -> its
    argument_specs option), one line each. ``apply``: also what apply needs together
    (a SASL password for tcp, the certificates for tls), which check does not."""
    problems = []
    for name in sorted(specs):
        if name not in values:
            continue
        spec = specs[name]
        value = values[name]
        secret = bool(spec.get("no_log"))
        problem = type_problem(value, spec)
        if problem is None:
            problem = value_problem(name, value)
        if problem:
            problems.append(line(name, value, problem, secret))
    if apply and not problems and "kvm_host_migration_transport" in specs:
        problems.extend(_apply_problems(values))
    return problems


def warnings(values: dict) -> list[str]:
    """What the run should say about settings that are allowed but weaken the host."""
    out = []
    if values.get("kvm_host_migration_transport") == "tls" and not values.get(
        "kvm_host_libvirt_tls_allowed_dn_list"
    ):
        out.append(
            "the libvirt TLS listener accepts every client certificate the CA signed"
            " (kvm_host_libvirt_tls_allowed_dn_list is empty); list the hosts' DNs to narrow it"
        )
    return out
