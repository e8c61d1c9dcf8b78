"""NET-001, names resolve both ways: the probes' bounded name resolution (module_utils
kvm_host_names, through kvm_host_probe and one_frontend_probe) and the judge, on the fleet of
fixtures/fleets/names.json with and without a front-end.

The resolution tests send no traffic but to loopback (DESIGN's network rule): ``localhost``
comes from /etc/hosts, and the unresolvable and the hanging names go to a stand-in for
getaddrinfo (a real lookup of a .invalid name would ask this machine's DNS server)."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import yaml
from conftest import FIXTURES, REPO_ROOT
from test_controls import load_fleet
from test_kvm_host_conf import load_library_module

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import by_id
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Role, Status
from tests.unit.ansible_env import run_module_locally

P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
names_mod = load_library_module("kvm_host_names", REPO_ROOT / "plugins/module_utils")
probe_fe = load_library_module("one_frontend_probe", REPO_ROOT / "plugins/modules")
FRONTEND = json.loads((FIXTURES / "one" / "frontend-probe.json").read_text())


# --- resolution, bounded in time ---------------------------------------------------------------


def unresolvable(name: str, *args: Any) -> Any:
    """getaddrinfo for a name under .invalid (RFC 6761: never resolves)."""
    if name.endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return socket.getaddrinfo(name, *args)


def test_localhost_resolves_to_loopback() -> None:
    got = names_mod.resolve_names(["localhost"])
    assert set(got) == {"localhost"}
    entry = got["localhost"]
    assert entry["error"] is None
    assert entry["loopback"] is True
    # 127.0.0.1, ::1 or both, as this machine's /etc/hosts says: each of them a loopback.
    assert entry["addresses"]
    assert set(entry["addresses"]) <= {"127.0.0.1", "::1"}


def test_an_invalid_name_reports_the_resolvers_error() -> None:
    got = names_mod.resolve_names(["nothing.invalid", "127.0.0.1"], getaddrinfo=unresolvable)
    assert got["nothing.invalid"] == {
        "name": "nothing.invalid",
        "addresses": [],
        "loopback": False,
        "error": "Name or service not known",
    }
    assert got["127.0.0.1"]["addresses"] == ["127.0.0.1"]


def test_a_hanging_lookup_is_abandoned_after_the_timeout_and_the_others_answer() -> None:
    release = threading.Event()

    def hangs(name: str, *args: Any) -> Any:
        if name == "slow.invalid":
            release.wait(30)  # what a dead DNS server does
        return socket.getaddrinfo("127.0.0.1", *args)

    started = time.monotonic()
    try:
        got = names_mod.resolve_names(["slow.invalid", "fast"], timeout=0.3, getaddrinfo=hangs)
    finally:
        release.set()
    assert time.monotonic() - started < 2.0
    assert got["slow.invalid"]["error"] == "no answer within 0.3 s"
    assert got["slow.invalid"]["addresses"] == []
    assert got["fast"]["addresses"] == ["127.0.0.1"]


def test_names_are_resolved_once_in_the_order_given_and_empty_ones_dropped() -> None:
    got = names_mod.resolve_names(["b", "", "a", "b"], getaddrinfo=lambda *a: [])
    assert list(got) == ["b", "a"]
    assert got["a"]["addresses"] == []


def test_the_front_end_probe_resolves_the_names_it_is_given(tmp_path) -> None:
    probe = probe_fe.gather(
        "oneadmin", str(tmp_path), str(tmp_path), lambda args: (1, "", ""), names=["localhost"]
    )
    assert probe["names"]["localhost"]["loopback"] is True
    assert (
        probe_fe.gather("oneadmin", str(tmp_path), str(tmp_path), lambda a: (1, "", ""))["names"]
        == {}
    )


@pytest.mark.ansible
def test_the_host_probe_gathers_names_in_its_one_call(tmp_path) -> None:
    result = run_module_locally(
        tmp_path, "kvmprep.kvm.kvm_host_probe", {"gather": ["names"], "names": ["localhost"]}
    )
    assert not result.get("failed"), result
    assert set(result["probe"]) == {"names", "errors"}
    assert result["probe"]["names"]["localhost"]["loopback"] is True


def test_check_sends_every_kvm_host_name_and_the_front_ends() -> None:
    # After the play that checks the settings: the hosts' play, then the front-end's.
    first, *plays = yaml.safe_load((REPO_ROOT / "playbooks" / "audit.yml").read_text())
    (audit,) = plays[0]["tasks"]
    assert "names" in audit["kvmprep.kvm.kvm_host_probe"]["gather"]
    # Its names, among its other arguments, from the settings task (test_peers runs it).
    assert audit["module_defaults"] == {
        "kvmprep.kvm.kvm_host_probe": "{{ __kvmprep_fleet.probes[inventory_hostname] }}"
    }
    fe_task = plays[1]["tasks"][0]
    assert fe_task["kvmprep.kvm.one_frontend_probe"]["names"] == "{{ __kvmprep_fleet.one_names }}"
    # Both plays take the OpenNebula names the first play's settings task computed once, for
    # every host (run_once, registered); neither computes its own.
    (named,) = [t for t in first["tasks"] if t.get("register") == "__kvmprep_fleet"]
    assert named["run_once"] is True
    assert named["kvmprep.kvm.kvm_host_settings"]["fleet"] is True
    for play in plays:
        assert not any(k.startswith("__kvmprep_fleet") for k in play.get("vars", {}))
        assert all("__kvmprep_fleet" not in t.get("vars", {}) for t in play["tasks"])


# --- NET-001 -----------------------------------------------------------------------------------


def fleet(*, frontend: bool = True, edit: Any = None) -> list[HostInput]:
    """fixtures/fleets/names.json, with the front-end (one/frontend-probe.json, resolving every
    host) or without a frontend group; ``edit(facts_by_name)`` breaks what a test needs."""
    hosts = load_fleet("names")
    facts = {h.name: copy.deepcopy(dict(h.facts)) for h in hosts}  # type: ignore[arg-type]
    fe = copy.deepcopy(FRONTEND)
    fe["names"] = {
        n: {"name": n, "addresses": [a], "loopback": False, "error": None}
        for n, a in (("h1", "10.89.0.11"), ("h2", "10.89.0.12"), ("h3", "10.89.0.13"))
    }
    facts["fe"] = fe
    if edit is not None:
        edit(facts)
    inputs = []
    for h in hosts:
        expect = h.expect or Expect()
        if frontend:
            expect = replace(expect, frontend="fe")
        inputs.append(HostInput(h.name, facts[h.name], expect))
    if frontend:
        inputs.append(HostInput("fe", facts["fe"], role=Role.FRONTEND))
    return inputs


def net(inputs: list[HostInput]) -> dict[str, Any]:
    return {
        r.name: next(c for c in r.results if c.control.id == "NET-001")
        for r in evaluate_fleet(inputs)
    }


def lookup(facts: dict[str, Any], on: str, name: str, *addresses: str, error: str = "") -> None:
    facts[on]["names"][name] = {
        "name": name,
        "addresses": list(addresses),
        "loopback": any(a.startswith("127.") or a == "::1" for a in addresses),
        "error": error or None,
    }


def test_every_name_resolving_to_its_machine_passes_across_clusters() -> None:
    got = net(fleet())
    assert {name: r.status for name, r in got.items()} == dict.fromkeys(("h1", "h2", "h3", "fe"), P)
    # h3 cannot resolve h1 and h2, another cluster's hosts: it never needs to.
    assert got["h1"].message == "h1 resolves to an address of h1 on fe, h2"
    assert got["h3"].message == "h3 resolves to an address of h3 on fe"
    assert got["fe"].message == "fe resolves to an address of fe on h1, h2, h3"


def test_a_name_that_does_not_resolve_on_the_front_end_fails() -> None:
    got = net(fleet(edit=lambda f: lookup(f, "fe", "h2", error="Name or service not known")))
    assert got["h2"].status is F
    assert got["h2"].message == (
        "1 problem(s): h2 does not resolve on fe (Name or service not known)"
    )
    assert got["h2"].fix.startswith("make h2 resolve to 10.89.0.12 on fe: DNS, or the same")
    assert "one_frontend_manage_etc_hosts: true" in got["h2"].fix
    assert got["h1"].status is P


def test_a_name_resolving_to_loopback_on_a_cluster_peer_fails() -> None:
    got = net(fleet(edit=lambda f: lookup(f, "h2", "h1", "127.0.1.1", "10.89.0.11")))
    assert got["h1"].status is F
    assert "h1 resolves to loopback on h2 (127.0.1.1; all: 127.0.1.1, 10.89.0.11)" in (
        got["h1"].message
    )
    assert got["h2"].status is P


def test_a_name_resolving_to_another_machine_fails_naming_both_sides() -> None:
    got = net(fleet(edit=lambda f: lookup(f, "h1", "h2", "10.89.0.13")))
    assert got["h2"].status is F
    assert got["h2"].message == (
        "1 problem(s): h2 resolves on h1 to 10.89.0.13, not an address of h2 (10.89.0.12)"
    )


def test_the_front_ends_name_is_judged_on_every_host() -> None:
    got = net(fleet(edit=lambda f: lookup(f, "h3", "fe", "10.89.0.99")))
    assert got["fe"].status is F
    assert "fe resolves on h3 to 10.89.0.99, not an address of fe (10.89.0.2)" in (
        got["fe"].message
    )
    assert got["h3"].status is P


def test_some_addresses_of_another_machine_warn() -> None:
    got = net(fleet(edit=lambda f: lookup(f, "fe", "h1", "10.89.0.50", "fd00::11")))
    assert got["h1"].status is W
    assert "10.89.0.50 is not h1's (10.89.0.11, fd00::11)" in got["h1"].message


def test_hosts_of_separate_clusters_need_not_resolve_each_other() -> None:
    # h3 (cluster b) cannot resolve h1 and h2 (cluster a) in the fixture; make h1 miss h3 too.
    got = net(fleet(edit=lambda f: lookup(f, "h1", "h3", error="Name or service not known")))
    assert got["h1"].status is P
    assert got["h3"].status is P


def test_without_a_front_end_the_hosts_of_each_cluster_are_compared() -> None:
    got = net(fleet(frontend=False))
    assert set(got) == {"h1", "h2", "h3"}
    assert got["h1"].status is P
    assert got["h1"].message == "h1 resolves to an address of h1 on h2"
    # Alone in its cluster, nothing needs h3's name.
    assert got["h3"].status is S
    broken = net(fleet(frontend=False, edit=lambda f: lookup(f, "h2", "h1", "127.0.0.1")))
    assert broken["h1"].status is F
    assert broken["h2"].status is P


def test_a_probe_without_the_names_fact_is_an_error_not_a_pass() -> None:
    got = net(fleet(edit=lambda f: f["h2"].pop("names")))
    assert got["h1"].status is E
    assert "h2's probe did not resolve names" in got["h1"].message
    # What h2 itself needs (its name on fe and h1) is still judged.
    assert got["h2"].status is P


def test_an_unprobed_front_end_leaves_no_host_passing() -> None:
    inputs = [
        i if i.role is Role.KVM_HOST else HostInput("fe", None, role=Role.FRONTEND, error="down")
        for i in fleet()
    ]
    got = net(inputs)
    assert got["h1"].status is E
    assert "front-end fe was not probed" in got["h1"].message
    broken = [
        replace(i, facts={**i.facts, "names": {}}) if i.name == "h2" else i  # type: ignore[dict-item]
        for i in inputs
    ]
    assert net(broken)["h1"].status is E  # not asked: unknown, still no FAIL invented


def test_the_catalog_entry() -> None:
    control = by_id("NET-001")
    assert control.severity == "high"
    assert control.applies_to == (Role.KVM_HOST, Role.FRONTEND)
    assert "one_frontend_manage_etc_hosts" in control.remediation
