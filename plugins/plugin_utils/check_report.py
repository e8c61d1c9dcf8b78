"""The machine-readable report of check: a stable contract, written by ``kvmprep check --format
json`` and by the action plugin kvmprep.kvm.check (``ansible-playbook kvmprep.kvm.check``) with
this one code, so the two give the same bytes for the same hosts (``dumps``).

Schema ``kvmprep.check/1`` (a new major number only for an incompatible change; fields may
be added within a version)::

    {
      "schema": "kvmprep.check/1",
      "kvmprep_version": "0.1.0",
      "strict": false,                 # --strict: WARN counts as non-compliant
      "exit_status": 2,                # the process exit status (see kvmprep --help)
      "hosts": {
        "<inventory hostname>": {
          "verdict": "compliant" | "non-compliant" | "not evaluated",
          "error": null | "<why the host could not be evaluated (unreachable, probe failed)>",
          "cluster": null | "<its OpenNebula cluster (one_frontend_cluster), a key of clusters>",
          "counts": {"PASS": 11, "WARN": 1, "FAIL": 1, "SKIP": 2, "ERROR": 0},
          "controls": {
            "<control id>": {
              "status": "PASS" | "WARN" | "FAIL" | "SKIP" | "ERROR",
              "message": "<one-line hint: the observed value or the reason>",
              "title": "...", "severity": "critical" | "high" | "medium" | "low" | "info",
              "remediation": "<the change kvmprep apply makes, or the manual step; with the
                              value to set when the control knows it (FLEET-003: the
                              machine type)>"
            }
          }
        }
      },
      "summary": {
        "hosts": 2,
        "compliant": ["<host>", ...], "non_compliant": [...], "not_evaluated": [...],
        "counts": {"PASS": 22, "WARN": 2, "FAIL": 2, "SKIP": 4, "ERROR": 0}
      },
      "clusters": {                    # live migration inside each OpenNebula cluster
        "<cluster>": {
          "hosts": ["<host>", ...],
          "verdict": "ok" | "at risk" | "blocked" | "unknown",   # the worst direction
          "summary": "<the terminal's one-line verdict>",
          "machine_type": {
            "basis": "<what VMs get: OS MACHINE, or each host's emulator default>",
            "target": null | "<the OS MACHINE to set, e.g. pc-q35-7.2>",
            "newest_common": {"pc-q35": "pc-q35-7.2", "pc-i440fx": "pc-i440fx-7.2"}
          },
          "cpu_model": {"basis": "...", "newest_common": null | "<named CPU model>"},
          "versions": {"<host>": {"qemu": "7.2.22", "libvirt": "9.0.0"}},
          "migration": {                 # VMs started on <source> moving to <destination>
            "<source>": {"<destination>": {"link": "ok" | "at risk" | "blocked" | "unknown",
                                          "reasons": ["machine type pc-q35-10.0 missing on
                                                       <destination>", ...]}}
          },
          "running_vms": {               # the VMs already running keep their machine type
            "count": 3,                  # those whose machine type was read
            "cannot_move": [{"host": "<host>", "domain": "one-12", "vm_id": 12 | null,
                             "machine": "pc-q35-10.0", "cannot_go_to": ["<host>", ...]}],
            "not_read": {"<host>": "<why its running VMs are not (all) known>"}
          }
        }
      }
    }

Hosts and controls keep the order of the run (hosts sorted by name, controls in catalog
order). Every registered control appears for every host: an unreachable host has every
control with status ERROR and the reason as message. The smoke controls appear only when
requested: SMOKE-001 with ``check --smoke``, SMOKE-001 and SMOKE-002 with ``--migrate``;
without those options a report has no SMOKE-* key. ``kvmprep controls --format json``
gives the catalog (rationale, detection, remediation) for the control ids.

``clusters`` and each host's ``cluster`` were added within version 1: a host that could not
be evaluated belongs to no cluster (its inventory variables come back with its facts), and
``clusters`` is empty when no host gathered the qemu facts. A cluster's ``running_vms`` was
added within version 1 too (kvm_host_probe's ``domains`` group).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostReport,
    Verdict,
    clusters_of,
    host_verdict,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import (
    ClusterMigration,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Status

SCHEMA = "kvmprep.check/1"
# The collection's root (plugins/plugin_utils/check_report.py, two directories up).
_COLLECTION_ROOT = Path(__file__).resolve().parents[2]


def _counts(reports: Sequence[HostReport]) -> dict[str, int]:
    return {str(s): sum(r.count(s) for r in reports) for s in Status}


def document(
    reports: Sequence[HostReport], *, version: str, strict: bool = False, exit_status: int = 0
) -> dict[str, Any]:
    """The report as data; ``version`` is ``kvmprep_version``: the kvmprep package's for the
    CLI, the collection's for the action plugin (the same release: a test compares them)."""
    verdicts = {r.name: host_verdict(r, strict=strict) for r in reports}
    hosts = {
        report.name: {
            "verdict": verdicts[report.name],
            "role": str(report.role),
            "error": report.error,
            "cluster": report.cluster.name if report.cluster else None,
            "counts": _counts([report]),
            "controls": {
                r.control.id: {
                    "status": str(r.status),
                    "message": r.message,
                    "title": r.control.title,
                    "severity": str(r.control.severity),
                    "remediation": r.remediation,
                }
                for r in report.results
            },
        }
        for report in reports
    }

    def named(verdict: str) -> list[str]:
        return [name for name, v in verdicts.items() if v == verdict]

    return {
        "schema": SCHEMA,
        "kvmprep_version": version,
        "strict": strict,
        "exit_status": int(exit_status),
        "hosts": hosts,
        "summary": {
            "hosts": len(reports),
            "compliant": named(Verdict.COMPLIANT),
            "non_compliant": named(Verdict.NON_COMPLIANT),
            "not_evaluated": named(Verdict.NOT_EVALUATED),
            "counts": _counts(reports),
        },
        "clusters": {c.name: cluster_document(c) for c in clusters_of(reports)},
    }


