"""The OpenNebula side of `kvmprep check`: the probes' parsing, the judges of USR-003,
ONE-001..007 and ONE-011 on a fleet with a front-end, the check flow's front-end row, and
ONE-002's read of oned's host pool (against the oned test double)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES, REPO_ROOT
from test_controls import load
from test_kvm_host_conf import load_library_module

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import CATALOG, for_role
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Role, Status
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import (
    known_under,
    name_matches,
)
from kvmprep import check, runner
from tests.one_double.oned_double import start
from tests.unit.ansible_env import run_module_locally

P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
ONE = FIXTURES / "one"
FRONTEND = json.loads((ONE / "frontend-probe.json").read_text())
#: The machines' addresses, and how each resolves the others' names (NET-001; recorded before
#: the probes resolved them).
ADDRESSES = {"fe": "10.89.0.2", "h1": "10.89.0.11", "h2": "10.89.0.12"}


def resolving(*names: str) -> dict[str, Any]:
    return {
        n: {"name": n, "addresses": [ADDRESSES[n]], "loopback": False, "error": None} for n in names
    }


FRONTEND["names"] = resolving("h1", "h2")
ONE_IDS = (
    "USR-003", "ONE-001", "ONE-002", "ONE-003", "ONE-004", "ONE-005", "ONE-006", "ONE-007",
    "ONE-011", "ONE-009", "ONE-010",
)  # fmt: skip

oneadmin = load_library_module("kvm_host_oneadmin", REPO_ROOT / "plugins/module_utils")
probe_fe = load_library_module("one_frontend_probe", REPO_ROOT / "plugins/modules")
ofh = load_library_module("one_frontend_host", REPO_ROOT / "plugins/modules")

FE_KEY = FRONTEND["ssh"]["public_key"]
FE_HOST_KEY = FRONTEND["ssh"]["host_keys"][0]


def node(name: str, index: int) -> dict[str, Any]:
    """debian12-converged as a host that the front-end adopted: remotes, keys, resolution."""
    facts = load("debian12-converged")
    one = facts["one"]
    one["remotes"] = copy.deepcopy(FRONTEND["remotes"])
    one["remotes"]["path"] = "/var/tmp/one"
    # The front-end's kvmrc, copied with the remotes.
    one["kvmrc"].update(exists=True, qemu_protocol=FRONTEND["kvmrc"]["qemu_protocol"])
    one["kvmrc"]["libvirt_uri"] = "qemu:///system"
    one["frontend"] = {"name": "fe", "addresses": ["10.89.0.2"], "loopback": False, "error": None}
    facts["names"] = resolving("h1", "h2", "fe")
    one["ssh"] = {
        **one["ssh"],
        "addresses": [ADDRESSES.get(name, "10.89.0.5")],
        "public_key": f"ssh-ed25519 KEY-OF-{name}",
        "host_keys": [f"ssh-ed25519 HOSTKEY-OF-{name}"],
        "authorized_keys": [FE_KEY, "ssh-ed25519 KEY-OF-h1", "ssh-ed25519 KEY-OF-h2"],
        "known_hosts": [
            {"patterns": ["fe", "10.89.0.2"], "key": FE_HOST_KEY, "marker": None},
            {"patterns": ["h1"], "key": "ssh-ed25519 HOSTKEY-OF-h1", "marker": None},
            {"patterns": ["h2"], "key": "ssh-ed25519 HOSTKEY-OF-h2", "marker": None},
        ],
    }
    return facts


def api(*hosts: dict[str, Any], error: str = "") -> dict[str, Any]:
    return {"endpoint": "http://fe:2633/RPC2", "hosts": list(hosts), "clusters": [], "error": error}


def registered(name: str, state: str = "MONITORED", **extra: Any) -> dict[str, Any]:
    return {
        "id": 0,
        "name": name,
        "state_name": state,
        "im_mad": "kvm",
        "vm_mad": "kvm",
        "cluster": "default",
        "cluster_id": 0,
        "error": "",
        **extra,
    }


def fleet(
    frontend: dict[str, Any] | None = None,
    *,
    inventory: dict[str, Any] | None = None,
    **hosts: dict[str, Any],
) -> dict[str, dict]:
    fe = copy.deepcopy(FRONTEND) if frontend is None else frontend
    fe.setdefault("api", api(registered("h1"), registered("h2")))
    inputs = [HostInput("fe", fe, role=Role.FRONTEND)]
    expect = Expect.from_vars({"kvmprep_frontend": "fe", **(inventory or {})})
    for i, name in enumerate(("h1", "h2")):
        facts = hosts.get(name) or node(name, i)
        inputs.append(HostInput(name, facts, expect))
    reports = evaluate_fleet(inputs)
    return {r.name: {c.control.id: c for c in r.results} for r in reports}


def statuses(rows: dict[str, dict], name: str) -> dict[str, Status]:
    return {i: rows[name][i].status for i in ONE_IDS if i in rows[name]}


# --- the front-end's row and a converged fleet --------------------------------------------------


def test_a_converged_fleet_passes_and_the_front_end_has_its_own_controls() -> None:
    rows = fleet()
    assert set(rows["fe"]) == {c.id for c in for_role(Role.FRONTEND)}
    assert set(rows["fe"]) == {
        "ONE-003", "ONE-006", "ONE-011", "FLEET-002", "NET-001", "ONE-010", "ONE-008"
    }  # fmt: skip
    assert rows["fe"]["ONE-010"].status is P, rows["fe"]["ONE-010"].message
    assert rows["fe"]["NET-001"].status is P
    assert rows["h1"]["NET-001"].status is P
    assert "ONE-003" not in rows["h1"]
    assert "ONE-011" not in rows["h1"]
    for name in ("h1", "h2"):
        assert statuses(rows, name) == dict.fromkeys(
            (
                *("USR-003", "ONE-001", "ONE-002", "ONE-004", "ONE-005", "ONE-006", "ONE-007"),
                *("ONE-009", "ONE-010"),
            ),
            P,
        ), {i: rows[name][i].message for i in ONE_IDS if i in rows[name]}
    assert rows["fe"]["ONE-003"].status is P
    assert "monitord syntax" in rows["fe"]["ONE-003"].message
    assert rows["fe"]["ONE-006"].status is P
    assert rows["fe"]["FLEET-002"].status is P
    assert rows["fe"]["ONE-011"].status is P
    assert rows["fe"]["ONE-011"].message == (
        "oned (pid 4127) started at 2026-01-01 09:55:41 UTC, after the last change of "
        "oned.conf (2026-01-01 09:55:00 UTC), monitord.conf (2026-01-01 09:55:00 UTC), "
        "vmm_exec_kvm.conf (2026-01-01 09:55:01 UTC)"
    )


def test_fleet_controls_of_kvm_hosts_do_not_count_the_front_end() -> None:
    # Distinct SMBIOS UUIDs, so that FLEET-001 counts the hosts it compared: the front-end
    # (which runs no VM) is not among them, while FLEET-002 compares it too.
    hosts = {name: node(name, i) for i, name in enumerate(("h1", "h2"))}
    for i, facts in enumerate(hosts.values()):
        facts["identity"]["dmi"][0].update(
            value=f"{i + 1:08x}-0000-4000-8000-00000000000a", error=None
        )
    rows = fleet(**hosts)
    assert "FLEET-001" not in rows["fe"]
    assert rows["h1"]["FLEET-001"].status is P
    assert rows["h1"]["FLEET-001"].message == (
        "host UUID 00000001-0000-4000-8000-00000000000a (from SMBIOS "
        "(/sys/devices/virtual/dmi/id/product_uuid)), unique among 2 host(s)"
    )
    assert rows["fe"]["FLEET-002"].status is P
    assert "on all 3 host(s)" in rows["fe"]["FLEET-002"].message


def test_fleet_002_fails_a_front_end_with_other_ids() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["accounts"]["user"]["uid"] = 1000
    rows = fleet(fe)
    assert rows["fe"]["FLEET-002"].status is F
    assert rows["h1"]["FLEET-002"].status is P


def test_without_a_front_end_the_front_end_controls_skip_with_the_reason() -> None:
    reports = evaluate_fleet([HostInput("h1", node("h1", 0))])
    row = {r.control.id: r for r in reports[0].results}
    for control in ("USR-003", "ONE-001", "ONE-002", "ONE-006"):
        assert row[control].status is S
        assert "no frontend group in the inventory" in row[control].message
    assert (row["ONE-004"].status, row["ONE-007"].status) == (P, P)
    # The front-end's own controls have no row on a KVM host (as ONE-003).
    assert "ONE-011" not in row
    assert "ONE-003" not in row


def test_an_unreachable_front_end_is_an_error_row_and_an_error_for_the_hosts() -> None:
    inputs = [
        HostInput("fe", None, error="unreachable: ssh: timeout", role=Role.FRONTEND),
        HostInput("h1", node("h1", 0)),
    ]
    fe, h1 = evaluate_fleet(inputs)
    assert fe.role is Role.FRONTEND
    assert fe.error == "unreachable: ssh: timeout"
    assert {r.status for r in fe.results} == {E}
    row = {r.control.id: r for r in h1.results}
    assert row["ONE-001"].status is E
    assert "front-end fe was not probed: unreachable" in row["ONE-001"].message


# --- ONE-001 -------------------------------------------------------------------------------------


def test_remotes_at_another_version_or_with_changed_files_fail() -> None:
    older = node("h1", 0)
    older["one"]["remotes"]["version"] = "6.10.0"
    changed = node("h2", 1)
    changed["one"]["remotes"]["files"]["vmm/kvm/deploy"] = "0" * 64
    changed["one"]["remotes"]["tree"] = "changed"
    rows = fleet(h1=older, h2=changed)
    assert rows["h1"]["ONE-001"].status is F
    assert "6.10.0, fe has 7.0.0" in rows["h1"]["ONE-001"].message
    assert rows["h2"]["ONE-001"].status is F
    assert "1 file(s) differ from fe's: vmm/kvm/deploy" in rows["h2"]["ONE-001"].message


def test_remotes_with_extra_files_only_pass_and_a_missing_dir_fails() -> None:
    extra = node("h1", 0)
    extra["one"]["remotes"]["files"]["im/status.db"] = "1" * 64
    extra["one"]["remotes"]["tree"] = "other"
    missing = node("h2", 1)
    missing["one"]["remotes"] = {**missing["one"]["remotes"], "exists": False, "version": None}
    rows = fleet(h1=extra, h2=missing)
    assert rows["h1"]["ONE-001"].status is P
    assert "im/status.db" in rows["h1"]["ONE-001"].message
    assert rows["h2"]["ONE-001"].status is F


def test_a_remote_dir_other_than_scripts_remote_dir_fails() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["scripts_remote_dir"] = "/var/lib/one-remotes"
    rows = fleet(fe)
    assert rows["h1"]["ONE-001"].status is F
    assert "kvm_host_remotes_dir: /var/lib/one-remotes" in rows["h1"]["ONE-001"].fix


# --- ONE-002 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "status", "words"),
    [
        (None, F, "has no host h1"),
        (registered("h1", "ERROR", error="Could not update remotes"), F, "ERROR: Could not"),
        (registered("h1", "DISABLED"), W, "an operator's choice"),
        (registered("h1", "INIT"), W, "not monitored yet"),
        (registered("h1", vm_mad="qemu"), F, "VM_MAD qemu, not kvm"),
        (registered("h1", cluster="other", cluster_id=100), F, "not in cluster default"),
        (registered("h1", "MONITORING_MONITORED"), P, "MONITORING_MONITORED"),
    ],
)
def test_registration_states(entry: dict | None, status: Status, words: str) -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["api"] = api(*([entry] if entry else []), registered("h2"))
    rows = fleet(fe)
    assert rows["h1"]["ONE-002"].status is status
    assert words in rows["h1"]["ONE-002"].message


def test_an_unreadable_api_is_an_error_with_the_reason() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["api"] = api(
        error="OpenNebula at http://fe:2633/RPC2 (one.hostpool.info): connection refused"
    )
    rows = fleet(fe)
    assert rows["h1"]["ONE-002"].status is E
    assert "connection refused" in rows["h1"]["ONE-002"].message


# --- ONE-003 -------------------------------------------------------------------------------------


def test_front_end_drivers_in_each_syntax() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["drivers"]["monitord.conf"]["IM_MAD"] = []
    rows = fleet(fe)
    assert rows["fe"]["ONE-003"].status is F
    assert "IM_MAD kvm in monitord.conf" in rows["fe"]["ONE-003"].message
    legacy = copy.deepcopy(FRONTEND)
    legacy["version"] = "3.0.0"
    legacy["files"]["monitord.conf"]["exists"] = False
    legacy["drivers"]["oned.conf"] = {
        "IM_MAD": [{"NAME": "im_kvm"}],
        "VM_MAD": [{"NAME": "vmm_kvm"}],
    }
    rows = fleet(legacy)
    assert rows["fe"]["ONE-003"].status is P
    assert "legacy syntax" in rows["fe"]["ONE-003"].message


# --- ONE-011 -------------------------------------------------------------------------------------

STARTED = FRONTEND["oned"]["started"]


def changed(after: dict[str, float]) -> dict[str, Any]:
    """The fixture front-end with files' mtimes set to seconds after oned started."""
    fe = copy.deepcopy(FRONTEND)
    for name, seconds in after.items():
        fe["files"][name]["mtime"] = STARTED + seconds
    return fe


