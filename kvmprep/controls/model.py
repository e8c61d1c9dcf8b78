"""The vocabulary of ``kvmprep check``: statuses, results, controls and what is expected."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


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
    """A judgement: ``message`` is the one-line hint shown next to the status."""

    status: Status
    message: str = ""

    @classmethod
    def passed(cls, message: str = "") -> Result:
        return cls(Status.PASS, message)

    @classmethod
    def warn(cls, message: str) -> Result:
        return cls(Status.WARN, message)

    @classmethod
    def fail(cls, message: str) -> Result:
        return cls(Status.FAIL, message)

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


@dataclass(frozen=True)
class Expect:
    """What a compliant host looks like: the role's defaults, overridden by inventory values.

    Each field ``f`` is the role variable ``kvm_host_<f>`` (defaults/main.yml; a unit test
    keeps the two in step), so ``check`` judges against what ``apply`` would converge to.
    """

    oneadmin_user: str = "oneadmin"
    oneadmin_group: str = "oneadmin"
    oneadmin_uid: int = 9869
    oneadmin_gid: int = 9869
    oneadmin_home: str = "/var/lib/one"
    libvirt_group: str = ""  # empty: the distribution's (libvirt or libvirtd)
    kvm_device_group: str = "kvm"
    kvm_device_mode: str = "0660"
    apparmor_datastore_path: str = "/var/lib/one"
    migration_transport: str = "tcp"
    libvirt_tcp_allow_unauthenticated: bool = False

    @classmethod
    def from_vars(cls, values: Mapping[str, Any] | None) -> Expect:
        """Build from ``{"kvm_host_<field>": value}``; unknown keys and None are ignored."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            value = (values or {}).get(f"kvm_host_{f.name}")
            if value is None:
                continue
            default = getattr(cls, f.name)
            if isinstance(default, bool):
                value = (
                    value
                    if isinstance(value, bool)
                    else str(value).lower() in ("1", "true", "yes", "on")
                )
            elif isinstance(default, int):
                value = int(value)
            else:
                value = str(value)
            kwargs[f.name] = value
        return cls(**kwargs)


Judge = Callable[[Mapping[str, Any], Expect], Result]


@dataclass(frozen=True)
class HostFacts:
    """One evaluated host, as a fleet judge sees it."""

    name: str
    facts: Mapping[str, Any]
    expect: Expect


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
        return data
