"""The vocabulary of ``kvmprep check``: statuses, results, controls and what is expected."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge

# The collection's root (plugins/plugin_utils/controls/model.py, three directories up): the
# roles' defaults are read from the collection this file belongs to, wherever it is installed
# (a checkout, a wheel's site-packages, ansible-galaxy's collections path). Not through the
# kvmprep package: nothing in plugins/ imports it (the CLI depends on the collection, never the
# reverse), and an AWX job has no kvmprep package at all.
_COLLECTION_ROOT = Path(__file__).resolve().parents[3]


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # not applicable to this host; the reason says why
    ERROR = "ERROR"  # could not be evaluated; the reason says why


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


@dataclass(frozen=True)
class Result:
    """A judgement: ``message`` is the one-line hint shown next to the status; ``fix``, when
    the judge knows it, is the catalog's remediation made concrete for this host (the value
    to set), shown instead of it."""

    status: Status
    message: str = ""
    fix: str = ""

    @classmethod
    def passed(cls, message: str = "") -> Result:
        return cls(Status.PASS, message)

    @classmethod
    def warn(cls, message: str, fix: str = "") -> Result:
        return cls(Status.WARN, message, fix)

    @classmethod
    def fail(cls, message: str, fix: str = "") -> Result:
        return cls(Status.FAIL, message, fix)

    @classmethod
    def skip(cls, message: str) -> Result:
        return cls(Status.SKIP, message)

    @classmethod
    def error(cls, message: str) -> Result:
        return cls(Status.ERROR, message)


class MissingFact(LookupError):
    """A fact the judge needs was not gathered (older module, failed probe): an ERROR."""


def fact(facts: Mapping[str, Any], *path: str) -> Any:
    """``facts[a][b]...``, raising ``MissingFact`` naming the path when a level is absent."""
    node: Any = facts
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise MissingFact(".".join(path[: depth + 1]))
        node = node[key]
    return node


def _role_defaults(role: str) -> Mapping[str, Any]:
    """The role's defaults/main.yml: what apply uses for a variable the inventory leaves unset."""
    path = _COLLECTION_ROOT / "roles" / role / "defaults" / "main.yml"
    # libyaml's loader when PyYAML has it: the same data, read at every kvmprep start, in a
    # tenth of the pure-Python loader's time (about 50 ms for the two files).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}


_KVM_HOST = _role_defaults("kvm_host")
_ONE_FRONTEND = _role_defaults("one_frontend")


def _role(name: str) -> Any:
    """A field whose default is the kvm_host role's default of ``kvm_host_<name>`` (a list as
    a tuple and a dict as a read-only mapping: Expect is immutable)."""
    value = _KVM_HOST[f"kvm_host_{name}"]
    # pylint: disable=invalid-field-call
    # (a field's definition, returned to the dataclass body that assigns it: dataclasses allows
    # field() there, pylint only recognises the call written in the body itself)
    if isinstance(value, list):
        return field(default=tuple(value))
    if isinstance(value, dict):
        return field(default_factory=lambda: MappingProxyType(dict(value)))
    return field(default=value)


def _inventory(name: str, default: Any | None = None) -> Any:
    """A field read from the inventory variable ``name`` instead of ``kvm_host_<field>``; its
    default is the front-end role's, else ``default``."""
    value = _ONE_FRONTEND.get(name, default)
    return field(default=value, metadata={"var": name})  # pylint: disable=invalid-field-call


