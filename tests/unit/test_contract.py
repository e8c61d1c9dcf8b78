"""The contract between check and apply: a host check calls compliant is one apply leaves alone,
and the reverse.

apply's side is what the role itself decides: for each facts fixture (and each drift made from
the converged one), ansible-playbook runs the role's plan (tasks/plan.yml, the kvm_host_plan
action plugin) on the fixture as the probe's result and templates the role's decision
variables (vars/main.yml) exactly as apply's tasks read them. check's side is kvmprep's
controls on the same facts. The concerns compared: /dev/kvm (KVM-003), oneadmin (USR-001,
USR-002), libvirt's units (LV-003, and LV-005's listener unit), libvirt's configuration files
(LV-001, LV-002, LV-004's access keys, LV-005's listener keys, LV-007's --listen), kvmprep's
AppArmor block (AA-001).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible_env import ansible_env
from conftest import FIXTURES

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import evaluate_host
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Status

FACTS = FIXTURES / "facts"
CONTROLS = ("KVM-003", "USR-001", "USR-002", "LV-001", "LV-002", "LV-003", "LV-007", "AA-001")
# Controls that also judge what apply cannot change (a daemon not running, no listener yet):
# their part of the contract is whether they name a change apply would make.
WOULD_CHANGE = ("LV-004", "LV-005")


def _load(name: str) -> dict[str, Any]:
    return json.loads((FACTS / f"{name}.json").read_text())


def _units(facts: dict[str, Any]) -> dict[str, Any]:
    return facts["libvirt"]["units"]


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(facts: dict[str, Any]) -> None:
        node = facts
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _unit(unit: str, **states: Any) -> Callable[[dict[str, Any]], None]:
    return lambda facts: _units(facts)[unit].update(states)


def _conf(name: str, **keys: Any) -> Callable[[dict[str, Any]], None]:
    return lambda facts: facts["config"][name]["keys"].update(keys)


def _leave_group(group: str) -> Callable[[dict[str, Any]], None]:
    def change(facts: dict[str, Any]) -> None:
        facts["accounts"]["user_groups"].remove(group)

    return change


# Drifts an operator meets (the lab's drift list and more), each made on a converged host.
DRIFTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "dev-kvm-mode-0600": _set(("kvm", "dev_kvm", "mode"), "0600"),
    "dev-kvm-group-root": _set(("kvm", "dev_kvm", "group"), "root"),
    "dev-kvm-owner": _set(("kvm", "dev_kvm", "owner"), "oneadmin"),
    "oneadmin-not-in-kvm": _leave_group("kvm"),
    "oneadmin-not-in-libvirt": _leave_group("libvirt"),
    "oneadmin-uid": _set(("accounts", "user", "uid"), 1000),
    "oneadmin-shell": _set(("accounts", "user", "shell"), "/usr/sbin/nologin"),
    "oneadmin-home-owner": _set(("accounts", "home", "owner"), "root"),
    "socket-disabled": _unit("libvirtd.socket", enabled="disabled", active="inactive"),
    "ro-socket-stopped": _unit("libvirtd-ro.socket", active="inactive"),
    "admin-socket-disabled": _unit("libvirtd-admin.socket", enabled="disabled"),
    "service-masked": _unit("libvirtd.service", enabled="masked"),
    "tcp-socket-disabled": _unit("libvirtd-tcp.socket", enabled="disabled", active="inactive"),
    "tls-socket-started": _unit("libvirtd-tls.socket", enabled="enabled", active="active"),
    "apparmor-block-gone": _set(
        ("blocks", "/etc/apparmor.d/local/abstractions/libvirt-qemu", "present"), False
    ),
    "apparmor-block-mode": _set(
        ("blocks", "/etc/apparmor.d/local/abstractions/libvirt-qemu", "mode"), "0666"
    ),
    "qemu-dynamic-ownership": _conf("qemu.conf", dynamic_ownership=1),
    "qemu-user-root": _conf("qemu.conf", user="root"),
    "auth-tcp-none": _conf("libvirtd.conf", auth_tcp="none"),
    "socket-group-root": _conf("libvirtd.conf", unix_sock_group="root"),
    "auth-unix-rw-polkit": _conf("libvirtd.conf", auth_unix_rw="polkit"),
    "listen-on-socket-activation": _set(("libvirt", "defaults_args"), "--listen"),
    "modular-daemon-too": _unit(
        "virtqemud.socket", present=True, enabled="enabled", active="active"
    ),
}

# Changes made on a converged host that are no drift: neither side may call them one.
NOT_DRIFTS: dict[str, Callable[[dict[str, Any]], None]] = {
    # Ignored under socket activation (systemd owns the sockets): not apply's to change.
    "listen-tcp-on-socket-host": _conf("libvirtd.conf", listen_tcp=1),
    # A key apply does not set.
    "qemu-other-key": _conf("qemu.conf", max_files=8192),
}


# Gathered without root (a local audit by a user): apply always runs as root, so its view of
# /dev/kvm is not this one.
NOT_APPLY_VIEWS = frozenset({"debian12-unprivileged"})


def _cases() -> dict[str, dict[str, Any]]:
    cases = {
        path.stem: _load(path.stem)
        for path in sorted(FACTS.glob("*.json"))
        if path.stem not in NOT_APPLY_VIEWS
    }
    for prefix, changes in (("drift", DRIFTS), ("same", NOT_DRIFTS)):
        for name, change in changes.items():
            facts = copy.deepcopy(cases["debian12-converged"])
            change(facts)
            cases[f"{prefix}-{name}"] = facts
    return cases


PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Plan as apply does
      ansible.builtin.include_role:
        name: kvmprep.kvm.kvm_host
        tasks_from: plan
        public: true
      vars:
        __kvm_host_probe: {probe: "{{ fixture }}"}
        __kvm_host_libvirt_group: libvirt
        __kvm_host_packages: []
        __kvm_host_emulator: /usr/bin/qemu-system-x86_64
        __kvm_host_defaults_file: /etc/default/libvirtd
        __kvm_host_defaults_key: LIBVIRTD_ARGS
    - name: What apply decides
      ansible.builtin.debug:
        msg:
          kvm_device: "{{ __kvm_host_kvm_device_todo }}"
          accounts: "{{ __kvm_host_accounts_todo }}"
          home: "{{ __kvm_host_plan.plan.accounts.home }}"
          units: >-
            {{ __kvm_host_units_to_mask + __kvm_host_units_to_unmask + __kvm_host_units_to_enable
               + __kvm_host_units_to_disable + __kvm_host_units_to_start }}
          listener_todo: "{{ __kvm_host_listener_todo }}"
          apparmor: "{{ __kvm_host_apparmor_todo }}"
          config: "{{ __kvm_host_plan.plan.config.todo }}"
      vars:
        __kvm_host_probe: {probe: "{{ fixture }}"}
        __kvm_host_libvirt_group: libvirt
"""


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """apply's decisions per case, from one ansible-playbook run over every case."""
    tmp = tmp_path_factory.mktemp("contract")
    cases = _cases()
    inventory = {
        "all": {
            "hosts": {
                name: {"ansible_connection": "local", "fixture": facts}
                for name, facts in cases.items()
            }
        }
    }
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    (tmp / "play.yml").write_text(PLAYBOOK)
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None
    proc = subprocess.run(
        [playbook, "-i", str(tmp / "inventory.json"), str(tmp / "play.yml"), "-f", "8"],
        cwd=tmp,
        env=ansible_env(tmp, ANSIBLE_PYTHON_INTERPRETER=sys.executable),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    document = json.loads(proc.stdout[proc.stdout.index("{") :])
    found: dict[str, dict[str, Any]] = {}
    for task in document["plays"][0]["tasks"]:
        if task["task"]["name"] == "What apply decides":
            found = {host: result["msg"] for host, result in task["hosts"].items()}
    assert set(found) == set(cases)
    return found


def _apply_has_work(decision: dict[str, Any]) -> bool:
    return bool(
        decision["kvm_device"]
        or decision["accounts"]
        or decision["home"]
        or decision["units"]
        or decision["listener_todo"]
        or decision["apparmor"]
        or decision["config"]
    )


def _check_compliant(facts: dict[str, Any]) -> tuple[bool, dict[str, str]]:
    report = evaluate_host("h", facts, Expect())
    results = {r.control.id: r for r in report.results}
    # SKIP is compliant: the control does not apply to the host (AppArmor not in the kernel).
    ok = all(results[c].status in (Status.PASS, Status.SKIP) for c in CONTROLS) and not any(
        "apply would change" in results[c].message for c in WOULD_CHANGE
    )
    return ok, {c: f"{results[c].status}: {results[c].message}" for c in (*CONTROLS, *WOULD_CHANGE)}


@pytest.mark.ansible
@pytest.mark.parametrize("case", sorted(_cases()))
def test_check_is_compliant_exactly_when_apply_has_nothing_to_do(
    case: str, decisions: dict[str, dict[str, Any]]
) -> None:
    compliant, verdicts = _check_compliant(_cases()[case])
    assert compliant is not _apply_has_work(decisions[case]), (decisions[case], verdicts)


@pytest.mark.ansible
def test_the_contract_sees_drift(decisions: dict[str, dict[str, Any]]) -> None:
    # Every drift is work for apply, and the converged fixtures are none: the contract above
    # compares real verdicts, not two sides that are always false.
    for name in DRIFTS:
        assert _apply_has_work(decisions[f"drift-{name}"]), name
    for name in ("debian12-converged", "debian13-converged", "el9-modular", *NOT_DRIFTS):
        name = name if name in decisions else f"same-{name}"
        assert not _apply_has_work(decisions[name]), (name, decisions[name])