def test_a_file_changed_after_oned_started_fails_with_both_times() -> None:
    result = fleet(changed({"vmm_exec_kvm.conf": 120.0, "oned.conf": 3600.0}))["fe"]["ONE-011"]
    assert result.status is F
    assert result.message == (
        "oned.conf changed at 2026-01-01 10:55:41 UTC, vmm_exec_kvm.conf changed at "
        "2026-01-01 09:57:41 UTC, after oned (pid 4127) started at 2026-01-01 09:55:41 UTC: "
        "oned runs with what they said before"
    )
    assert "monitord.conf" not in result.message
    assert result.remediation == (
        "restart OpenNebula (systemctl restart opennebula), or kvmprep apply with "
        "one_frontend_restart_oned=true"
    )
    assert result.control.severity == "high"


def test_oned_not_running_fails() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["oned"] = {"running": False, "pid": None, "started": None, "error": None}
    result = fleet(fe)["fe"]["ONE-011"]
    assert (result.status, result.message) == (F, "oned is not running")
    assert "systemctl start opennebula" in result.remediation


@pytest.mark.parametrize(
    ("after", "status"),
    [
        (-30.0, P),  # written, then OpenNebula restarted: the fixture's order
        (0.0, P),  # the same instant
        (0.99, P),  # the same second, as a whole-second btime rounds it
        (2.0, P),  # still inside the slack: btime and mtimes may each be a second off
        (2.01, F),  # past it
        (86400.0, F),
    ],
)
def test_the_same_second_does_not_flap(after: float, status: Status) -> None:
    assert fleet(changed({"vmm_exec_kvm.conf": after}))["fe"]["ONE-011"].status is status