@dataclass(frozen=True)
class Expect:
    """What a compliant host looks like: the roles' defaults (read from their defaults/main.yml,
    never repeated here), overridden by inventory values. check's playbook sends every value,
    the roles' argument_specs defaults applied, templated (playbooks/audit.yml's settings task,
    plugins/action/kvm_host_settings.py); the defaults serve tests and callers that give only
    some.

    Each field ``f`` is the role variable ``kvm_host_<f>``; the last ones are the front-end
    role's variables for this host (``var_name`` says which).
    """

    oneadmin_user: str = _role("oneadmin_user")
    oneadmin_group: str = _role("oneadmin_group")
    oneadmin_uid: int = _role("oneadmin_uid")
    oneadmin_gid: int = _role("oneadmin_gid")
    oneadmin_home: str = _role("oneadmin_home")
    #: "": the distribution's (libvirt or libvirtd)
    libvirt_group: str = _role("libvirt_group")
    kvm_device_group: str = _role("kvm_device_group")
    kvm_device_mode: str = _role("kvm_device_mode")
    apparmor_datastore_path: str = _role("apparmor_datastore_path")
    migration_transport: str = _role("migration_transport")
    libvirt_layout: str = _role("libvirt_layout")
    libvirt_tcp_allow_unauthenticated: bool = _role("libvirt_tcp_allow_unauthenticated")
    #: manual: kvmprep's own sudoers file and load_opennebula_paths; package: the node package's.
    one_node_install: str = _role("one_node_install")
    #: The libvirt configuration apply writes beside the values above (LV-001..LV-005).
    libvirt_tcp_auth: str = _role("libvirt_tcp_auth")
    libvirt_listen_addr: str = _role("libvirt_listen_addr")
    libvirt_tls_allowed_dn_list: tuple[str, ...] = _role("libvirt_tls_allowed_dn_list")
    qemu_conf_extra: Mapping[str, Any] = _role("qemu_conf_extra")
    #: The OpenNebula cluster the host is in: fleet migration controls compare its hosts.
    cluster: str = _inventory("one_frontend_cluster")
    #: What apply sets as OS MACHINE: "auto" computes it from the cluster's hosts.
    vmm_machine: str = _inventory("one_frontend_vmm_machine")
    #: What apply sets as CPU_MODEL MODEL: "" leaves it alone, "auto" computes a common model.
    vmm_cpu_model: str = _inventory("one_frontend_vmm_cpu_model")
    #: The name OpenNebula knows the host by ("": its inventory name).
    one_name: str = _inventory("one_frontend_host_name")
    #: The inventory's front-end (the first host of its frontend group), "" without one.
    frontend: str = _inventory("kvmprep_frontend", "")

    @staticmethod
    def var_name(f: Any) -> str:
        """The inventory variable of a field (``dataclasses.Field``)."""
        return f.metadata.get("var") or f"kvm_host_{f.name}"

    @classmethod
    def from_vars(cls, values: Mapping[str, Any] | None) -> Expect:
        """Build from ``{"<inventory variable>": value}``; unknown keys and None are ignored."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            value = (values or {}).get(cls.var_name(f))
            if value is None:
                continue
            default = f.default if f.default is not MISSING else f.default_factory()
            if isinstance(default, bool):
                value = (
                    value
                    if isinstance(value, bool)
                    else str(value).lower() in ("1", "true", "yes", "on")
                )
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, tuple):
                value = tuple(value) if isinstance(value, (list, tuple)) else (str(value),)
            elif isinstance(default, Mapping):
                value = MappingProxyType(dict(value)) if isinstance(value, Mapping) else default
            else:
                value = str(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def settings(self) -> Any:
        """These values as the judge's Settings (module_utils/kvm_host_judge.py)."""
        values = {
            self.var_name(f): getattr(self, f.name)
            for f in fields(self)
            if not f.metadata.get("var")
        }
        return kvm_host_judge.Settings.from_vars(values)


Judge = Callable[[Mapping[str, Any], Expect], Result]


@dataclass(frozen=True)
class VmmDefaults:
    """What OpenNebula gives a VM started on a host that names neither: OS MACHINE and
    CPU_MODEL MODEL of vmm_exec_kvm.conf, or of the host's cluster or host template when they
    override it. None: unknown (check does not read the front-end yet)."""

    machine: str | None = None
    cpu_model: str | None = None
    #: Where the values were read, for the messages ("vmm_exec_kvm.conf on one1").
    source: str = ""
    #: Why oned does not give VMs these values although the file says them (it changed after
    #: oned started, or oned is not running: oned reads it at start only); "": it does, or
    #: check cannot tell (ONE-011 says why).
    not_loaded: str = ""


class Role(StrEnum):
    """What a machine of the report is: a KVM host, or the OpenNebula front-end."""

    KVM_HOST = "kvm_host"
    FRONTEND = "frontend"


@dataclass(frozen=True)
class HostFacts:
    """One evaluated machine, as a fleet judge sees it. A front-end that could not be probed
    is given too, with empty facts and ``error`` the reason (the judges that need it say so)."""

    name: str
    facts: Mapping[str, Any]
    expect: Expect
    vmm: VmmDefaults = VmmDefaults()
    role: Role = Role.KVM_HOST
    error: str | None = None


#: Judges all evaluated hosts at once; returns one result per host name.
FleetJudge = Callable[[Sequence[HostFacts]], Mapping[str, Result]]


class Scope(StrEnum):
    HOST = "host"  # judged from one host's facts
    FLEET = "fleet"  # judged across the hosts of a run, reported per host


@dataclass(frozen=True)
class Control:
    """A host control has ``judge``; a fleet control has ``fleet_judge`` instead."""

    id: str
    title: str
    severity: Severity
    rationale: str  # the seed requirement it enforces
    detection: str  # how the facts are read
    remediation: str  # the change `kvmprep apply` makes, or the manual step
    judge: Judge | None = None
    fleet_judge: FleetJudge | None = None
    #: The check option that adds the control to a report (e.g. "--smoke"); None: always.
    only_with: str | None = None
    #: The machines the control is reported for.
    applies_to: tuple[Role, ...] = (Role.KVM_HOST,)
    #: A fleet judge that also reads the front-end's facts (reported for ``applies_to`` only).
    sees_frontend: bool = False

    def __post_init__(self) -> None:
        if (self.judge is None) == (self.fleet_judge is None):
            raise ValueError(f"{self.id}: give exactly one of judge and fleet_judge")

    @property
    def scope(self) -> Scope:
        return Scope.HOST if self.judge is not None else Scope.FLEET

    def as_dict(self) -> dict[str, str]:
        data = {
            "id": self.id,
            "title": self.title,
            "severity": str(self.severity),
            "scope": str(self.scope),
            "rationale": self.rationale,
            "detection": self.detection,
            "remediation": self.remediation,
        }
        if self.only_with:
            data["only_with"] = self.only_with
        data["applies_to"] = ",".join(str(r) for r in self.applies_to)
        return data
