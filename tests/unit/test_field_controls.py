"""ONE-009, ONE-010, FLEET-006, FLEET-007, SYS-001 (issue 19): each on the converged facts
fixtures, then on a drift made from them for each failure it must name."""

from __future__ import annotations

import copy
from typing import Any

from test_controls import load
from test_opennebula import FRONTEND, fleet, node

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import drivers, system
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    Result,
    Role,
    Status,
)

P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
SUDOERS = "/etc/sudoers.d/kvmprep-oneadmin"


def converged() -> dict[str, Any]:
    return load("debian12-converged")


def rule(command: str, *, exists: bool, elsewhere: str | None = None) -> dict[str, Any]:
    return {
        "file": "/etc/sudoers.d/opennebula",
        "alias": "ONE_NET",
        "command": command,
        "exists": exists,
        "elsewhere": elsewhere,
    }


# --- ONE-009 ---------------------------------------------------------------------------------


def test_one_009_converged_passes_and_names_the_absent_optional_tools() -> None:
    result = drivers.sudo_rules(converged(), Expect())
    assert result.status is P
    assert SUDOERS in result.message
    assert "without a password" in result.message
    # ebtables, ipset, Open vSwitch and LVM are not installed on the lab's hosts: noted only.
    assert "/usr/sbin/ebtables" in result.message


def test_one_009_a_moved_command_fails_naming_where_it_is() -> None:
    facts = converged()
    facts["one"]["runtime"]["sudo"]["commands"].append(
        rule("/sbin/ipset", exists=False, elsewhere="/usr/sbin/ipset")
    )
    result = drivers.sudo_rules(facts, Expect())
    assert result.status is F
    assert "/sbin/ipset (ONE_NET in /etc/sudoers.d/opennebula) does not exist" in result.message
    assert "/usr/sbin/ipset does" in result.message
    assert "name /usr/sbin/ipset instead of /sbin/ipset" in result.fix


def test_one_009_an_unknown_missing_command_fails_an_optional_tool_does_not() -> None:
    facts = converged()
    commands = facts["one"]["runtime"]["sudo"]["commands"]
    commands.append(rule("/usr/sbin/ovs-appctl", exists=False))
    commands.append(rule("/var/tmp/one/vnm/tproxy", exists=False))
    assert drivers.sudo_rules(facts, Expect()).status is P
    commands.append(rule("/usr/sbin/kvmprep-no-such-tool", exists=False))
    result = drivers.sudo_rules(facts, Expect())
    assert result.status is F
    assert "/usr/sbin/kvmprep-no-such-tool (ONE_NET in /etc/sudoers.d/opennebula)" in (
        result.message
    )
    assert "is not on this host" in result.message
    assert "/usr/sbin/ovs-appctl" not in result.message


def test_one_009_sudo_asking_for_a_password_fails() -> None:
    facts = converged()
    facts["one"]["runtime"]["sudo"]["list"] = {
        "ok": False,
        "error": "sudo: a password is required",
    }
    result = drivers.sudo_rules(facts, Expect())
    assert result.status is F
    assert "`sudo -n -l` as oneadmin fails: sudo: a password is required" in result.message
    assert "NOPASSWD" in result.fix


def test_one_009_unknowns_are_errors_and_no_rules_skip() -> None:
    facts = converged()
    facts["one"]["runtime"]["sudo"]["list"] = {"ok": None, "error": "needs root"}
    assert drivers.sudo_rules(facts, Expect()) == Result.error(
        "`sudo -n -l` as oneadmin was not run: needs root"
    )
    assert drivers.sudo_rules(load("debian12-unprivileged"), Expect()).status is E
    assert drivers.sudo_rules(load("lab-host-no-libvirt"), Expect()).status is S
    # No rules to judge: sudo failing (no oneadmin, no sudo) is ONE-004's and USR-001's.
    bare = converged()
    bare["one"]["runtime"]["sudo"].update(
        files=[], commands=[], list={"ok": False, "error": "runuser: user oneadmin does not exist"}
    )
    assert drivers.sudo_rules(bare, Expect()).status is S
    del facts["one"]["runtime"]["sudo"]
    report = {r.control.id: r for r in evaluate_fleet([HostInput("h", facts, Expect())])[0].results}
    assert report["ONE-009"].status is E
    assert report["ONE-009"].message == "fact one.runtime.sudo was not gathered"