def test_a_missing_monitord_conf_is_not_a_change_and_an_unknown_state_is_an_error() -> None:
    legacy = changed({"monitord.conf": 600.0})
    legacy["files"]["monitord.conf"].update(exists=False, mtime=None)
    result = fleet(legacy)["fe"]["ONE-011"]
    assert result.status is P
    assert "monitord.conf" not in result.message
    blind = copy.deepcopy(FRONTEND)
    blind["oned"] = {"running": None, "pid": None, "started": None, "error": "cannot read /proc"}
    result = fleet(blind)["fe"]["ONE-011"]
    assert (result.status, result.message) == (
        E,
        "whether oned runs is unknown: cannot read /proc",
    )
    older = {k: v for k, v in FRONTEND.items() if k != "oned"}
    assert fleet(older)["fe"]["ONE-011"].status is E


# --- ONE-004, ONE-005, ONE-007 -------------------------------------------------------------------


def test_runtime_emulator_and_directories_name_what_is_missing() -> None:
    broken = node("h1", 0)
    broken["one"]["runtime"]["ruby"] = {
        "path": "/usr/bin/ruby",
        "loads": False,
        "error": "cannot load such file -- sqlite3",
    }
    broken["one"]["runtime"]["tools"]["xmllint"] = None
    broken["one"]["remotes"]["owner"] = "root"
    broken["one"]["remotes"]["foreign_count"] = 1
    broken["one"]["remotes"]["foreign"] = ["vmm"]
    broken["qemu"]["emulator"]["opennebula_present"] = False
    rows = fleet(h1=broken)
    assert rows["h1"]["ONE-004"].status is F
    assert "cannot load such file -- sqlite3" in rows["h1"]["ONE-004"].message
    assert "xmllint (not found)" in rows["h1"]["ONE-004"].message
    assert rows["h1"]["ONE-005"].status is F
    assert rows["h1"]["ONE-007"].status is F
    assert "/var/tmp/one belongs to root" in rows["h1"]["ONE-007"].message


