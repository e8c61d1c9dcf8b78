"""Live migration inside a cluster: machine types, CPU models, versions (FLEET-003..005).

Fleets are fixtures/fleets/*.json over recorded facts; the Ubuntu hosts' qemu facts are made
from their emulators' recorded outputs (fixtures/qemu/) by the probe's own parsers.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO_ROOT
from test_controls import load, load_fleet, qemu_from_outputs

from ansible_collections.kvmprep.kvm.plugins.module_utils import machine_types as mt
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.check_report import cluster_document
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import migration
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    HostReport,
    clusters_of,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import Link
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    Status,
    VmmDefaults,
)
from kvmprep.report.html import render_html

P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
MIGRATION_IDS = ("FLEET-003", "FLEET-004", "FLEET-005")
Q35 = VmmDefaults(machine="q35", source="vmm_exec_kvm.conf")


def qemu(name: str) -> dict[str, Any]:
    """The qemu facts of a host whose emulator printed fixtures/qemu/<name>.*.txt."""
    return qemu_from_outputs(name, load("debian12-converged")["qemu"])


DEBIAN12 = "debian12-qemu-7.2"
UBUNTU2404 = "ubuntu24.04-qemu-8.2"
UBUNTU2504 = "ubuntu25.04-qemu-9.2"
DEBIAN13 = "debian13-qemu-10.0"


def run(hosts: Sequence[HostInput], vmm: VmmDefaults | None = None) -> dict[str, HostReport]:
    hosts = [replace(h, vmm=vmm) for h in hosts] if vmm else hosts
    return {r.name: r for r in evaluate_fleet(hosts)}


def results(reports: dict[str, HostReport], control_id: str) -> dict[str, Any]:
    return {
        name: next(r for r in report.results if r.control.id == control_id)
        for name, report in reports.items()
    }


def statuses(reports: dict[str, HostReport]) -> dict[str, tuple[Status, ...]]:
    return {
        name: tuple(r.status for r in report.results if r.control.id in MIGRATION_IDS)
        for name, report in reports.items()
    }


# --- machine types from real emulators ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "q35", "pc"),
    [
        (DEBIAN12, ("pc-q35-7.2",), ("pc-i440fx-7.2",)),
        (UBUNTU2404, ("pc-q35-noble", "pc-q35-8.2"), ("pc-i440fx-noble", "pc-i440fx-8.2")),
        (UBUNTU2504, ("pc-q35-9.2",), ("pc-i440fx-9.2",)),
        (DEBIAN13, ("pc-q35-10.0",), ("pc-i440fx-10.0",)),
    ],
)
def test_aliases_resolve_like_the_emulator_says(name: str, q35: tuple, pc: tuple) -> None:
    machines = qemu(name)["machines"]
    assert mt.resolve(machines, "q35") == q35
    assert mt.resolve(machines, "pc") == pc
    assert mt.resolve(machines, q35[-1]) == (q35[-1],)
    assert mt.resolve(machines, "pc-q35-11.0") == ()
    assert not mt.supports(machines, "pc-q35-11.0")


def test_versioned_and_family() -> None:
    assert mt.versioned("pc-q35-10.0") == ("pc-q35", (10, 0))
    assert mt.versioned("pc-q35-4.0.1") == ("pc-q35", (4, 0, 1))
    assert mt.versioned("pc-q35-rhel9.4.0") == ("pc-q35-rhel", (9, 4, 0))
    assert mt.versioned("virt-9.2") == ("virt", (9, 2))
    assert mt.versioned("q35") is None
    assert mt.versioned("pc-q35-noble") is None
    hosts = [qemu(DEBIAN12), qemu(UBUNTU2404)]
    assert mt.family("q35", hosts) == "pc-q35"
    assert mt.family("pc", hosts) == "pc-i440fx"
    assert mt.family("pc-q35-noble-v2", hosts) == "pc-q35"
    assert mt.family("pc-i440fx-10.0") == "pc-i440fx"
    assert mt.family("microvm", hosts) is None


@pytest.mark.parametrize(
    ("names", "like", "expected"),
    [
        ([DEBIAN12, DEBIAN13], "q35", "pc-q35-7.2"),
        ([DEBIAN12, DEBIAN13], "pc", "pc-i440fx-7.2"),
        ([DEBIAN12, DEBIAN13], "pc-q35-10.0", "pc-q35-7.2"),
        ([DEBIAN12, DEBIAN13], "pc-q35", "pc-q35-7.2"),
        ([UBUNTU2404, UBUNTU2504], "q35", "pc-q35-8.2"),  # not Ubuntu's pc-q35-noble
        ([UBUNTU2404, UBUNTU2504], "pc-q35-noble", "pc-q35-8.2"),
        ([UBUNTU2504, DEBIAN13], "q35", "pc-q35-9.2"),
        ([DEBIAN12, UBUNTU2404, UBUNTU2504, DEBIAN13], "q35", "pc-q35-7.2"),
        ([DEBIAN13, DEBIAN13], "q35", "pc-q35-10.0"),
        ([DEBIAN13], "pc", "pc-i440fx-10.0"),
        ([], "q35", None),
    ],
)
def test_common_machine_type(names: list[str], like: str, expected: str | None) -> None:
    hosts = [qemu(n) for n in names]
    assert mt.common_machine_type(hosts, like) == expected
    # The front-end's filter plugin may hand over whole probe results, or machines mappings.
    assert mt.common_machine_type([{"qemu": h} for h in hosts], like) == expected
    assert mt.common_machine_type([h["machines"] for h in hosts], like) == expected


def test_common_machine_type_needs_every_host() -> None:
    unknown = {**qemu(DEBIAN13), "machines": None}
    assert mt.common_machine_type([qemu(DEBIAN12), unknown]) is None
    assert mt.common_machine_type([qemu(DEBIAN12), None]) is None  # type: ignore[list-item]


def test_machines_module_stands_alone() -> None:
    """The collection's filter plugin and kvmprep import it: standard library, no Ansible."""
    path = REPO_ROOT / "plugins" / "module_utils" / "machine_types.py"
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "re", "collections", "typing"}
    code = (
        "import sys; from kvmprep import content; content.import_collection(); "
        "import ansible_collections.kvmprep.kvm.plugins.module_utils.machine_types as m; "
        "assert not [n for n in sys.modules if n.split('.')[0] in ('ansible', 'ansible_runner')]; "
        "print(m.common_machine_type([{'types': ['pc-q35-7.2']}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pc-q35-7.2"


# --- FLEET-003: QEMU 7.2 + 10.0, the failure this was written for ---------------------------


def test_debian12_and_13_with_q35_fail_both_ways_round() -> None:
    reports = run(load_fleet("qemu-7.2-10.0"), Q35)
    got = results(reports, "FLEET-003")
    assert got["kvm12"].status is F
    assert got["kvm12"].message.startswith(
        "lacks pc-q35-10.0, which VMs started on kvm13 get (OS MACHINE q35): they cannot "
        "migrate here"
    )
    assert got["kvm13"].status is F
    assert got["kvm13"].message.startswith(
        "VMs started here get pc-q35-10.0 (OS MACHINE q35), which kvm12 lacks: they cannot "
        "migrate there"
    )
    for result in got.values():
        assert (
            "newest machine types every host of cluster default runs: pc-i440fx-7.2, "
            "pc-q35-7.2" in result.message
        )
        assert result.fix.startswith(
            "kvmprep apply with the front-end role sets OS MACHINE in vmm_exec_kvm.conf to "
            "pc-q35-7.2 for cluster default (one_frontend_vmm_machine: auto)"
        )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.verdict is Link.BLOCKED
    assert cluster.cell("kvm12", "kvm13").link is Link.OK
    blocked = cluster.cell("kvm13", "kvm12")
    assert blocked.link is Link.BLOCKED
    assert blocked.reasons == ("machine type pc-q35-10.0 missing on kvm12",)
    assert cluster.summary() == (
        "cluster default (2 hosts): 1 of 2 directions blocked: kvm13 -> kvm12 (machine type "
        "pc-q35-10.0 missing on kvm12); set OS MACHINE = pc-q35-7.2"
    )
    assert cluster.target_machine == "pc-q35-7.2"


def test_unknown_os_machine_is_each_hosts_emulator_default() -> None:
    """check does not read the front-end yet: VMs without OS MACHINE get the emulator's
    default, pc-i440fx-10.0 on Debian 13; the q35 value to set is named too."""
    reports = run(load_fleet("qemu-7.2-10.0"))
    got = results(reports, "FLEET-003")
    assert {r.status for r in got.values()} == {F}
    assert (
        "lacks pc-i440fx-10.0, which VMs started on kvm13 get (the emulator's default; "
        "check does not know OS MACHINE)" in got["kvm12"].message
    )
    assert "pc-q35-7.2" in got["kvm12"].message
    assert "to pc-i440fx-7.2 for cluster default" in got["kvm12"].fix
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.machine_basis.startswith("OS MACHINE not known to check")
    assert dict(cluster.common_machines) == {
        "pc-i440fx": "pc-i440fx-7.2",
        "pc-q35": "pc-q35-7.2",
    }


def test_the_computed_machine_type_passes() -> None:
    """After apply: OS MACHINE = the value FLEET-003 named, every direction works."""
    reports = run(load_fleet("qemu-7.2-10.0"), VmmDefaults(machine="pc-q35-7.2"))
    assert statuses(reports) == {"kvm12": (P, P, P), "kvm13": (P, P, P)}
    got = results(reports, "FLEET-003")
    assert got["kvm13"].message == (
        "VMs started here get pc-q35-7.2 (OS MACHINE); all 2 hosts of cluster default run "
        "what the VMs of the others get"
    )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.verdict is Link.OK
    assert cluster.summary() == (
        "cluster default (2 hosts): live migration possible in all 2 directions"
    )


def test_an_os_machine_the_old_host_does_not_run() -> None:
    reports = run(load_fleet("qemu-7.2-10.0"), VmmDefaults(machine="pc-q35-10.0"))
    got = results(reports, "FLEET-003")
    assert got["kvm12"].message.startswith(
        "QEMU 7.2.22 here does not run pc-q35-10.0 (OS MACHINE pc-q35-10.0): VMs cannot start here"
    )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("kvm12", "kvm13").link is Link.BLOCKED
    assert cluster.cell("kvm12", "kvm13").reasons == ("machine type pc-q35-10.0 not run by kvm12",)


UNREAD = "vmm_exec_kvm.conf changed at 2026-01-01 10:00:41 UTC, after oned started at 09:55:41"


def test_a_fitting_os_machine_oned_has_not_read_fails() -> None:
    """The file names what every host runs, but oned gives VMs what it read at start."""
    vmm = VmmDefaults(machine="pc-q35-7.2", source="vmm_exec_kvm.conf on fe", not_loaded=UNREAD)
    reports = run(load_fleet("qemu-7.2-10.0"), vmm)
    got = results(reports, "FLEET-003")
    for name in ("kvm12", "kvm13"):
        assert got[name].status is F
        assert got[name].message == (
            "vmm_exec_kvm.conf on fe says OS MACHINE pc-q35-7.2, but that is not what oned uses "
            f"until it is restarted ({UNREAD}): VMs get what it read at start"
        )
        assert got[name].remediation == "restart OpenNebula (systemctl restart opennebula)"
    (cluster,) = clusters_of(list(reports.values()))
    assert UNREAD in cluster.machine_basis


def test_an_unfit_os_machine_oned_has_not_read_names_both() -> None:
    vmm = VmmDefaults(machine="pc-q35-10.0", source="vmm_exec_kvm.conf on fe", not_loaded=UNREAD)
    got = results(run(load_fleet("qemu-7.2-10.0"), vmm), "FLEET-003")
    assert got["kvm12"].status is F
    assert got["kvm12"].message.startswith("QEMU 7.2.22 here does not run pc-q35-10.0")
    assert f"until it is restarted ({UNREAD})" in got["kvm12"].message
    assert got["kvm12"].remediation.startswith("kvmprep apply with the front-end role sets")
    assert got["kvm12"].remediation.endswith(
        "; then restart OpenNebula (systemctl restart opennebula)"
    )


def test_a_pinned_value_that_does_not_run_everywhere_is_named_in_the_fix() -> None:
    hosts = [
        replace(h, expect=Expect(vmm_machine="pc-q35-10.0"), vmm=Q35)
        for h in load_fleet("qemu-7.2-10.0")
    ]
    got = results(run(hosts), "FLEET-003")
    assert got["kvm12"].fix.startswith(
        "one_frontend_vmm_machine = pc-q35-10.0, but kvm12 does not run it: set it to "
        "pc-q35-7.2 (or auto)"
    )
    good = [replace(h, expect=Expect(vmm_machine="pc-q35-7.0")) for h in hosts]
    assert "to pc-q35-7.0 for cluster default (one_frontend_vmm_machine: pc-q35-7.0)" in (
        results(run(good), "FLEET-003")["kvm13"].fix
    )


# --- FLEET-003: QEMU 8.2 + 9.2, Ubuntu's own machine types ----------------------------------


def test_ubuntu_8_2_and_9_2() -> None:
    reports = run(load_fleet("qemu-8.2-9.2"), Q35)
    got = results(reports, "FLEET-003")
    # q35 on 24.04 is pc-q35-noble or pc-q35-8.2: 25.04 runs both, so that way works.
    assert got["u2404"].status is F
    assert got["u2404"].message.startswith("lacks pc-q35-9.2, which VMs started on u2504 get")
    assert got["u2504"].message.startswith("VMs started here get pc-q35-9.2 (OS MACHINE q35)")
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("u2404", "u2504").link is Link.OK
    assert cluster.cell("u2504", "u2404").link is Link.BLOCKED
    assert cluster.target_machine == "pc-q35-8.2"
    versions = results(reports, "FLEET-005")["u2404"]
    assert versions.status is P
    assert "QEMU 8.2.2 (u2404), 9.2.1 (u2504)" in versions.message


def test_ubuntu_default_machine_types_exist_on_ubuntu_only() -> None:
    """Without OS MACHINE, 24.04 gives its own pc-i440fx-noble-v2, which 25.04 lacks."""
    reports = run(load_fleet("qemu-8.2-9.2"))
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("u2404", "u2504").reasons == (
        "machine type pc-i440fx-noble-v2 missing on u2504",
    )
    assert cluster.cell("u2504", "u2404").reasons == (
        "machine type pc-i440fx-plucky missing on u2404",
    )
    assert cluster.target_machine == "pc-i440fx-8.2"  # released types only


# --- identical hosts, missing facts, several clusters ----------------------------------------


def test_identical_hosts() -> None:
    for vmm in (None, Q35, VmmDefaults(machine="pc", cpu_model="host-passthrough")):
        reports = run(load_fleet("identical"), vmm)
        assert set(statuses(reports).values()) == {(P, P, P)}
        (cluster,) = clusters_of(list(reports.values()))
        assert cluster.verdict is Link.OK
        assert len(cluster.cells) == 6
    versions = results(reports, "FLEET-005")["kvm13a"].message
    assert versions == (
        "QEMU 10.0.13, libvirt 11.3.0 here; cluster default: QEMU 10.0.13 on all 3 hosts; "
        "libvirt 11.3.0 on all 3 hosts"
    )


def test_hosts_whose_facts_are_missing() -> None:
    hosts = [*load_fleet("facts-missing"), HostInput("gone", None, error="unreachable: timeout")]
    reports = run(hosts, Q35)
    assert statuses(reports) == {
        "kvm13": (P, P, P),
        "old-probe": (E, E, E),  # a probe older than the qemu group
        "no-qemu": (S, P, P),  # no machine type to judge; the same CPU as kvm13
        "gone": (E, E, E),
    }
    got = results(reports, "FLEET-003")
    assert got["old-probe"].message == "fact qemu was not gathered"
    assert got["no-qemu"].message.startswith("no QEMU emulator (no QEMU emulator: ")
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.hosts == ("kvm13", "old-probe", "no-qemu")  # "gone": its cluster is unknown
    assert reports["gone"].cluster is None
    assert cluster.verdict is Link.UNKNOWN
    assert cluster.cell("kvm13", "old-probe").reasons == (
        "machine types of old-probe unknown",
        "CPU unknown",
    )


def test_two_clusters_in_one_inventory() -> None:
    reports = run(load_fleet("two-clusters"), Q35)
    assert statuses(reports) == {
        "s1": (P, P, P),
        "s2": (P, P, P),
        "m12": (F, P, P),
        "m13": (F, P, P),
    }
    clusters = clusters_of(list(reports.values()))
    assert [(c.name, c.hosts, c.verdict) for c in clusters] == [
        ("mixed", ("m12", "m13"), Link.BLOCKED),
        ("stable", ("s1", "s2"), Link.OK),
    ]
    assert reports["s1"].cluster is clusters[1]
    assert (
        "cluster stable: QEMU 7.2.22 on all 2 hosts" in results(reports, "FLEET-005")["s1"].message
    )


# --- FLEET-004: CPU models -------------------------------------------------------------------


def _cpu_fleet(usable_b: list[str] | None = None) -> list[HostInput]:
    """kvm12 as recorded; kvm13 with another CPU (an Intel Xeon), usable models usable_b."""
    a, b = load("debian12-converged"), load("debian13-converged")
    b["qemu"]["cpu"].update(
        vendor="GenuineIntel",
        model_name="Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
        family="6",
        model="85",
        stepping="7",
        flags=sorted({*b["qemu"]["cpu"]["flags"], "avx512f", "avx512bw"}),
    )
    a["qemu"]["cpu"]["models"]["usable"] = ["Westmere", "pentium3", "Nehalem-IBRS", "Nehalem"]
    b["qemu"]["cpu"]["models"]["usable"] = usable_b
    return [HostInput("kvm12", a, Expect()), HostInput("kvm13", b, Expect())]


def test_different_cpus_warn_and_name_a_common_model() -> None:
    reports = run(_cpu_fleet(["Skylake-Server", "Nehalem", "Nehalem-IBRS", "Westmere"]))
    got = results(reports, "FLEET-004")
    assert got["kvm12"].status is W
    assert got["kvm12"].message == (
        "AMD EPYC here, Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz on kvm13 (kvm13 has "
        "avx512bw, avx512f that this CPU lacks): VMs with host-passthrough (CPU_MODEL not known "
        "to check) cannot move between different CPUs; a CPU model every host of cluster "
        "default runs: Westmere"
    )
    assert got["kvm12"].fix == (
        "set one_frontend_vmm_cpu_model: auto (or Westmere); kvmprep apply with the front-end "
        'role then sets CPU_MODEL = [ MODEL = "Westmere" ] in vmm_exec_kvm.conf for cluster '
        "default"
    )
    pinned = [replace(h, expect=Expect(vmm_cpu_model="Nehalem")) for h in _cpu_fleet(["Nehalem"])]
    assert results(run(pinned), "FLEET-004")["kvm13"].fix == (
        'kvmprep apply with the front-end role sets CPU_MODEL = [ MODEL = "Nehalem" ] in '
        "vmm_exec_kvm.conf for cluster default (one_frontend_vmm_cpu_model)"
    )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("kvm12", "kvm13").link is Link.AT_RISK
    assert cluster.cell("kvm12", "kvm13").reasons == ("different CPU (host-passthrough)",)
    assert cluster.common_cpu_model == "Westmere"


def test_a_named_cpu_model_must_be_usable_everywhere() -> None:
    hosts = _cpu_fleet(["Skylake-Server", "Westmere"])
    reports = run(hosts, VmmDefaults(machine="pc-q35-7.2", cpu_model="Nehalem"))
    got = results(reports, "FLEET-004")
    assert got["kvm12"].status is P
    assert got["kvm13"].status is F
    assert got["kvm13"].message.startswith("CPU model Nehalem (CPU_MODEL) is not usable on Intel")
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("kvm12", "kvm13").link is Link.BLOCKED
    assert cluster.cell("kvm13", "kvm12").link is Link.OK
    unknown = run(_cpu_fleet(None), VmmDefaults(cpu_model="Nehalem"))
    assert results(unknown, "FLEET-004")["kvm13"].status is E
    both = run(hosts, VmmDefaults(machine="pc-q35-7.2", cpu_model="Westmere"))
    assert {r.status for r in results(both, "FLEET-004").values()} == {P}


def test_common_cpu_model_prefers_the_newest_generation() -> None:
    def member(usable: list[str] | None) -> migration.Member:
        qemu = {"cpu": {"models": {"usable": usable}}}
        return migration.Member("h", qemu, VmmDefaults(), Expect())

    lab = ["486", "486-v1", "pentium", "pentium-v1", "pentium2", "pentium3", "pentium3-v1"]
    assert migration.common_cpu_model([member(lab), member(lab)]) == "pentium3"
    intel = ["Skylake-Client-v1", "Skylake-Client-IBRS", "Skylake-Client", "Haswell", "qemu64"]
    assert migration.common_cpu_model([member(intel)]) == "Skylake-Client-IBRS"
    amd = ["EPYC", "EPYC-Rome", "EPYC-Rome-v4", "Opteron_G5"]
    assert migration.common_cpu_model([member(amd)]) == "EPYC-Rome"
    assert migration.common_cpu_model([member(amd), member(intel)]) is None
    assert migration.common_cpu_model([member(amd), member(None)]) is None


# --- the analysis is per cluster, and cheap to redo ------------------------------------------


def test_by_cluster_groups_on_the_inventory_variable() -> None:
    facts = load("debian12-converged")
    hosts = [
        HostFacts("b1", facts, Expect(cluster="b")),
        HostFacts("a1", facts, Expect(cluster="a")),
        HostFacts("b2", facts, Expect(cluster="b")),
        HostFacts("d", facts, Expect()),
    ]
    groups = migration.by_cluster(hosts)
    assert {k: [h.name for h in v] for k, v in groups.items()} == {
        "a": ["a1"],
        "b": ["b1", "b2"],
        "default": ["d"],
    }


def test_a_large_cluster_is_judged_quickly() -> None:
    import time

    facts = [load("debian12-converged"), load("debian13-converged")]
    hosts = [HostInput(f"h{i:03}", facts[i % 2], Expect()) for i in range(60)]
    start = time.monotonic()
    reports = evaluate_fleet(hosts)
    assert time.monotonic() - start < 10
    (cluster,) = clusters_of(reports)
    assert len(cluster.cells) == 60 * 59


def test_fixture_files_are_real_outputs() -> None:
    """Guard the provenance: the fixture texts are what the emulators printed."""
    for path in sorted((FIXTURES / "qemu").glob("*.version.txt")):
        assert path.read_text().startswith("QEMU emulator version "), path.name
    for path in sorted((FIXTURES / "qemu").glob("*.machine-help.txt")):
        assert path.read_text().startswith("Supported machines are:\n"), path.name
    assert Path(FIXTURES / "qemu" / "README.md").exists()


# --- FLEET-003: the VMs already running keep their machine type ------------------------------

PINNED = VmmDefaults(machine="pc-q35-7.2", source="vmm_exec_kvm.conf")


def _with_vms(fleet: str, **running: list[dict[str, Any]]) -> list[HostInput]:
    """The hosts of a fleet fixture, with the given running domains (probe ``domains``)."""
    hosts = load_fleet(fleet)
    for host in hosts:
        if host.name in running:
            host.facts["domains"] = {
                "path": "/run/libvirt/qemu",
                "exists": True,
                "error": None,
                "running": running[host.name],
            }
    return hosts


def _domain(name: str, machine: str | None, error: str | None = None) -> dict[str, Any]:
    vm_id = int(name[4:]) if name.startswith("one-") else None
    return {"file": f"{name}.xml", "name": name, "vm_id": vm_id, "machine": machine,
            "state": "running" if machine else None, "pid": 2113, "error": error}  # fmt: skip


def test_a_vm_still_running_the_new_machine_type_warns_on_both_hosts() -> None:
    """OS MACHINE now says pc-q35-7.2 (FLEET-003 would pass), but VM 12 and the libvirt
    domain 'debug' started on the Debian 13 host before that: they cannot go to Debian 12."""
    reports = run(load_fleet("running-vms"), PINNED)
    got = results(reports, "FLEET-003")
    assert got["kvm13"].status is W
    assert got["kvm13"].message.startswith(
        "running domain debug (pc-i440fx-10.0) cannot live-migrate to kvm12, whose QEMU lacks "
        "pc-i440fx-10.0; running VM 12 (pc-q35-10.0) cannot live-migrate to kvm12, whose QEMU "
        "lacks pc-q35-10.0; VMs started here get pc-q35-7.2 (OS MACHINE)"
    )
    assert "VM 15" not in got["kvm13"].message  # started since, on pc-q35-7.2
    assert got["kvm12"].status is W
    assert "lacks pc-q35-10.0, which VM 12 running on kvm13 has: it cannot migrate here" in (
        got["kvm12"].message
    )
    for name in ("kvm12", "kvm13"):
        fix = got[name].fix
        assert fix.startswith(
            "a running VM keeps its machine type until it is powered off and started again: "
            "once OS MACHINE is pc-q35-7.2 (kvmprep apply with the front-end role sets it"
        )
        assert "VM 12 (onevm poweroff, then onevm resume)" in fix
        assert "domain debug (not OpenNebula's: virsh shutdown, virsh start)" in fix
        assert fix.endswith("or upgrade QEMU on kvm12")
    # The other cluster's Debian 13 host runs a pc-q35-10.0 VM too: kvm12 is not its cluster.
    assert got["lab13"].status is P
    assert "VM 40" not in got["kvm12"].message
    prod = reports["kvm12"].cluster
    assert prod is not None
    assert prod.verdict is Link.AT_RISK
    assert prod.cell("kvm12", "kvm13").link is Link.OK  # VM 3 runs pc-q35-7.2
    assert prod.cell("kvm13", "kvm12").reasons == (
        "running domain debug has pc-i440fx-10.0, missing on kvm12",
        "running VM 12 has pc-q35-10.0, missing on kvm12",
    )
    assert prod.summary() == (
        "cluster prod (2 hosts): 1 of 2 directions at risk: kvm13 -> kvm12 (running domain "
        "debug has pc-i440fx-10.0, missing on kvm12, running VM 12 has pc-q35-10.0, missing "
        "on kvm12)"
    )
    assert [(vm.label, vm.host, vm.cannot_go_to) for vm in prod.stuck_vms] == [
        ("domain debug", "kvm13", ("kvm12",)),
        ("VM 12", "kvm13", ("kvm12",)),
    ]
    assert len(prod.running_vms) == 4
    lab = reports["lab13"].cluster
    assert lab is not None
    assert lab.stuck_vms == ()
    assert lab.verdict is Link.OK


def test_vms_on_a_type_every_host_runs_pass() -> None:
    hosts = _with_vms(
        "qemu-7.2-10.0",
        kvm12=[_domain("one-3", "pc-q35-7.2")],
        kvm13=[_domain("one-15", "pc-q35-7.2"), _domain("one-16", "pc-i440fx-7.2")],
    )
    reports = run(hosts, PINNED)
    assert statuses(reports) == {"kvm12": (P, P, P), "kvm13": (P, P, P)}
    got = results(reports, "FLEET-003")
    assert got["kvm13"].message.endswith(
        "run what the VMs of the others get; 2 VMs run here, on machine types every host runs"
    )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.summary() == (
        "cluster default (2 hosts): live migration possible in all 2 directions"
    )


def test_a_running_vm_is_named_when_the_default_fails_too() -> None:
    """OS MACHINE q35: FAIL for the VMs to come; the running VM is named with them."""
    hosts = _with_vms("qemu-7.2-10.0", kvm13=[_domain("one-12", "pc-q35-10.0")])
    reports = run(hosts, Q35)
    got = results(reports, "FLEET-003")
    assert got["kvm13"].status is F
    assert got["kvm13"].message.endswith(
        "; running VM 12 (pc-q35-10.0) cannot live-migrate to kvm12, whose QEMU lacks pc-q35-10.0"
    )
    assert got["kvm13"].fix.startswith("kvmprep apply with the front-end role sets OS MACHINE")
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.cell("kvm13", "kvm12").link is Link.BLOCKED
    assert cluster.cell("kvm13", "kvm12").reasons == (
        "machine type pc-q35-10.0 missing on kvm12",
        "running VM 12 has pc-q35-10.0, missing on kvm12",
    )


def test_a_stuck_vm_is_named_in_the_summary_behind_a_worse_direction() -> None:
    """A named CPU model the Debian 13 host cannot use blocks kvm12 -> kvm13, the direction
    the summary shows; VM 12 (kvm13 -> kvm12, at risk) is still named."""
    hosts = _with_vms("qemu-7.2-10.0", kvm13=[_domain("one-12", "pc-q35-10.0")])
    usable = hosts[1].facts["qemu"]["cpu"]["models"]["usable"]
    model = usable.pop()
    reports = run(hosts, replace(PINNED, cpu_model=model))
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.verdict is Link.BLOCKED
    assert cluster.cell("kvm13", "kvm12").link is Link.AT_RISK
    assert cluster.summary() == (
        "cluster default (2 hosts): 1 of 2 directions blocked: kvm12 -> kvm13 (CPU model "
        f"{model} not usable on kvm13); running VMs that cannot move: VM 12 on kvm13 "
        "(pc-q35-10.0, not to kvm12)"
    )


def test_running_vms_that_cannot_be_read_are_said() -> None:
    hosts = _with_vms(
        "qemu-7.2-10.0",
        kvm13=[_domain("one-12", None, "not well-formed XML: no element found: line 1")],
    )
    hosts[0].facts["domains"]["error"] = "Permission denied"
    reports = run(hosts, PINNED)
    got = results(reports, "FLEET-003")
    assert got["kvm12"].status is P
    assert got["kvm12"].message.endswith(
        "; running VMs here not all known (/run/libvirt/qemu: Permission denied)"
    )
    assert got["kvm13"].message.endswith(
        "; running VMs here not all known (one-12.xml: not well-formed XML: no element found: "
        "line 1)"
    )
    (cluster,) = clusters_of(list(reports.values()))
    assert cluster.summary() == (
        "cluster default (2 hosts): live migration possible in all 2 directions (running VMs "
        "not read on kvm12, kvm13)"
    )


def test_a_probe_without_the_domains_group_judges_the_default_alone() -> None:
    hosts = load_fleet("qemu-7.2-10.0")
    for host in hosts:
        del host.facts["domains"]
    got = results(run(hosts, PINNED), "FLEET-003")
    assert {r.status for r in got.values()} == {P}
    assert got["kvm12"].message.endswith(
        "; running VMs here not all known (probe without the domains group)"
    )


def test_running_vms_in_the_reports() -> None:

    reports = run(load_fleet("running-vms"), PINNED)
    prod = reports["kvm13"].cluster
    assert prod is not None
    doc = cluster_document(prod)["running_vms"]
    assert doc["count"] == 4
    assert doc["not_read"] == {}
    assert doc["cannot_move"][1] == {
        "host": "kvm13",
        "domain": "one-12",
        "vm_id": 12,
        "machine": "pc-q35-10.0",
        "cannot_go_to": ["kvm12"],
    }
    out = io.StringIO()
    render_html(list(reports.values()), out)
    assert "cannot move: domain debug on kvm13 (pc-i440fx-10.0, not to kvm12); VM 12 on kvm13" in (
        out.getvalue()
    )
