"""module_utils/kvm_host_judge.py: the decisions apply and check share, on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from conftest import FIXTURES, REPO_ROOT

from kvmprep.controls.model import Expect
from kvmprep.judge import judge

J = judge()
SETTINGS = Expect().settings()


def _facts(name: str = "debian12-converged") -> dict[str, Any]:
    return json.loads((FIXTURES / "facts" / f"{name}.json").read_text())


def _unit(present: bool = True, enabled: str = "enabled", active: str = "active") -> dict:
    return {"present": present, "enabled": enabled, "active": active}


def test_the_judge_imports_without_ansible() -> None:
    # Pure standard library: the CLI and any controller-side caller can use it.
    code = (
        "import sys, importlib.util, types\n"
        "sys.modules['ansible'] = None\n"
        f"d = {str(REPO_ROOT / 'roles/kvm_host/module_utils')!r}\n"
        "pkg = types.ModuleType('p'); pkg.__path__ = [d]; sys.modules['p'] = pkg\n"
        "import p.kvm_host_judge as j\n"
        "print(j.LAYOUTS['modular']['service'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "virtqemud.service"


def test_settings_need_every_value_and_refuse_wrong_types() -> None:
    values = {
        f"kvm_host_{name}": getattr(SETTINGS, name) for name in J.Settings.__dataclass_fields__
    }
    assert J.Settings.from_vars(values) == SETTINGS
    with pytest.raises(ValueError, match="kvm_host_oneadmin_uid: 'x' is not an integer"):
        J.Settings.from_vars({**values, "kvm_host_oneadmin_uid": "x"})
    missing = {k: v for k, v in values.items() if k != "kvm_host_migration_transport"}
    with pytest.raises(ValueError, match="kvm_host_migration_transport: not set"):
        J.Settings.from_vars(missing)


def test_converged_fixtures_need_nothing() -> None:
    for name in ("debian12-converged", "debian13-converged", "el9-modular"):
        plan = J.plan(_facts(name), SETTINGS, libvirt_group_name="libvirt")
        assert J.converged(plan["changes"]), (name, plan["changes"])


def test_modular_layout_runs_all_three_of_its_sockets() -> None:
    facts = _facts("el9-modular")
    facts["libvirt"]["units"]["virtqemud-admin.socket"] = _unit(active="inactive")
    plan = J.units(facts["libvirt"], SETTINGS)
    assert plan.layout == "modular"
    assert plan.to_start == ["virtqemud-admin.socket"]
    assert plan.to_enable == []
    # A unit the probe did not report is never taken as converged.
    del facts["libvirt"]["units"]["virtqemud-ro.socket"]
    plan = J.units(facts["libvirt"], SETTINGS)
    assert "virtqemud-ro.socket" in plan.to_enable
    assert "virtqemud-ro.socket" in plan.to_start


def test_classic_layout_masks_every_libvirtd_socket_and_runs_the_service() -> None:
    facts = _facts()
    settings = replace(SETTINGS, libvirt_layout="classic")
    plan = J.units(facts["libvirt"], settings)
    present = [u for u in J.LIBVIRTD_SOCKETS if facts["libvirt"]["units"][u]["present"]]
    assert plan.to_mask == present
    assert plan.to_start == []  # libvirtd.service is active in the fixture
    for unit in present:
        facts["libvirt"]["units"][unit].update(enabled="masked", active="inactive")
    assert J.units(facts["libvirt"], settings).changes == []


def test_socket_layout_unmasks_enables_and_starts() -> None:
    facts = _facts()
    units = facts["libvirt"]["units"]
    units["libvirtd.socket"].update(enabled="masked", active="inactive")
    units["libvirtd.service"].update(enabled="masked")
    plan = J.units(facts["libvirt"], SETTINGS)
    assert plan.to_unmask == ["libvirtd.socket", "libvirtd.service"]
    assert plan.to_enable == ["libvirtd.service", "libvirtd.socket"]
    assert plan.to_start == ["libvirtd.socket"]


def test_the_other_transport_listener_is_stopped_and_disabled() -> None:
    facts = _facts()
    facts["libvirt"]["units"]["libvirtd-tls.socket"].update(enabled="enabled", active="active")
    plan = J.units(facts["libvirt"], SETTINGS)
    assert plan.to_disable == ["libvirtd-tls.socket"]
    tls = J.units(facts["libvirt"], replace(SETTINGS, migration_transport="tls"))
    assert tls.to_disable == ["libvirtd-tcp.socket"]
    assert tls.to_enable == tls.to_start == []


def test_no_units_are_decided_without_systemd_or_while_packages_are_pending() -> None:
    facts = _facts()
    facts["libvirt"]["units"]["libvirtd.socket"].update(enabled="disabled", active="inactive")
    assert J.units(facts["libvirt"], SETTINGS, managed=False).changes == []
    facts["libvirt"]["systemd"] = False
    assert J.units(facts["libvirt"], SETTINGS).changes == []


def test_static_units_count_as_enabled() -> None:
    # systemctl cannot enable a unit without an [Install] section: apply must not try forever.
    facts = _facts()
    facts["libvirt"]["units"]["libvirtd.service"]["enabled"] = "static"
    assert J.units(facts["libvirt"], SETTINGS).to_enable == []


def test_accounts_plan_task_by_task() -> None:
    accounts = _facts()["accounts"]
    plan = J.accounts(accounts, SETTINGS)
    assert (plan.kvm_group, plan.oneadmin_group, plan.oneadmin, plan.home) == (
        False,
        False,
        [],
        [],
    )
    assert plan.groups == ["kvm", "libvirt"]
    accounts["user_groups"].remove("libvirt")
    accounts["user"]["shell"] = "/bin/sh"
    plan = J.accounts(accounts, SETTINGS)
    assert plan.oneadmin == ["oneadmin shell /bin/sh -> /bin/bash", "oneadmin added to libvirt"]
    # Check mode before the packages: the libvirt group does not exist yet, it is not asked for.
    assert J.accounts(accounts, SETTINGS, pending=True).groups == ["kvm"]
    accounts["user"] = None
    assert J.accounts(accounts, SETTINGS).oneadmin == ["user oneadmin created"]


def test_plan_is_plain_data() -> None:
    plan = J.plan(_facts(), SETTINGS)
    assert json.loads(json.dumps(plan)) == plan
    assert plan["units"]["daemon"]["service"] == "libvirtd.service"