def test_package_mode_judges_the_node_packages_sudoers_file() -> None:
    host = node("h1", 0)
    package_sudoers = {
        "path": "/etc/sudoers.d/opennebula-node-kvm",
        "exists": True,
        "owner": "root",
        "mode": "0440",
    }
    host["one"]["runtime"]["sudoers"] = {
        "path": "/etc/sudoers.d/kvmprep-oneadmin",
        "exists": False,
        "error": "not found",
    }
    host["one"]["runtime"]["sudoers_package"] = package_sudoers
    manual = fleet(h1=host)["h1"]["ONE-004"]
    assert manual.status is F
    assert "kvmprep-oneadmin" in manual.message
    packaged = fleet(h1=host, inventory={"kvm_host_one_node_install": "package"})["h1"]["ONE-004"]
    assert packaged.status is P, packaged.message
    package_sudoers["mode"] = "0644"
    loose = fleet(h1=host, inventory={"kvm_host_one_node_install": "package"})["h1"]["ONE-004"]
    assert loose.status is F
    assert "opennebula-node-kvm is root 0644" in loose.message
    assert "opennebula-node-kvm" in loose.remediation


def test_a_front_end_emulator_elsewhere_warns() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["vmm_kvm"]["emulator"] = "/usr/libexec/qemu-kvm"
    rows = fleet(fe)
    assert rows["h1"]["ONE-005"].status is W


# --- USR-003 and ONE-006 -------------------------------------------------------------------------


