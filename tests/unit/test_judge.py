"""module_utils/kvm_host_judge.py: the decisions apply and check share, on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from conftest import FIXTURES, REPO_ROOT

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect
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
        f"d = {str(REPO_ROOT / 'plugins/module_utils')!r}\n"
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


# --- libvirt's configuration files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "changes", "expected"),
    [
        (
            "classic",
            {"libvirt_listen_addr": "192.0.2.10"},
            {"auth_tcp": "sasl", "listen_tcp": 1, "listen_tls": 0, "listen_addr": "192.0.2.10"},
        ),
        (
            "socket",
            {
                "migration_transport": "tls",
                "libvirt_tls_allowed_dn_list": ("CN=kvm1", "CN=kvm2"),
                "libvirt_listen_addr": "192.0.2.10",  # the socket unit's drop-in binds it
            },
            {"auth_tls": "none", "tls_allowed_dn_list": ["CN=kvm1", "CN=kvm2"]},
        ),
        ("socket", {}, {"auth_tcp": "sasl"}),
        ("classic", {"migration_transport": "ssh"}, {"listen_tcp": 0, "listen_tls": 0}),
    ],
)
def test_the_listener_settings_bind_the_address_and_narrow_tls(
    layout: str, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert J.listener_settings(replace(SETTINGS, **changes), layout) == expected


def test_config_edits_per_layout() -> None:
    libvirt = {"defaults_file": None}
    socket = J.config_edits(SETTINGS, "socket", libvirt, "libvirt", "/etc/default/libvirtd")
    # No defaults file found and no --listen wanted: the file is left alone.
    assert [e["path"] for e in socket] == ["/etc/libvirt/qemu.conf", "/etc/libvirt/libvirtd.conf"]
    assert socket[1]["settings"] == {
        "unix_sock_rw_perms": "0770",
        "auth_unix_rw": "none",
        "unix_sock_group": "libvirt",
        "auth_tcp": "sasl",
    }
    modular = J.config_edits(SETTINGS, "modular", libvirt, "libvirt")
    assert [(e["path"], sorted(e["settings"])) for e in modular[1:]] == [
        ("/etc/libvirt/virtqemud.conf", ["auth_unix_rw", "unix_sock_group", "unix_sock_rw_perms"]),
        ("/etc/libvirt/virtproxyd.conf", ["auth_tcp"]),
    ]
    classic = J.config_edits(SETTINGS, "classic", libvirt, "libvirt", "/etc/sysconfig/libvirtd")
    assert classic[-1] == {
        "path": "/etc/sysconfig/libvirtd",
        "style": "shell",
        "settings": {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}},
        "create": True,
        "backup": True,
    }
    # The file the probe found wins, with that file's variable.
    found = J.config_edits(
        SETTINGS, "socket", {"defaults_file": "/etc/default/libvirt-bin"}, "libvirt"
    )
    assert found[-1]["settings"] == {"libvirtd_opts": {"remove_words": ["--listen", "-l"]}}
    assert found[-1]["create"] is False
    # Package mode gives the socket to oneadmin's group, as the node package's postinst does.
    package = replace(SETTINGS, one_node_install="package")
    assert (
        J.config_edits(package, "socket", libvirt, "libvirt")[1]["settings"]["unix_sock_group"]
        == "oneadmin"
    )
    extra = replace(SETTINGS, qemu_conf_extra={"max_files": 4096, "dynamic_ownership": 0})
    assert J.config_edits(extra, "socket", libvirt)[0]["settings"]["max_files"] == 4096


def test_config_changes_name_file_key_and_values() -> None:
    facts = _facts()
    edits = J.config_edits(SETTINGS, "socket", facts["libvirt"], "libvirt")
    assert J.config(facts["config"], facts["libvirt"], edits) == []
    facts["config"]["qemu.conf"]["keys"].update(dynamic_ownership=1, user="root")
    facts["config"]["qemu.conf"]["invalid"] = ["group"]
    del facts["config"]["libvirtd.conf"]["keys"]["auth_tcp"]
    facts["libvirt"]["defaults_args"] = "--timeout 120 --listen"
    sentences = [s for _path, _key, s in J.config(facts["config"], facts["libvirt"], edits)]
    assert sentences == [
        "qemu.conf: dynamic_ownership 1 -> 0",
        'qemu.conf: user "root" -> "oneadmin"',
        'qemu.conf: group does not parse -> "oneadmin"',
        'libvirtd.conf: auth_tcp not set -> "sasl"',
        "/etc/default/libvirtd: LIBVIRTD_ARGS --listen removed",
    ]
    # A file the probe could not read is all change: kvm_host_conf decides on the host.
    facts["config"]["libvirtd.conf"].update(keys=None, error="Permission denied")
    unread = J.config(facts["config"], facts["libvirt"], edits)
    assert ("/etc/libvirt/libvirtd.conf", "auth_unix_rw") in [(p, k) for p, k, _s in unread]


def test_the_plan_runs_kvm_host_conf_only_when_a_file_differs() -> None:
    facts = _facts()
    plan = J.plan(facts, SETTINGS, "libvirt", defaults_file="/etc/default/libvirtd")
    assert plan["config"]["todo"] is False
    assert plan["config"]["socket_group"] == "libvirt"
    facts["config"]["qemu.conf"]["keys"]["dynamic_ownership"] = 1
    plan = J.plan(facts, SETTINGS, "libvirt", defaults_file="/etc/default/libvirtd")
    assert plan["config"]["todo"] is True
    assert plan["changes"]["config"] == ["qemu.conf: dynamic_ownership 1 -> 0"]
    # A probe that did not read the files leaves the decision to kvm_host_conf.
    del facts["config"]
    assert J.plan(facts, SETTINGS, "libvirt")["config"]["todo"] is True


@pytest.mark.parametrize("path", sorted((FIXTURES / "facts").glob("*.json")), ids=lambda p: p.stem)
def test_every_facts_fixture_has_the_units_the_probe_reports(path: Any) -> None:
    # A unit missing from a fixture is one the judge calls unknown: the fixtures keep the
    # probe's shape (kvm_host_layouts.UNITS) so that the verdicts on them are real ones.
    layouts = sys.modules[J.__package__ + ".kvm_host_layouts"]
    units = json.loads(path.read_text())["libvirt"]["units"]
    assert sorted(units) == sorted(layouts.UNITS)