def cluster_document(cluster: ClusterMigration) -> dict[str, Any]:
    migration: dict[str, dict[str, Any]] = {host: {} for host in cluster.hosts}
    for cell in cluster.cells:
        migration[cell.source][cell.destination] = {
            "link": str(cell.link),
            "reasons": list(cell.reasons),
        }
    return {
        "hosts": list(cluster.hosts),
        "verdict": str(cluster.verdict),
        "summary": cluster.summary(),
        "machine_type": {
            "basis": cluster.machine_basis,
            "target": cluster.target_machine,
            "newest_common": dict(cluster.common_machines),
        },
        "cpu_model": {"basis": cluster.cpu_basis, "newest_common": cluster.common_cpu_model},
        "versions": {h: {"qemu": q, "libvirt": lv} for h, q, lv in cluster.versions},
        "migration": migration,
        "running_vms": {
            "count": len(cluster.running_vms),
            "cannot_move": [
                {
                    "host": vm.host,
                    "domain": vm.domain,
                    "vm_id": vm.vm_id,
                    "machine": vm.machine,
                    "cannot_go_to": list(vm.cannot_go_to),
                }
                for vm in cluster.stuck_vms
            ],
            "not_read": dict(cluster.vms_not_read),
        },
    }


def dumps(doc: dict[str, Any]) -> str:
    """The report's bytes (as text): the one serialisation of both writers."""
    return json.dumps(doc, indent=2) + "\n"


def collection_version() -> str:
    """This collection's version: MANIFEST.json where ansible-galaxy installed it, else
    galaxy.yml (a source checkout, or the copy a kvmprep wheel ships)."""
    manifest = _COLLECTION_ROOT / "MANIFEST.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text(encoding="utf-8"))["collection_info"]
        return str(info["version"])
    galaxy = yaml.safe_load((_COLLECTION_ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    return str(galaxy["version"])


def host_failures(reports: Sequence[HostReport], *, strict: bool = False) -> dict[str, str]:
    """Report name -> why the machine is not compliant (its failing controls, or why it was not
    evaluated), for every machine that is not: what the playbook fails each host with."""
    failing = (Status.FAIL, Status.WARN) if strict else (Status.FAIL,)
    found = {}
    for report in reports:
        verdict = host_verdict(report, strict=strict)
        if verdict == Verdict.COMPLIANT:
            continue
        if verdict == Verdict.NOT_EVALUATED and report.error:
            found[report.name] = f"{verdict}: {report.error}"
            continue
        wanted = failing if verdict == Verdict.NON_COMPLIANT else (Status.ERROR,)
        controls = "; ".join(
            f"{r.control.id} {r.status} ({r.message})"
            if r.message
            else f"{r.control.id} {r.status}"
            for r in report.results
            if r.status in wanted
        )
        found[report.name] = f"{verdict}: {controls}"
    return found