def test_ssh_trust_names_each_missing_direction() -> None:
    lonely = node("h2", 1)
    lonely["one"]["ssh"]["authorized_keys"] = [FE_KEY]  # h1 cannot reach h2
    lonely["one"]["frontend"]["loopback"] = True
    lonely["one"]["frontend"]["addresses"] = ["127.0.1.1"]
    fe = copy.deepcopy(FRONTEND)
    fe["ssh"]["known_hosts"] = [e for e in fe["ssh"]["known_hosts"] if "h1" not in e["patterns"]]
    rows = fleet(fe, h2=lonely)
    assert rows["h1"]["USR-003"].status is F
    assert "fe's known_hosts has no entry for h1" in rows["h1"]["USR-003"].message
    assert rows["h2"]["USR-003"].status is P
    h2 = rows["h2"]["ONE-006"]
    assert h2.status is F
    assert "h1 -> h2 (h1's key not in h2's authorized_keys)" in h2.message
    assert "fe resolves to loopback on h2 (127.0.1.1)" in h2.message
    assert rows["fe"]["ONE-006"].status is F
    assert "fe -> h1" in rows["fe"]["ONE-006"].message


def test_a_stale_known_hosts_entry_is_named() -> None:
    fe = copy.deepcopy(FRONTEND)
    for entry in fe["ssh"]["known_hosts"]:
        if "h1" in entry["patterns"]:
            entry["key"] = "ssh-ed25519 OLD-KEY"
    rows = fleet(fe)
    assert "a stale entry for h1" in rows["h1"]["USR-003"].message


def test_known_hosts_matching_hashed_wildcards_and_negation() -> None:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"h1", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    assert name_matches([hashed], "h1")
    assert not name_matches([hashed], "h2")
    assert name_matches(["*.lab", "h9"], "h1.lab")
    assert not name_matches(["*.lab", "!h1.lab"], "h1.lab")
    entries = [{"patterns": ["h1"], "key": "k1", "marker": None}]
    assert known_under(entries, "h1", ["k1"]) == "ok"
    assert known_under(entries, "h1", ["k2"]) == "stale"
    assert known_under(entries, "h2", ["k1"]) == "unknown"
    revoked = [{"patterns": ["h1"], "key": "k1", "marker": "@revoked"}]
    assert known_under(revoked + entries, "h1", ["k1"]) == "stale"


# --- the probes' parsing -------------------------------------------------------------------------


def test_authorized_keys_and_known_hosts_parsing() -> None:
    text = (
        "# comment\n"
        'from="10.0.0.0/8",command="echo hi there" ssh-ed25519 AAAA1 oneadmin@fe\n'
        "ssh-rsa AAAA2\n"
        "ssh-rsa AAAA2 repeated\n"
    )
    assert oneadmin.parse_authorized_keys(text) == ["ssh-ed25519 AAAA1", "ssh-rsa AAAA2"]
    known = oneadmin.parse_known_hosts(
        "fe,10.89.0.2 ssh-ed25519 AAAA3\n@revoked h1 ssh-rsa AAAA4\n"
        "|1|x|y ecdsa-sha2-nistp256 AA5\n"
    )
    assert known == [
        {"patterns": ["fe", "10.89.0.2"], "key": "ssh-ed25519 AAAA3", "marker": None},
        {"patterns": ["h1"], "key": "ssh-rsa AAAA4", "marker": "@revoked"},
        {"patterns": ["|1|x|y"], "key": "ecdsa-sha2-nistp256 AA5", "marker": None},
    ]


def _tree(root: Path) -> None:
    (root / "vmm" / "kvm").mkdir(parents=True)
    (root / "VERSION").write_text("7.0.0\n")
    (root / "vmm" / "kvm" / "deploy").write_text("#!/bin/sh\n")
    (root / "vmm" / "deploy-link").symlink_to("kvm/deploy")


def test_remotes_digest_follows_links_like_rsync_and_is_stable(tmp_path: Path) -> None:
    me = __import__("pwd").getpwuid(os.geteuid()).pw_name
    _tree(tmp_path / "a")
    found = oneadmin.remotes_digest(str(tmp_path / "a"), me)
    assert found["version"] == "7.0.0"
    assert set(found["files"]) == {"VERSION", "vmm/kvm/deploy", "vmm/deploy-link"}
    assert found["files"]["vmm/deploy-link"] == found["files"]["vmm/kvm/deploy"]
    assert found["foreign_count"] == 0
    # The copy rsync -L makes (the link as a file) has the same tree hash.
    (tmp_path / "b" / "vmm" / "kvm").mkdir(parents=True)
    (tmp_path / "b" / "VERSION").write_text("7.0.0\n")
    (tmp_path / "b" / "vmm" / "kvm" / "deploy").write_text("#!/bin/sh\n")
    (tmp_path / "b" / "vmm" / "deploy-link").write_text("#!/bin/sh\n")
    assert oneadmin.remotes_digest(str(tmp_path / "b"), me)["tree"] == found["tree"]
    other = oneadmin.remotes_digest(str(tmp_path / "a"), "nobody-else")
    assert other["foreign_count"] == 5
    assert other["owner"] == me
    assert oneadmin.remotes_digest(str(tmp_path / "none"), me)["exists"] is False