# --- ONE-010 ---------------------------------------------------------------------------------


def _kvmrc(facts: dict[str, Any], protocol: str | None) -> dict[str, Any]:
    facts["one"]["kvmrc"].update(exists=True, qemu_protocol=protocol)
    return facts


def _alone(facts: dict[str, Any]) -> Result:
    return drivers.driver_settings([HostFacts("h", facts, Expect())])["h"]


def test_one_010_tcp_protocol_needs_an_authenticated_listener() -> None:
    assert _alone(_kvmrc(converged(), "qemu+tcp")).status is P
    closed = _kvmrc(converged(), "qemu+tcp")
    closed["listen"]["sockets"] = []
    result = _alone(closed)
    assert result.status is F
    assert "kvmrc says qemu+tcp but nothing listens on TCP port 16509 here" in result.message
    assert "/var/tmp/one/etc/vmm/kvm/kvmrc here" in result.message
    assert "kvm_host_migration_transport: tcp" in result.fix
    open_door = _kvmrc(load("debian12-auth-none"), "qemu+tcp")
    result = _alone(open_door)
    assert result.status is F
    assert 'auth_tcp = "none"' in result.message
    allowed = Expect(libvirt_tcp_allow_unauthenticated=True)
    result = drivers.driver_settings([HostFacts("h", open_door, allowed)])["h"]
    assert result.status is W


def test_one_010_tls_protocol_without_its_listener_fails() -> None:
    result = _alone(_kvmrc(converged(), "qemu+tls"))
    assert result.status is F
    assert "nothing listens on TCP port 16514" in result.message


def test_one_010_ssh_protocol_with_an_open_listener_warns() -> None:
    result = _alone(_kvmrc(converged(), "qemu+ssh"))
    assert result.status is W
    assert "kvmrc says qemu+ssh but libvirt listens on [::]:16509" in result.message
    assert "kvm_host_migration_transport: ssh" in result.fix
    # Unset QEMU_PROTOCOL is the driver's default, qemu+ssh.
    assert _alone(_kvmrc(converged(), None)).status is W
    closed = _kvmrc(converged(), "qemu+ssh")
    closed["listen"]["sockets"] = [{"address": "127.0.0.1", "family": "ipv4", "port": 16509}]
    assert _alone(closed).status is P


def test_one_010_without_kvmrc_or_front_end_skips() -> None:
    assert _alone(converged()).status is S


def test_one_010_the_front_ends_protocol_counts_too() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["kvmrc"]["qemu_protocol"] = "qemu+tls"
    rows = fleet(fe)
    assert rows["h1"]["ONE-010"].status is F
    assert "kvmrc says qemu+tls" in rows["h1"]["ONE-010"].message
    assert "the kvmrc of fe" in rows["h1"]["ONE-010"].message


def test_one_010_front_end_monitord_keys_per_version() -> None:
    assert drivers.expected_probes("7.0.0") == drivers.expected_probes("5.12.0")
    assert "EXEC_VM" in (drivers.expected_probes("7.2.0") or ())
    assert "EXEC_VM" in (drivers.expected_probes("7.5.80") or ())
    assert drivers.expected_probes("5.10.1") == frozenset()
    assert drivers.expected_probes(None) is None
    fe = copy.deepcopy(FRONTEND)
    fe["monitord"]["probes_period"].remove("STATE_VM")
    result = fleet(fe)["fe"]["ONE-010"]
    assert result.status is F
    assert "PROBES_PERIOD in /etc/one/monitord.conf lacks STATE_VM" in result.message
    assert "OFFLINE" in result.message
    assert "add STATE_VM to PROBES_PERIOD" in result.fix
    # The same file after an upgrade to 7.2 lacks EXEC_VM (one#7659).
    upgraded = copy.deepcopy(FRONTEND)
    upgraded["version"] = "7.2.0"
    result = fleet(upgraded)["fe"]["ONE-010"]
    assert result.status is F
    assert "lacks EXEC_VM" in result.message


def test_one_010_front_end_remotes_not_oneadmins_fail() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["remotes"].update(foreign=["im/kvm.d/monitord-client.rb"], foreign_count=1)
    result = fleet(fe)["fe"]["ONE-010"]
    assert result.status is F
    assert "1 path(s) in /var/lib/one/remotes not oneadmin's" in result.message
    assert "im/kvm.d/monitord-client.rb" in result.message
    assert "chown -R oneadmin: /var/lib/one/remotes" in result.fix


