"""The controls' judges, against facts recorded on real hosts and edited variants of them.

Recorded with kvm_host_probe (all gather groups): debian12/13-converged on the lab's
converged Debian 12 and 13 containers, lab-host-no-libvirt on the lab machine itself (KVM
built in with the kvm_pvm paravirtual backend, no vmx/svm flag, no libvirt, no systemd).
el9-modular is debian12-converged edited into an EL9 host with modular daemons (virtqemud,
virtproxyd, no libvirtd). The others are debian12-converged with one drift each (see their
names). fixtures/fleets/ holds fleets: JSON merge patches over these host fixtures.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from typing import Any

import pytest
import yaml
from conftest import FIXTURES, REPO_ROOT

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import (
    access,
    accounts,
    apparmor,
    fleet,
    kvm,
    libvirt,
    packages,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import (
    CATALOG,
    SMOKE,
    by_id,
    for_role,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
    evaluate_host,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Control,
    Expect,
    HostFacts,
    Result,
    Role,
    Severity,
    Status,
    fact,
)
from kvmprep.judge import judge

FACTS = FIXTURES / "facts"
P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
IDS = [c.id for c in for_role(Role.KVM_HOST)]  # a KVM host's row
ALL_IDS = [c.id for c in CATALOG]


def load(name: str) -> dict[str, Any]:
    return json.loads((FACTS / f"{name}.json").read_text())


# fmt: off
CONVERGED = dict(zip(IDS, [
    W, P, P, P, W,              # KVM-001..005
    P, P,                       # PKG-001..002
    P, P, P, P, P, P, P, P,     # LV-001..008
    P, P, S,                    # USR-001..002, AA-001
    S, S, S,                    # USR-003, ONE-001..002: no front-end in the inventory
    P, P, S, P,                 # ONE-004..007 (ONE-003 is the front-end's)
    P, P, P, P, P,              # FLEET-001..005 (a fleet of one)
    S,                          # NET-001: no other host, no front-end to resolve its name
    P, S,                       # ONE-009, ONE-010 (no kvmrc in the remotes, no front-end)
    P, P, P,                    # FLEET-006..007 (a fleet of one), SYS-001
    P, P,                       # NET-002, ONE-008: its probe reached its peer and front-end
], strict=True))
NO_LIBVIRT = dict(zip(IDS, [
    W, P, F, F, W,
    F, F,
    F, F, F, F, F, P, S, S,
    F, F, S,
    S, S, S,
    F, F, S, F,                 # no runtime, no QEMU: no emulator, no oneadmin
    S, S, S, P, P,              # no QEMU: no machine type; its CPU, its (absent) versions
    S,
    S, S,                       # no sudoers rules, no kvmrc
    P, P, W,                    # the lab machine's kernel says its clock is unsynchronised
    S, S,                       # NET-002, ONE-008: recorded before the probe tested peers
], strict=True))
# fmt: on

EXPECTED: dict[str, dict[str, Status]] = {
    "debian12-converged": CONVERGED,
    "debian13-converged": CONVERGED,
    "lab-host-no-libvirt": NO_LIBVIRT,
    # Out of the kvm group oneadmin cannot open /dev/kvm any more.
    "debian12-drift": {**CONVERGED, "LV-001": F, "USR-002": F, "LV-005": F, "KVM-004": F},
    "debian12-socket-listen": {**CONVERGED, "LV-007": F},
    # apply would set auth_tcp back to "sasl": LV-005 says so, LV-006 says why it matters.
    "debian12-auth-none": {**CONVERGED, "LV-005": F, "LV-006": F},
    "libvirt-0.8.7": {**CONVERGED, "PKG-001": F},
    "debian12-unprivileged": {
        **CONVERGED,
        **dict.fromkeys(["KVM-001", "KVM-004", "LV-001", "LV-002", "LV-004", "LV-005"], E),
        "LV-006": E,
        **dict.fromkeys(["LV-008", "FLEET-001"], E),
        "ONE-009": E,  # the sudoers file is root's, sudo -n -l needs root to run as oneadmin
        "ONE-008": E,  # ssh as oneadmin too (the ports need no privilege)
    },
    "debian12-kvm-root-only": {**CONVERGED, "KVM-003": F, "KVM-004": F},
    "el9-modular": {**CONVERGED, "KVM-001": P, "KVM-005": P, "LV-007": S},
    "debian12-mixed-daemons": {**CONVERGED, "LV-003": F},
    "debian12-idle-socket-activated": CONVERGED,
}


def test_every_fixture_is_tested() -> None:
    assert {p.stem for p in FACTS.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_statuses(name: str) -> None:
    report = evaluate_host(name, load(name), Expect())
    got = {r.control.id: r.status for r in report.results}
    assert got == EXPECTED[name], {r.control.id: r.message for r in report.results}
    assert all(r.message for r in report.results if r.status is not Status.PASS)


def test_catalog_is_complete_data() -> None:
    assert len(IDS) == len(set(IDS))
    for control in CATALOG:
        assert all(control.as_dict().values()), control.id
    assert by_id("LV-006").severity == "critical"


def test_expect_defaults_are_the_role_defaults() -> None:
    defaults = yaml.safe_load((REPO_ROOT / "roles/kvm_host/defaults/main.yml").read_text())
    assert Expect.from_vars(defaults) == Expect()
    # check sends the probe every variable of Expect (playbooks/audit.yml's settings task builds
    # the dict from Expect's fields: test_peers runs it); the role's settings among them are
    # exactly those apply's plan gives the judge, each key given the variable of its own name.
    role_vars = yaml.safe_load((REPO_ROOT / "roles/kvm_host/vars/main.yml").read_text())
    judged = {
        key
        for key, value in re.findall(r"'(\w+)':\s*(\w+)", role_vars["__kvm_host_judge_settings"])
        if key == value
    }
    role_fields = {Expect.var_name(f) for f in fields(Expect)} - {
        Expect.var_name(f) for f in fields(Expect) if "var" in f.metadata
    }
    assert judged == role_fields


def test_expect_front_end_fields_match_the_front_end_role() -> None:
    defaults = yaml.safe_load((REPO_ROOT / "roles/one_frontend/defaults/main.yml").read_text())
    front_end = [f for f in fields(Expect) if Expect.var_name(f).startswith("one_frontend_")]
    assert [Expect.var_name(f) for f in front_end] == [
        "one_frontend_cluster",
        "one_frontend_vmm_machine",
        "one_frontend_vmm_cpu_model",
        "one_frontend_host_name",
    ]
    for f in front_end:
        assert f.default == defaults[Expect.var_name(f)], f.name
    expect = Expect.from_vars({"one_frontend_cluster": 100, "kvm_host_cluster": "ignored"})
    assert expect.cluster == "100"


def test_expect_from_inventory_values() -> None:
    expect = Expect.from_vars(
        {
            "kvm_host_oneadmin_uid": "1000",
            "kvm_host_libvirt_tcp_allow_unauthenticated": "true",
            "kvm_host_migration_transport": None,  # unset in the inventory
            "kvm_host_libvirt_sasl_password": "never-used",
        }
    )
    assert expect.oneadmin_uid == 1000
    assert expect.libvirt_tcp_allow_unauthenticated is True
    assert expect.migration_transport == "tcp"


def test_a_judge_that_breaks_is_an_error_not_a_crash() -> None:
    facts = load("debian12-converged")
    del facts["listen"]
    facts["kvm"] = "garbage"
    report = evaluate_host("h", facts)
    got = {r.control.id: r for r in report.results}
    assert got["LV-005"].status is E
    assert got["LV-005"].message == "fact listen was not gathered"
    assert got["KVM-001"].status is E


def test_unreachable_host_has_every_control_as_error() -> None:
    report = evaluate_host("h", None, error="unreachable: timed out")
    assert [r.control.id for r in report.results] == IDS
    assert {r.status for r in report.results} == {E}
    assert report.error == "unreachable: timed out"


# --- KVM ---------------------------------------------------------------------------------


def _kvm(**changes: Any) -> dict[str, Any]:
    facts = load("debian12-converged")
    facts["kvm"].update(changes)
    return facts


def test_kvm_001() -> None:
    assert kvm.cpu_extensions(_kvm(vt_flags=["vmx"]), Expect()) == Result.passed("vmx")
    result = kvm.cpu_extensions(_kvm(), Expect())
    assert result.status is W
    assert "paravirtual" in result.message
    broken = _kvm(usable=False)
    broken["kvm"]["dev_kvm"].update(exists=False, error="No such file or directory")
    result = kvm.cpu_extensions(broken, Expect())
    assert result.status is F
    assert "No such file or directory" in result.message


def test_kvm_002() -> None:
    absent = {"kvm": "absent", "kvm_intel": "absent", "kvm_amd": "absent"}
    assert kvm.kvm_modules(_kvm(modules=absent), Expect()).status is F
    no_backend = {**absent, "kvm": "loaded"}
    assert "no vendor backend" in kvm.kvm_modules(_kvm(modules=no_backend), Expect()).message
    loaded = {**absent, "kvm": "loaded", "kvm_intel": "loaded"}
    assert kvm.kvm_modules(_kvm(modules=loaded), Expect()) == Result.passed(
        "kvm (loaded), kvm_intel (loaded)"
    )


def test_kvm_003_follows_the_inventory() -> None:
    facts = load("debian12-converged")
    assert kvm.dev_kvm(facts, Expect(kvm_device_mode="0666")).status is F
    facts["kvm"]["dev_kvm"]["char_device"] = False
    assert kvm.dev_kvm(facts, Expect()).status is F


def test_kvm_005_missing_tun_fails() -> None:
    facts = load("debian12-converged")
    facts["devices"]["/dev/net/tun"].update(exists=False, error="No such file or directory")
    assert kvm.net_devices(facts, Expect()).status is F
    facts = load("debian12-converged")
    facts["devices"]["/dev/vhost-net"].update(exists=True, char_device=True)
    assert kvm.net_devices(facts, Expect()).status is P


# --- packages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "status"),
    [("0.4.0", P), ("0.3.9", F), ("0.8.7", F), ("0.8.8", P), ("9.0.0", P), ("10", P), ("x", E)],
)
def test_pkg_001(version: str, status: Status) -> None:
    facts = {"packages": {"daemon_version": version}}
    assert packages.libvirt_version(facts, Expect()).status is status


def test_pkg_002_names_what_is_missing() -> None:
    facts = load("lab-host-no-libvirt")
    assert packages.qemu_and_tools(facts, Expect()) == Result.fail(
        "missing: qemu-system-*, qemu-img, ruby"
    )


# --- libvirt -------------------------------------------------------------------------------


def test_lv_001_002_values() -> None:
    facts = load("debian12-converged")
    keys = facts["config"]["qemu.conf"]["keys"]
    del keys["dynamic_ownership"]
    assert "not set" in libvirt.dynamic_ownership(facts, Expect()).message
    keys["user"] = "root"
    result = libvirt.qemu_user(facts, Expect())
    assert result.status is F
    assert 'qemu.conf: user "root" -> "oneadmin"' in result.message
    assert libvirt.qemu_user(load("debian12-converged"), Expect(oneadmin_user="one")).status is F
    facts["config"]["qemu.conf"]["invalid"] = ["dynamic_ownership"]
    assert "does not parse" in libvirt.dynamic_ownership(facts, Expect()).message


def test_lv_003_socket_units_must_be_up() -> None:
    facts = load("debian12-converged")
    facts["libvirt"]["units"]["libvirtd.socket"].update(enabled="disabled", active="inactive")
    result = libvirt.daemon_layout(facts, Expect())
    assert result == Result.fail(
        "socket layout: apply would change: libvirtd.socket enabled, libvirtd.socket started"
    )
    facts["libvirt"]["units"]["libvirtd.socket"].update(enabled="unknown", active="unknown")
    assert libvirt.daemon_layout(facts, Expect()).status is E


def test_lv_003_classic_and_modular() -> None:
    facts = load("debian12-converged")
    facts["libvirt"]["layout"] = "classic"
    facts["libvirt"]["units"]["libvirtd.socket"].update(enabled="masked", active="inactive")
    # apply masks every libvirtd socket for the classic daemon: one left is not converged.
    result = libvirt.daemon_layout(facts, Expect())
    assert result.status is F
    assert "libvirtd-ro.socket masked" in result.message, result.message
    for unit in ("libvirtd-ro.socket", "libvirtd-admin.socket"):
        facts["libvirt"]["units"][unit].update(enabled="masked", active="inactive")
    assert libvirt.daemon_layout(facts, Expect()).status is P
    facts["libvirt"]["units"]["libvirtd.service"].update(active="failed")
    assert libvirt.daemon_layout(facts, Expect()).status is F
    modular = load("debian12-converged")
    modular["libvirt"]["layout"] = "modular"
    for unit in (
        "libvirtd.service",
        "libvirtd.socket",
        "libvirtd-ro.socket",
        "libvirtd-admin.socket",
    ):
        modular["libvirt"]["units"][unit].update(enabled="disabled", active="inactive")
    up = {"present": True, "enabled": "enabled", "active": "active"}
    modular["libvirt"]["units"]["virtqemud.socket"] = dict(up)
    modular["libvirt"]["units"]["virtqemud.service"] = dict(up, active="inactive")
    # The read-only and admin sockets are the layout's too: apply starts them.
    result = libvirt.daemon_layout(modular, Expect())
    assert result.status is F, result.message
    assert "virtqemud-ro.socket enabled" in result.message
    # A unit the probe did not report is unknown, never converged.
    unreported = copy.deepcopy(modular)
    del unreported["libvirt"]["units"]["virtqemud-ro.socket"]
    assert libvirt.daemon_layout(unreported, Expect()).status is E
    modular["libvirt"]["units"]["virtqemud-ro.socket"] = dict(up, active="inactive")
    modular["libvirt"]["units"]["virtqemud-admin.socket"] = dict(up)
    result = libvirt.daemon_layout(modular, Expect())
    assert result == Result.fail("modular layout: apply would change: virtqemud-ro.socket started")
    modular["libvirt"]["units"]["virtqemud-ro.socket"] = dict(up)
    assert libvirt.daemon_layout(modular, Expect()).status is P


def test_lv_005_classic_needs_listen_tcp_and_the_option() -> None:
    facts = load("debian12-converged")
    facts["libvirt"]["layout"] = "classic"
    result = libvirt.listener(facts, Expect())
    assert result == Result.fail(
        "apply would change: libvirtd.conf: listen_tcp not set -> 1; libvirtd.conf: listen_tls "
        "not set -> 0; /etc/default/libvirtd: LIBVIRTD_ARGS --listen added"
    )
    facts["config"]["libvirtd.conf"]["keys"].update(listen_tcp=1, listen_tls=0)
    facts["libvirt"]["defaults_args"] = "--listen"
    assert libvirt.listener(facts, Expect()).status is P


def test_lv_005_and_007_judge_the_listener_keys_as_apply_writes_them() -> None:
    facts = load("debian12-converged")
    facts["config"]["libvirtd.conf"]["keys"]["auth_tcp"] = "none"
    result = libvirt.listener(facts, Expect())
    assert 'libvirtd.conf: auth_tcp "none" -> "sasl"' in result.message
    assert result.status is F
    # ssh: no listener is used, and one left configured is one apply closes.
    facts = load("debian12-converged")
    facts["libvirt"]["layout"] = "classic"
    facts["config"]["libvirtd.conf"]["keys"]["listen_tcp"] = 1
    result = libvirt.listener(facts, Expect(migration_transport="ssh"))
    assert result.status is F
    assert "listen_tcp 1 -> 0" in result.message
    facts["config"]["libvirtd.conf"]["keys"].update(listen_tcp=0, listen_tls=0)
    assert libvirt.listener(facts, Expect(migration_transport="ssh")).status is S
    # Socket activation: a --listen apply removes is LV-007's.
    facts = load("debian12-converged")
    facts["libvirt"]["defaults_args"] = "--timeout 120 -l"
    assert libvirt.listen_with_socket_activation(facts, Expect()).status is F
    assert libvirt.listener(facts, Expect()).status is P


def test_lv_005_transport() -> None:
    facts = load("debian12-converged")
    assert libvirt.listener(facts, Expect(migration_transport="ssh")).status is S
    result = libvirt.listener(facts, Expect(migration_transport="tls"))
    assert result.status is F
    assert "libvirtd-tls.socket enabled" in result.message
    assert "libvirtd-tls.socket started" in result.message
    assert "16514" in result.message
    facts["listen"] = {"sockets": None, "error": "/proc/net/tcp: Permission denied"}
    assert libvirt.listener(facts, Expect()).status is E


def test_lv_006_loopback_and_opt_in() -> None:
    facts = load("debian12-auth-none")
    assert libvirt.unauthenticated_tcp(facts, Expect()).status is F
    opted_in = Expect(libvirt_tcp_allow_unauthenticated=True)
    assert libvirt.unauthenticated_tcp(facts, opted_in).status is W
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        facts["listen"]["sockets"] = [{"address": address, "family": "ipv4", "port": 16509}]
        assert libvirt.unauthenticated_tcp(facts, Expect()).status is P, address
    facts["listen"]["sockets"] = [{"address": "::", "family": "ipv6", "port": 16509}]
    del facts["config"]["libvirtd.conf"]["keys"]["auth_tcp"]  # libvirt's default: sasl
    assert libvirt.unauthenticated_tcp(facts, Expect()).status is P


def test_lv_007_only_for_socket_activation() -> None:
    facts = load("debian12-socket-listen")
    assert (
        "--listen --timeout 120" in libvirt.listen_with_socket_activation(facts, Expect()).message
    )
    facts["libvirt"]["layout"] = "classic"
    assert libvirt.listen_with_socket_activation(facts, Expect()).status is S


# --- accounts, AppArmor --------------------------------------------------------------------


def test_usr_001_ids_and_home() -> None:
    facts = load("debian12-converged")
    result = accounts.oneadmin_account(facts, Expect(oneadmin_uid=1000, oneadmin_gid=1000))
    assert result == Result.fail(
        "apply would change group oneadmin gid 9869 -> 1000, oneadmin uid 9869 -> 1000"
    )
    facts["accounts"]["home"]["owner"] = "root"
    assert (
        "/var/lib/one owner root -> oneadmin" in accounts.oneadmin_account(facts, Expect()).message
    )


def test_usr_002_libvirtd_group_name() -> None:
    facts = load("debian12-converged")
    groups = facts["accounts"]["groups"]
    groups["libvirtd"], groups["libvirt"] = groups["libvirt"], None
    facts["accounts"]["user_groups"] = ["kvm", "libvirtd", "oneadmin"]
    assert accounts.oneadmin_groups(facts, Expect()) == Result.passed("in kvm, libvirtd")
    assert accounts.oneadmin_groups(facts, Expect(libvirt_group="libvirt")).status is F


def test_aa_001() -> None:
    facts = load("debian12-converged")
    assert apparmor.datastore_rule(facts, Expect()).status is S
    aa = facts["libvirt"]["apparmor"]
    aa["enabled"] = True
    assert apparmor.datastore_rule(facts, Expect()).status is P  # apply wrote it anyway
    rules, aa["rules"] = aa["rules"], []
    assert apparmor.datastore_rule(facts, Expect()).status is F
    aa["rules"] = rules
    assert apparmor.datastore_rule(facts, Expect()).status is P
    assert apparmor.datastore_rule(facts, Expect(apparmor_datastore_path="/srv/one")).status is F
    aa["abstraction"] = False
    assert apparmor.datastore_rule(facts, Expect()).status is S


def _aa_with(*rules: str) -> dict:
    facts = load("debian12-converged")
    aa = facts["libvirt"]["apparmor"]
    aa["enabled"] = True
    aa["rules"] = [
        {"file": "/etc/apparmor.d/local/abstractions/libvirt-qemu", "rule": r} for r in rules
    ]
    return facts


def test_aa_001_wants_the_datastores_with_opennebulas_permissions() -> None:
    narrow = "owner /var/lib/one/datastores/** rwk,"
    assert apparmor.datastore_rule(_aa_with(narrow), Expect()).status is P
    # The seed's rule alone covers the datastores, but it is the whole home: not the rule.
    seed = apparmor.datastore_rule(_aa_with("owner /var/lib/one/** rw,"), Expect())
    assert seed.status is F
    assert "/var/lib/one/datastores/** rwk" in seed.message
    # Without k QEMU cannot lock its images.
    no_lock = apparmor.datastore_rule(_aa_with("owner /var/lib/one/datastores/** rw,"), Expect())
    assert no_lock.status is F
    assert "lacks 'k'" in no_lock.message
    # A different datastore location is judged against its own rule.
    srv = Expect(apparmor_datastore_path="/srv/one/datastores/")
    assert apparmor.datastore_rule(_aa_with("owner /srv/one/datastores/** rwk,"), srv).status is P
    assert apparmor.datastore_rule(_aa_with(narrow), srv).status is F


@pytest.mark.parametrize(
    "broader",
    [
        "owner /var/lib/one/** rw,",
        "/var/lib/** r,",
        "/** rwk,",
        "owner /var/lib/one/** r,",
        'owner "/var/lib/one/**" rw,',
    ],
)
def test_aa_001_warns_about_a_rule_that_opens_oneadmins_home(broader: str) -> None:
    result = apparmor.datastore_rule(
        _aa_with("owner /var/lib/one/datastores/** rwk,", broader), Expect()
    )
    assert result.status is W, result
    assert broader in result.message
    assert "oneadmin's home" in result.message


def test_aa_001_ignores_rules_beside_the_datastores() -> None:
    facts = _aa_with(
        "owner /var/lib/one/datastores/** rwk,", "/var/lib/libvirt/** rw,", "/var/lib/one-x/** rw,"
    )
    assert apparmor.datastore_rule(facts, Expect()).status is P


# --- KVM-004, LV-004, LV-008 ----------------------------------------------------------------


def test_kvm_004_as_the_qemu_user() -> None:
    result = kvm.dev_kvm_for_user(load("debian12-converged"), Expect())
    assert result == Result.passed(
        "oneadmin (groups kvm, libvirt, oneadmin) opens /dev/kvm, API version 12"
    )
    result = kvm.dev_kvm_for_user(load("debian12-kvm-root-only"), Expect())
    assert result.status is F
    assert "Permission denied" in result.message
    result = kvm.dev_kvm_for_user(load("debian12-unprivileged"), Expect())
    assert result == Result.error("/dev/kvm as oneadmin: not evaluated: needs root")
    timed_out = load("debian12-converged")
    timed_out["access"]["kvm_as_user"].update(api_version=None, error="no answer within 5 s")
    assert kvm.dev_kvm_for_user(timed_out, Expect()).status is F


def _socket(facts: dict[str, Any], path: str, **changes: Any) -> dict[str, Any]:
    facts["access"]["sockets"][path].update(changes)
    return facts


def test_lv_004_socket_permissions() -> None:
    sock = "/run/libvirt/libvirt-sock"
    facts = _socket(load("debian12-converged"), sock, mode="0600")
    result = access.qemu_system_access(facts, Expect())
    assert result.status is F
    assert "root:libvirt 0600: oneadmin (groups kvm, libvirt, oneadmin) may not" in result.message
    facts = _socket(load("debian12-converged"), sock, group="root", mode="0666")
    assert "world read-write" in access.qemu_system_access(facts, Expect()).message
    facts = load("debian12-drift")
    facts["accounts"]["user_groups"] = ["oneadmin"]
    assert access.qemu_system_access(facts, Expect()).status is F
    facts = _socket(load("debian12-converged"), sock, exists=False, error="No such file")
    assert access.qemu_system_access(facts, Expect()).status is F


def test_lv_004_access_is_what_apply_sets() -> None:
    facts = load("debian12-converged")
    del facts["config"]["libvirtd.conf"]["keys"]["auth_unix_rw"]  # libvirt's default: polkit
    # The polkit rule lets oneadmin in, but apply would still set "none" and restart libvirt.
    result = access.qemu_system_access(facts, Expect())
    assert result.status is F
    assert 'libvirtd.conf: auth_unix_rw not set -> "none"' in result.message
    facts = load("debian12-converged")
    facts["config"]["libvirtd.conf"]["keys"]["unix_sock_group"] = "root"
    result = access.qemu_system_access(facts, Expect())
    assert result.status is F
    assert 'unix_sock_group "root" -> "libvirt"' in result.message
    facts["config"]["libvirtd.conf"]["keys"]["unix_sock_group"] = "libvirt"
    assert access.qemu_system_access(facts, Expect()).status is P


def test_lv_004_modular_uses_virtqemud() -> None:
    facts = load("el9-modular")
    assert "/run/libvirt/virtqemud-sock root:libvirt 0660" in (
        access.qemu_system_access(facts, Expect()).message
    )
    facts["config"]["virtqemud.conf"]["keys"]["auth_unix_rw"] = "polkit"
    result = access.qemu_system_access(facts, Expect())
    assert result.status is F
    assert 'virtqemud.conf: auth_unix_rw "polkit" -> "none"' in result.message


def test_lv_008_names_file_and_line() -> None:
    facts = load("debian12-converged")
    facts["config"]["qemu.conf"]["syntax_error"] = {"line": 12, "message": "unterminated string"}
    assert libvirt.config_syntax(facts, Expect()) == Result.fail(
        "/etc/libvirt/qemu.conf:12: unterminated string"
    )
    del facts["config"]["qemu.conf"]["syntax_error"]  # an older probe
    assert libvirt.config_syntax(facts, Expect()).status is E


# --- fleet -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def qemu_from_outputs(name: str, base: dict[str, Any]) -> dict[str, Any]:
    """A host's qemu facts as the probe makes them from its emulator's recorded outputs
    (fixtures/qemu/<name>.*.txt), the rest (CPU, libvirt) taken from ``base``."""
    from ansible_collections.kvmprep.kvm.plugins.module_utils import (
        kvm_host_probe_qemu as probe,
    )  # the probe's own parsers

    def text(kind: str) -> str:
        return (FIXTURES / "qemu" / f"{name}.{kind}.txt").read_text()

    version, package = probe.parse_qemu_version(text("version"))
    return {
        **base,
        "source": "emulator",
        "version": version,
        "package": package,
        "machines": probe.parse_machine_help(text("machine-help")),
    }


def load_fleet(name: str) -> list[HostInput]:
    """A fleet of fixtures/fleets/: per host a ``base`` facts fixture and a JSON merge
    ``patch``; optionally ``qemu_outputs`` (the qemu facts from recorded QEMU outputs) and
    ``vars`` (its inventory variables, as audit.yml sends them: one_frontend_cluster...)."""
    doc = json.loads((FIXTURES / "fleets" / f"{name}.json").read_text())
    hosts = []
    for host, spec in doc["hosts"].items():
        facts = merge_patch(load(spec["base"]), spec.get("patch", {}))
        if "qemu_outputs" in spec:
            facts["qemu"] = qemu_from_outputs(spec["qemu_outputs"], facts["qemu"])
        hosts.append(HostInput(host, facts, Expect.from_vars(spec.get("vars"))))
    return hosts


def test_fleet_duplicate_host_uuid() -> None:
    reports = {r.name: r for r in evaluate_fleet(load_fleet("duplicate-host-uuid"))}
    got = {
        name: {r.control.id: r for r in report.results if r.control.id.startswith("FLEET")}
        for name, report in reports.items()
    }
    assert got["node1"]["FLEET-001"].status is F
    assert "also the host UUID of node2" in got["node1"]["FLEET-001"].message
    assert "03000200-0400-0500-0006-000700080009 (from SMBIOS" in got["node1"]["FLEET-001"].message
    assert "also the host UUID of node1" in got["node2"]["FLEET-001"].message
    assert got["node3"]["FLEET-001"].status is P  # host_uuid in libvirtd.conf wins
    assert "host_uuid in /etc/libvirt/libvirtd.conf" in got["node3"]["FLEET-001"].message
    assert got["node4"]["FLEET-001"].status is P  # host_uuid_source = machine-id
    assert "/etc/machine-id" in got["node4"]["FLEET-001"].message
    # Three hosts agree on oneadmin's ids; node4 does not.
    assert got["node4"]["FLEET-002"].status is F
    assert got["node4"]["FLEET-002"].message == (
        "uid/gid 1001/1001 here, uid/gid 9869/9869 on node1, node2, node3"
    )
    assert got["node1"]["FLEET-002"].status is P
    assert "1001/1001 on node4" in got["node1"]["FLEET-002"].message


def test_fleet_controls_per_host_and_unreachable_hosts() -> None:
    hosts = [*load_fleet("duplicate-host-uuid")[:2], HostInput("gone", None, error="unreachable")]
    reports = evaluate_fleet(hosts)
    assert [r.name for r in reports] == ["node1", "node2", "gone"]
    for report in reports:
        assert [r.control.id for r in report.results] == IDS
    assert {r.status for r in reports[2].results} == {E}


def test_fleet_002_tie_goes_to_the_inventory_value() -> None:
    a, b = load("debian12-converged"), load("debian13-converged")
    b["accounts"]["user"].update(uid=1000, gid=1000)
    hosts = [HostFacts("a", a, Expect()), HostFacts("b", b, Expect())]
    results = fleet.same_oneadmin_ids(hosts)
    assert results["a"].status is P
    assert results["b"] == Result.fail("uid/gid 1000/1000 here, uid/gid 9869/9869 on a")
    odd = [HostFacts("a", a, Expect(oneadmin_uid=1)), HostFacts("b", b, Expect(oneadmin_uid=1))]
    assert {r.status for r in fleet.same_oneadmin_ids(odd).values()} == {F}


@pytest.mark.parametrize(
    ("keys", "dmi", "expected"),
    [
        ({}, "4C4C4544-0042-3510-8052-B4C04F4E3732", "4c4c454400423510805 2b4c04f4e3732"),
        ({"host_uuid": "00000000-0000-0000-0000-000000000000"}, None, F),
        ({"host_uuid_source": "bogus"}, None, F),
        ({"host_uuid_source": "machine-id"}, None, "120aea311dc94400952a66b147ad209f"),
        ({}, None, P),  # no SMBIOS: random at each start
    ],
)
def test_effective_host_uuid(keys: dict[str, Any], dmi: str | None, expected: Any) -> None:
    facts = load("debian12-converged")
    facts["config"]["libvirtd.conf"]["keys"].update(keys)
    if dmi is not None:
        facts["identity"]["dmi"][0].update(value=dmi, error=None)
    got = fleet.effective_host_uuid(facts, Expect())
    if isinstance(expected, Status):
        assert isinstance(got, Result)
        assert got.status is expected
    else:
        assert got[0] == expected.replace(" ", "")


def test_effective_host_uuid_unreadable_smbios_is_an_error() -> None:
    facts = load("debian12-converged")
    facts["identity"]["dmi"][0].update(value=None, error="Permission denied")
    got = fleet.effective_host_uuid(facts, Expect())
    assert isinstance(got, Result)
    assert got.status is E


def test_a_fleet_judge_that_breaks_is_an_error_for_every_host() -> None:
    def broken(hosts: Any) -> Any:
        raise RuntimeError("boom")

    control = Control("X-1", "t", Severity.LOW, "r", "d", "m", fleet_judge=broken)
    (report,) = evaluate_fleet([HostInput("h", {}, Expect())], controls=[control])
    assert report.results[0].status is E
    assert "boom" in report.results[0].message
    with pytest.raises(ValueError, match="exactly one"):
        Control("X-2", "t", Severity.LOW, "r", "d", "m")


def test_readme_names_every_control() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for control in (*CATALOG, *SMOKE):
        assert control.id in readme, control.id


def test_kvm_003_and_apply_agree_on_a_mode_written_without_its_leading_zero() -> None:
    # "660" and "0660" are one mode: check does not fail what apply leaves alone.
    facts = load("debian12-converged")
    expect = Expect(kvm_device_mode="660")
    assert kvm.dev_kvm(facts, expect).status is P
    assert judge().kvm_device(fact(facts, "kvm", "dev_kvm"), expect.settings()) == []
    facts["kvm"]["dev_kvm"]["mode"] = "0600"
    result = kvm.dev_kvm(facts, expect)
    assert result == Result.fail("apply would change /dev/kvm mode 0600 -> 0660")


def test_kvm_003_checks_the_owner_apply_sets() -> None:
    facts = load("debian12-converged")
    facts["kvm"]["dev_kvm"]["owner"] = "oneadmin"
    result = kvm.dev_kvm(facts, Expect())
    assert result == Result.fail("apply would change /dev/kvm owner oneadmin -> root")