def test_front_end_probe_reads_the_lab_files(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "vmm_exec").mkdir(parents=True)
    (etc / "oned.conf").write_text((ONE / "oned-current.conf").read_text())
    (etc / "monitord.conf").write_text((ONE / "monitord.conf").read_text())
    (etc / "vmm_exec" / "vmm_exec_kvm.conf").write_text(
        (ONE / "vmm_exec_kvm.conf").read_text() + '\nOS = [ MACHINE = "pc-q35-7.2" ]\n'
    )
    remotes = tmp_path / "remotes"
    _tree(remotes)
    (remotes / "etc" / "vmm" / "kvm").mkdir(parents=True)
    (remotes / "etc" / "vmm" / "kvm" / "kvmrc").write_text((ONE / "kvmrc").read_text())
    found = probe_fe.gather("nobody", str(etc), str(remotes), lambda argv: (1, "", ""))
    assert found["version"] == "7.0.0"
    assert found["files"]["oned.conf"] == {
        "path": str(etc / "oned.conf"),
        "exists": True,
        "mtime": (etc / "oned.conf").stat().st_mtime,
        "error": None,
    }
    assert set(found["drivers"]["oned.conf"]) == {"IM_MAD", "VM_MAD"}
    assert found["vmm_kvm"]["machine"] == "pc-q35-7.2"
    assert found["kvmrc"]["qemu_protocol"] is not None
    assert found["remotes"]["version"] == "7.0.0"
    assert found["accounts"]["user"]["name"] == "nobody"


def test_front_end_probe_reports_a_broken_file_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "oned.conf").write_text('VM_MAD = [ NAME = "kvm"\n')
    found = probe_fe.gather("nobody", str(tmp_path), str(tmp_path / "r"), lambda a: (1, "", ""))
    assert "not closed" in found["files"]["oned.conf"]["error"]
    assert found["version"] is None
    assert found["drivers"]["oned.conf"] == {"IM_MAD": [], "VM_MAD": []}


def test_front_end_probe_reports_each_files_mtime_and_none_for_a_missing_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "oned.conf").write_text('VM_MAD = [ NAME = "kvm" ]\n')
    os.utime(tmp_path / "oned.conf", (1700000000.25, 1700000000.25))
    found = probe_fe.gather("nobody", str(tmp_path), str(tmp_path / "r"), lambda a: (1, "", ""))
    assert found["files"]["oned.conf"]["mtime"] == 1700000000.25
    assert found["files"]["monitord.conf"] == {
        "path": str(tmp_path / "monitord.conf"),
        "exists": False,
        "mtime": None,
        "error": None,
    }
    assert found["files"]["vmm_exec_kvm.conf"]["mtime"] is None
    assert set(found["oned"]) == {"running", "pid", "started", "error"}