def test_one_010_host_rows_of_an_adopted_fleet_pass() -> None:
    rows = fleet(h1=node("h1", 0))
    assert rows["h1"]["ONE-010"].status is P, rows["h1"]["ONE-010"].message
    assert "qemu+tcp" in rows["h1"]["ONE-010"].message


# --- FLEET-006, FLEET-007 ------------------------------------------------------------------


def _hosts(**systems: dict[str, Any]) -> list[HostFacts]:
    hosts = []
    for name, changes in systems.items():
        facts = converged()
        cluster = changes.pop("cluster", "default")
        for key, value in changes.items():
            facts["system"][key] = value
        hosts.append(HostFacts(name, facts, Expect(cluster=cluster)))
    return hosts


V1 = {"version": 1, "layout": "legacy", "fstype": "tmpfs", "error": None}


def test_fleet_006_mixed_cgroup_versions_fail_per_cluster() -> None:
    results = system.cgroup_version(_hosts(a={}, b={}, c={"cgroup": V1}))
    assert {n: r.status for n, r in results.items()} == {"a": F, "b": F, "c": F}
    assert "cgroup v1 (legacy) here, cgroup v2 (unified) on a, b" in results["c"].message
    assert "cpu.weight" in results["c"].message
    assert "systemd.unified_cgroup_hierarchy" in results["c"].fix
    # Another cluster is not compared.
    apart = system.cgroup_version(_hosts(a={}, b={}, c={"cgroup": V1, "cluster": "old"}))
    assert {r.status for r in apart.values()} == {P}
    unknown = {"version": None, "layout": None, "fstype": None, "error": "no cgroup"}
    odd = system.cgroup_version(_hosts(a={}, b={"cgroup": unknown}))
    assert odd["b"] == Result.error("cgroup version unknown: no cgroup")
    assert odd["a"].status is P


def test_fleet_007_names_the_odd_hosts() -> None:
    results = system.kernel_microcode(
        _hosts(a={}, b={}, c={"kernel": {"release": "6.1.0-40-amd64"}, "microcode": "0xee"})
    )
    assert results["c"].status is W
    assert "kernel 6.1.0-40-amd64 here, 6.1.0-41-amd64 on a, b" in results["c"].message
    assert "microcode 0xee here, 0xf0 on a, b" in results["c"].message
    assert results["a"].status is P
    assert "like most hosts" in results["a"].message
    assert "6.1.0-40-amd64 on c" in results["a"].message
    # A tie: nobody is the majority, both WARN.
    tie = system.kernel_microcode(_hosts(a={}, b={"kernel": {"release": "6.12.0"}}))
    assert {r.status for r in tie.values()} == {W}
    # Unknown microcode (VMs) is not compared.
    vm = system.kernel_microcode(_hosts(a={}, b={"microcode": None}))
    assert {r.status for r in vm.values()} == {P}
    assert "microcode unknown on b" in vm["a"].message


# --- SYS-001 -------------------------------------------------------------------------------


def _clock(synchronized: bool | None, container: str | None = None) -> dict[str, Any]:
    facts = converged()
    facts["system"]["clock"].update(synchronized=synchronized, detail="timedatectl: said so")
    facts["system"]["container"] = container
    return facts


def test_sys_001() -> None:
    assert system.clock(_clock(True), Expect()) == Result.passed(
        "synchronised (timedatectl: said so)"
    )
    result = system.clock(_clock(False), Expect())
    assert result.status is W
    assert result.message == "the clock is not synchronised: timedatectl: said so"
    assert "systemd-timesyncd" in result.fix
    unknown = system.clock(_clock(None, "podman"), Expect())
    assert unknown.status is W
    assert "cannot tell whether the clock is synchronised" in unknown.message
    assert "podman container" in unknown.message


def test_new_controls_in_the_catalog_rows() -> None:
    reports = evaluate_fleet([HostInput("h", converged(), Expect())])
    ids = [r.control.id for r in reports[0].results]
    assert ids[-7:-2] == ["ONE-009", "ONE-010", "FLEET-006", "FLEET-007", "SYS-001"]
    fe_only = evaluate_fleet([HostInput("fe", copy.deepcopy(FRONTEND), role=Role.FRONTEND)])
    assert "ONE-010" in [r.control.id for r in fe_only[0].results]