@pytest.mark.ansible
def test_front_end_probe_through_ansible_on_this_machine(tmp_path: Path) -> None:
    """The module as the front-end runs it (AnsiballZ, /usr/bin/python3): the new facts
    arrive, and oned's absence or a missing file is reported, never a failure."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "oned.conf").write_text((ONE / "oned-current.conf").read_text())
    os.utime(etc / "oned.conf", (1700000000.5, 1700000000.5))
    me = __import__("pwd").getpwuid(os.geteuid()).pw_name
    result = run_module_locally(
        tmp_path,
        "kvmprep.kvm.one_frontend_probe",
        {"user": me, "etc_dir": str(etc), "remotes_dir": str(tmp_path / "remotes")},
        "--check",
    )
    assert result.get("failed") is not True, result
    probe = result["probe"]
    assert probe["files"]["oned.conf"]["mtime"] == 1700000000.5
    assert probe["files"]["monitord.conf"]["mtime"] is None
    assert probe["files"]["vmm_exec_kvm.conf"]["exists"] is False
    oned = probe["oned"]
    # The machine may run the lab's oned: whichever, the answer is consistent.
    assert oned["error"] is None
    assert oned["running"] in (True, False)
    assert (oned["pid"] is None) is (not oned["running"])
    if oned["running"]:
        assert 0 < oned["started"] <= time.time() + 1
    else:
        assert oned["started"] is None


def test_front_end_probe_documentation_is_valid_yaml() -> None:
    returned = yaml.safe_load(probe_fe.RETURN)["probe"]["description"]
    assert any("C(oned)" in line and "C(started)" in line for line in returned)
    assert yaml.safe_load(probe_fe.DOCUMENTATION)["module"] == "one_frontend_probe"


def _proc(root: Path, *pids: int) -> Path:
    """A /proc with only the given processes of the real one (and its stat, for btime): the
    machine may run an oned of its own (the lab's front-end) that the test must not see."""
    root.mkdir()
    (root / "stat").symlink_to("/proc/stat")
    for pid in pids:
        (root / str(pid)).symlink_to(f"/proc/{pid}")
    return root


def test_front_end_probe_finds_a_real_oned_and_when_it_started(tmp_path: Path) -> None:
    # A real process whose name the kernel reports as oned: sleep, run under that name.
    binary = tmp_path / "oned"
    binary.symlink_to(shutil.which("sleep") or "/bin/sleep")
    before = time.time()
    oned = subprocess.Popen([str(binary), "30"])
    try:
        # Popen returns when the exec closed its pipe, which the kernel does before it renames
        # the process: wait for the name.
        comm = Path(f"/proc/{oned.pid}/comm")
        deadline = time.monotonic() + 5
        while comm.read_text().strip() != "oned" and time.monotonic() < deadline:
            time.sleep(0.01)
        found = probe_fe.oned_state(str(_proc(tmp_path / "proc", oned.pid, os.getpid())))
    finally:
        oned.kill()
        oned.wait()
    assert (found["running"], found["pid"], found["error"]) == (True, oned.pid, None)
    # btime has whole seconds: the start time may read up to a second early.
    assert before - 1.5 <= found["started"] <= time.time() + 0.5


def test_front_end_probe_says_oned_is_not_running_and_why_it_cannot_tell(
    tmp_path: Path,
) -> None:
    found = probe_fe.oned_state(str(_proc(tmp_path / "proc", os.getpid())))
    assert found == {"running": False, "pid": None, "started": None, "error": None}
    found = probe_fe.oned_state(str(tmp_path / "no-proc"))
    assert found["running"] is None
    assert "cannot read" in found["error"]


# --- the check flow with a front-end -------------------------------------------------------------


def _run(tasks: dict[str, dict[str, Any]], unreachable: tuple[str, ...] = ()) -> runner.RunResult:
    hosts = tuple(
        runner.HostState(
            n, unreachable=int(n in unreachable), message="timeout" if n in unreachable else None
        )
        for n in ("fe", "h1", "h2")
    )
    return runner.RunResult(
        hosts=hosts, artifact_dir=Path("/nonexistent"), runner_status="successful", rc=0,
        task_results=tasks,
    )  # fmt: skip


def _host_task(name: str) -> dict[str, Any]:
    return {
        check.PROBE_TASK: {
            "probe": node(name, 0),
            "expect": {"kvmprep_frontend": "fe", "one_frontend_cluster": "default"},
        }
    }


def test_host_inputs_make_a_front_end_row_and_feed_its_vm_defaults() -> None:
    fe = {k: v for k, v in FRONTEND.items() if k != "api"}
    tasks = {
        "fe": {
            check.FRONTEND_TASK: {"probe": fe},
            check.API_TASK: {"msg": api(registered("h1"), registered("h2"))},
        },
        "h1": _host_task("h1"),
        "h2": _host_task("h2"),
    }
    inputs = check.host_inputs(_run(tasks))
    assert [(i.name, i.role) for i in inputs] == [
        ("fe", Role.FRONTEND),
        ("h1", Role.KVM_HOST),
        ("h2", Role.KVM_HOST),
    ]
    assert inputs[0].facts["api"]["hosts"][0]["name"] == "h1"
    assert inputs[1].vmm.machine == FRONTEND["vmm_kvm"]["machine"]
    assert inputs[1].vmm.source == "vmm_exec_kvm.conf on fe"
    assert inputs[1].vmm.not_loaded == ""
    reports = evaluate_fleet(inputs)
    assert check.exit_status(reports) == 0, [
        (r.name, c.control.id, c.message) for r in reports for c in r.results if c.status != P
    ]


def _fleet_003(fe: dict[str, Any]) -> tuple[list[HostInput], dict[str, dict]]:
    tasks = {
        "fe": {check.FRONTEND_TASK: {"probe": fe}, check.API_TASK: {"msg": FRONTEND_API}},
        "h1": _host_task("h1"),
        "h2": _host_task("h2"),
    }
    inputs = check.host_inputs(_run(tasks))
    reports = evaluate_fleet(inputs)
    return inputs, {r.name: {c.control.id: c for c in r.results} for r in reports}


FRONTEND_API = api(registered("h1"), registered("h2"))


def test_fleet_003_does_not_pass_on_a_file_oned_has_not_read() -> None:
    """apply set OS MACHINE to what every host runs, OpenNebula was not restarted: VMs still
    get the old machine type, so the file's value must not make FLEET-003 pass."""
    _inputs, loaded = _fleet_003(copy.deepcopy(FRONTEND))
    assert loaded["h1"]["FLEET-003"].status is P
    inputs, rows = _fleet_003(changed({"vmm_exec_kvm.conf": 300.0}))
    assert inputs[1].vmm.not_loaded == (
        "vmm_exec_kvm.conf changed at 2026-01-01 10:00:41 UTC, after oned started at "
        "2026-01-01 09:55:41 UTC"
    )
    for name in ("h1", "h2"):
        result = rows[name]["FLEET-003"]
        assert result.status is F
        assert result.message == (
            "vmm_exec_kvm.conf on fe says OS MACHINE pc-q35-7.2, but that is not what oned "
            "uses until it is restarted (vmm_exec_kvm.conf changed at 2026-01-01 10:00:41 UTC, "
            "after oned started at 2026-01-01 09:55:41 UTC): VMs get what it read at start"
        )
        assert "systemctl restart opennebula" in result.remediation
    assert rows["fe"]["ONE-011"].status is F
    # Another file changed (oned.conf): vmm_exec_kvm.conf was read, FLEET-003 is unchanged.
    _inputs, other = _fleet_003(changed({"oned.conf": 300.0}))
    assert other["h1"]["FLEET-003"].status is P
    assert other["fe"]["ONE-011"].status is F


def test_fleet_003_does_not_pass_while_oned_is_not_running() -> None:
    fe = copy.deepcopy(FRONTEND)
    fe["oned"] = {"running": False, "pid": None, "started": None, "error": None}
    inputs, rows = _fleet_003(fe)
    assert inputs[1].vmm.not_loaded == "oned is not running"
    assert rows["h1"]["FLEET-003"].status is F
    assert "(oned is not running)" in rows["h1"]["FLEET-003"].message
    # A probe that could not tell leaves FLEET-003 to the file; ONE-011 is the ERROR.
    fe["oned"] = {"running": None, "pid": None, "started": None, "error": "cannot read /proc"}
    inputs, rows = _fleet_003(fe)
    assert inputs[1].vmm.not_loaded == ""
    assert rows["h1"]["FLEET-003"].status is P
    assert rows["fe"]["ONE-011"].status is E


def test_an_unreachable_front_end_is_its_own_error_row() -> None:
    tasks = {"h1": _host_task("h1"), "h2": _host_task("h2")}
    inputs = check.host_inputs(_run(tasks, unreachable=("fe",)))
    assert (inputs[0].name, inputs[0].role, inputs[0].error) == (
        "fe",
        Role.FRONTEND,
        "unreachable: timeout",
    )
    reports = evaluate_fleet(inputs)
    assert check.exit_status(reports) == 3


def test_catalog_lists_who_each_control_applies_to() -> None:
    rows = {c.id: c.as_dict() for c in CATALOG}
    assert rows["ONE-003"]["applies_to"] == "frontend"
    assert rows["ONE-006"]["applies_to"] == "kvm_host,frontend"
    assert rows["KVM-001"]["applies_to"] == "kvm_host"


# --- ONE-002's query, through pyone against the oned test double ---------------------------------


def test_state_query_returns_every_host_and_cluster() -> None:
    with start(users={"oneadmin": "pw"}, interval=0.1) as one:
        params = {key: spec.get("default") for key, spec in ofh.ARGUMENT_SPEC.items()}
        params.update(endpoint=one.url, session="oneadmin:pw", name="h1", wait_monitored=5)
        failed, _result, _ = ofh.run(params)
        assert not failed
        params.update(state="query", name=None)
        failed, result, _ = ofh.run(params)
    assert not failed
    assert [(h["name"], h["im_mad"], h["vm_mad"]) for h in result["hosts"]] == [
        ("h1", "kvm", "kvm")
    ]
    assert result["hosts"][0]["state_name"] == "MONITORED"
    assert {"id": 0, "name": "default"} in result["clusters"]


def test_state_query_against_nothing_fails_with_a_reason_and_no_secret() -> None:
    params = {key: spec.get("default") for key, spec in ofh.ARGUMENT_SPEC.items()}
    params.update(
        endpoint="http://127.0.0.1:9/RPC2", session="oneadmin:S3cret-x", state="query", timeout=2
    )
    failed, result, _ = ofh.run(params)
    assert failed
    assert "connection refused" in result["msg"]
    assert "S3cret" not in json.dumps(result)
