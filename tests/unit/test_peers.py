"""NET-002 and ONE-008, the live tests between the machines of a cluster: the probe's peers
group (module_utils kvm_host_probe_peers, through kvm_host_probe and one_frontend_probe) and
the two judges, on the converged fixtures and on drifts made from them.

The probe tests send no traffic but to loopback: real sockets on 127.0.0.1 for open and
refused, stand-in sockets for what only a remote network does (a timeout, EHOSTUNREACH), and
an ssh of the test's own ahead in PATH for the hops' outcomes."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_env import ansible_env
from conftest import REPO_ROOT
from test_controls import load

from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_peers as probe_peers,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import peers
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import by_id
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import by_cluster
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    Role,
    Status,
)
from tests.unit.ansible_env import run_module_locally

P, W, F, S, E = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR
ME = pwd.getpwuid(os.geteuid()).pw_name

# --- the probe: ports -------------------------------------------------------------------------


@pytest.fixture
def listening() -> Any:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed() -> int:
    # A port just released: nothing listens there, the kernel answers with a RST.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_a_listening_port_is_open_a_closed_one_refused(listening: int, closed: int) -> None:
    assert probe_peers.connect("127.0.0.1", listening)["state"] == "open"
    refused = probe_peers.connect("127.0.0.1", closed)
    assert refused["state"] == "refused"
    assert refused["address"] == "127.0.0.1"


class _Socket:
    """A socket whose connect fails as a remote network would make it."""

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure
        self.timeouts: list[float] = []

    def __call__(self, *_args: Any) -> _Socket:
        return self

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)

    def connect(self, _address: Any) -> None:
        raise self.failure

    def close(self) -> None:
        pass


def _one_address(*_args: Any) -> list[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 49152))]


@pytest.mark.parametrize(
    ("failure", "state"),
    [
        (TimeoutError("timed out"), "timeout"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
        (OSError(errno.EPERM, "Operation not permitted"), "unreachable"),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), "error"),
    ],
)
def test_what_a_network_does_to_a_connect(failure: BaseException, state: str) -> None:
    fake = _Socket(failure)
    result = probe_peers.connect("peer", 49152, 1.0, getaddrinfo=_one_address, new=fake)
    assert result["state"] == state
    assert result["address"] == "192.0.2.7"
    assert 0 < fake.timeouts[0] <= 1.0


def test_an_unresolved_name_is_reported_as_such() -> None:
    def fail(*_args: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    result = probe_peers.connect("nowhere", 16509, getaddrinfo=fail)
    assert result == {"state": "unresolved", "address": None, "error": "Name or service not known"}


def _hang(*_args: Any) -> Any:
    time.sleep(5)
    return None, "too late"  # (what resolve_fn returns; connect_fn is never reached)


@pytest.mark.parametrize(
    ("resolve_fn", "state"),
    [
        # Resolved, and the connects do not end: filtered.
        (lambda address: (_one_address(), None), "timeout"),
        # getaddrinfo does not answer (a dead DNS server): not the network's fault.
        (_hang, "unresolved"),
    ],
)
def test_a_peer_that_does_not_answer_in_time(resolve_fn: Any, state: str) -> None:
    started = probe_peers.start_peers(
        [{"name": "slow", "address": "slow"}],
        [16509, 49152],
        connect_fn=_hang,
        resolve_fn=resolve_fn,
        skip=lambda user: ({"kind": "ssh", "message": "ssh is not installed"}, None, None),
    )
    begun = time.monotonic()
    fact = probe_peers.finish_peers(started, ports_deadline=0.3)
    assert time.monotonic() - begun < 2
    ports = fact["hosts"]["slow"]["ports"]
    assert {p: r["state"] for p, r in ports.items()} == {"16509": state, "49152": state}
    assert ports["16509"]["error"] == "no answer within 0.3 s"
    assert fact["ssh_skipped"]["kind"] == "ssh"
    assert fact["hosts"]["slow"]["ssh"] is None


def test_a_name_without_address_is_unresolved_for_every_port() -> None:
    def fail(*_args: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    started = probe_peers.start_peers(
        [{"name": "gone", "address": "gone.invalid"}],
        [16514, 49152],
        resolve_fn=lambda address: probe_peers.resolve(address, fail),
        skip=lambda user: ({"kind": "ssh", "message": "ssh is not installed"}, None, None),
    )
    ports = probe_peers.finish_peers(started)["hosts"]["gone"]["ports"]
    assert ports["16514"] == {
        "state": "unresolved",
        "address": None,
        "error": "Name or service not known",
    }
    assert ports["49152"]["state"] == "unresolved"


def test_above_the_limit_nothing_is_tried() -> None:
    tried: list[str] = []
    started = probe_peers.start_peers(
        [{"name": f"h{i}", "address": ""} for i in range(3)],
        [16509],
        limit=2,
        connect_fn=lambda a, p: tried.append(a) or {},
    )
    fact = probe_peers.finish_peers(started)
    assert fact["skipped"] == "3 peers, more than 2: not tested"
    assert fact["hosts"] == {}
    assert tried == []


def test_why_no_hop_can_be_tried() -> None:
    assert probe_peers.ssh_skip("kvmprep-no-such-user")[0]["kind"] == "user"
    assert probe_peers.ssh_skip(ME, dirs=[])[0]["kind"] == "ssh"
    other = pwd.getpwuid(os.geteuid()).pw_uid + 1
    if other != 0:
        assert probe_peers.ssh_skip(ME, euid=other)[0]["kind"] == "root"


# --- the probe: SSH hops, with an ssh of the test's own ---------------------------------------

FAKE_SSH = """#!/bin/sh
# The test's ssh: records how it was run, answers per destination (the argument before "true").
if [ "$1" = -G ]; then
  printf '%s\\n' "$*" >> "{log}.G"
  echo "user $USER"
  echo "kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,ecdh-sha2-nistp256"
  exit 0
fi
prev=; dest=
for arg; do dest=$prev; prev=$arg; done
printf '%s\\n' "$*" >> "{log}"
env >> "{log}.env"
case "$dest" in
  good) exit 0 ;;
  nap) echo "start $(date +%s.%N)" >> "{log}.nap"; sleep 0.3
       echo "end $(date +%s.%N)" >> "{log}.nap"; exit 0 ;;
  badkey) echo "debug1: something first" >&2
          echo "Host key verification failed." >&2; exit 255 ;;
  nokey) echo "oneadmin@nokey: Permission denied (publickey)." >&2; exit 255 ;;
  slow) exec sleep 30 ;;
esac
exit 1
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh.log"
    ssh = bindir / "ssh"
    ssh.write_text(FAKE_SSH.replace("{log}", str(log)))
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    # An agent of the caller's must not reach the hop.
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/kvmprep-test-agent.sock")
    return log


def test_each_hop_reports_ssh_s_last_line(fake_ssh: Path) -> None:
    started = probe_peers.start_peers(
        [
            {"name": "h-good", "address": "good"},
            {"name": "h-badkey", "address": "badkey"},
            {"name": "h-nokey", "address": "nokey"},
            {"name": "h-slow", "address": "slow"},
            {"name": "-oProxyCommand=x", "address": ""},
        ],
        frontend="good",
        user=ME,
        ssh_deadline=1.0,
    )
    begun = time.monotonic()
    fact = probe_peers.finish_peers(started)
    assert time.monotonic() - begun < 5  # the slow hop is killed at the deadline
    hosts = fact["hosts"]
    assert hosts["h-good"]["ssh"] == {"ok": True, "rc": 0, "message": ""}
    assert hosts["h-badkey"]["ssh"] == {
        "ok": False,
        "rc": 255,
        "message": "Host key verification failed.",
    }
    assert hosts["h-nokey"]["ssh"]["message"].endswith("Permission denied (publickey).")
    assert hosts["h-slow"]["ssh"] == {"ok": False, "rc": None, "message": "no answer within 1 s"}
    assert hosts["-oProxyCommand=x"]["ssh"]["message"] == "'-oProxyCommand=x' is not a host name"
    assert fact["frontend"]["ssh"]["ok"] is True
    assert fact["ports"] == []
    assert fact["ssh_skipped"] is None
    calls = fake_ssh.read_text().splitlines()
    assert len(calls) == 5  # four peers and the front-end: the bad name never reached ssh
    for option in (
        "BatchMode=yes",
        "ConnectTimeout=3",
        "StrictHostKeyChecking=yes",
        "UpdateHostKeys=no",
        "ControlMaster=no",
        "ControlPath=none",
    ):
        assert all(f"-o {option}" in call for call in calls), (option, calls)
    # Debian 12's default key exchange list begins with sntrup761: curve25519 is asked first,
    # from the list ssh -G says is configured (asked once, as the user, for the first target).
    assert Path(f"{fake_ssh}.G").read_text().splitlines() == ["-G good"]
    kex = "KexAlgorithms=curve25519-sha256,sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256"
    assert all(f"-o {kex}" in call for call in calls), calls
    env = Path(f"{fake_ssh}.env").read_text()
    assert "SSH_AUTH_SOCK" not in env
    assert f"USER={ME}" in env


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (
            "kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,"
            "curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
            "curve25519-sha256,curve25519-sha256@libssh.org,"
            "sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256",
        ),
        # OpenSSH 10's ML-KEM hybrid first, or a list without curve25519 (FIPS): as configured.
        ("kexalgorithms mlkem768x25519-sha256,sntrup761x25519-sha512,curve25519-sha256", None),
        ("kexalgorithms sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256", None),
        ("user oneadmin\nhostname peer", None),
    ],
)
def test_the_hops_key_exchange_prefers_curve25519_to_sntrup(
    configured: str, expected: str | None
) -> None:
    assert probe_peers.preferred_kex(f"user oneadmin\n{configured}\nport 22\n") == expected


def test_hops_run_a_few_at_a_time_within_their_budget(fake_ssh: Path) -> None:
    # A cluster hops to every peer at once from every host: each sshd would be asked by all of
    # them together (sshd drops connections above MaxStartups, 10 by default).
    started = probe_peers.start_peers(
        [{"name": f"h{i}", "address": "nap"} for i in range(6)], user=ME, parallel=2
    )
    fact = probe_peers.finish_peers(started)
    assert all(h["ssh"]["ok"] for h in fact["hosts"].values()), fact
    events = sorted(
        (float(stamp), 1 if kind == "start" else -1)
        for kind, stamp in (
            line.split() for line in Path(f"{fake_ssh}.nap").read_text().splitlines()
        )
    )
    assert len(events) == 12
    in_flight, most = 0, 0
    for _stamp, step in events:
        in_flight += step
        most = max(most, in_flight)
    assert most == 2
    # What the budget leaves unstarted is not tried; what runs at its end is stopped.
    started = probe_peers.start_peers(
        [{"name": f"s{i}", "address": "slow"} for i in range(3)], user=ME, parallel=1
    )
    begun = time.monotonic()
    fact = probe_peers.finish_peers(started, ssh_budget=0.5)
    assert time.monotonic() - begun < 3
    hops = [fact["hosts"][f"s{i}"]["ssh"] for i in range(3)]
    assert hops[0] == {"ok": False, "rc": None, "message": "no answer within the 0.5 s of all hops"}
    assert hops[1:] == [None, None]


@pytest.mark.ansible
def test_the_host_probe_tests_its_peers_in_its_one_call(
    tmp_path: Path, fake_ssh: Path, listening: int, closed: int
) -> None:
    result = run_module_locally(
        tmp_path,
        "kvmprep.kvm.kvm_host_probe",
        {
            "gather": ["peers"],
            "peers": [{"name": "loop", "address": "127.0.0.1"}],
            "ports": [listening, closed],
            "frontend": "good",
            "user": ME,
        },
        PATH=os.environ["PATH"],
    )
    assert not result.get("failed"), result
    assert set(result["probe"]) == {"peers", "errors"}
    fact = result["probe"]["peers"]
    loop = fact["hosts"]["loop"]
    assert loop["ports"][str(listening)]["state"] == "open"
    assert loop["ports"][str(closed)]["state"] == "refused"
    # The test's ssh knows no "127.0.0.1": it fails with no message, as exit status 1.
    assert loop["ssh"] == {"ok": False, "rc": 1, "message": ""}
    assert fact["frontend"]["ssh"]["ok"] is True


@pytest.mark.ansible
def test_the_front_end_probe_tests_its_hops_to_the_hosts(tmp_path: Path, fake_ssh: Path) -> None:
    result = run_module_locally(
        tmp_path,
        "kvmprep.kvm.one_frontend_probe",
        {
            "user": ME,
            "etc_dir": str(tmp_path),
            "remotes_dir": str(tmp_path),
            "peers": [{"name": "h1", "address": "good"}, {"name": "h2", "address": "badkey"}],
        },
        PATH=os.environ["PATH"],
    )
    assert not result.get("failed"), result
    hosts = result["probe"]["peers"]["hosts"]
    assert hosts["h1"]["ssh"]["ok"] is True
    assert hosts["h2"]["ssh"]["message"] == "Host key verification failed."
    assert hosts["h1"]["ports"] == {}


# --- the judges ---------------------------------------------------------------------------------


def node(name: str, peer: str, fixture: str = "debian12-converged") -> dict[str, Any]:
    """A converged host of cluster lab whose probe tested ``peer``."""
    facts = load(fixture)
    fact = facts["peers"]
    (entry,) = fact["hosts"].values()
    fact["hosts"] = {peer: {**entry, "address": f"{peer}.lab"}}
    fact["frontend"] = {**fact["frontend"], "name": "fe", "address": "fe"}
    return facts


def front_end(*hosts: str, **ssh: dict[str, Any]) -> dict[str, Any]:
    good = {"ok": True, "rc": 0, "message": ""}
    return {
        "peers": {
            "ports": [],
            "skipped": None,
            "ssh_skipped": None,
            "hosts": {
                h: {"address": f"{h}.lab", "ports": {}, "ssh": ssh.get(h, good)} for h in hosts
            },
            "frontend": None,
        }
    }


def set_port(
    facts: dict[str, Any], peer: str, port: str, state: str, address: Any, error: str
) -> None:
    """What facts' probe says of its connect to peer's port."""
    facts["peers"]["hosts"][peer]["ports"][port] = {
        "state": state,
        "address": address,
        "error": error,
    }


def judge(
    control: str, *machines: tuple[str, dict[str, Any]], frontend: str = "fe"
) -> dict[str, Any]:
    """control's results per machine, all of cluster lab (``frontend`` "": no frontend group)."""
    settings = {"one_frontend_cluster": "lab"}
    if frontend:
        settings["kvmprep_frontend"] = frontend
    expect = Expect.from_vars(settings)
    inputs = [
        HostInput(name, facts, expect, role=Role.FRONTEND if name == "fe" else Role.KVM_HOST)
        for name, facts in machines
    ]
    reports = evaluate_fleet(inputs, controls=(by_id(control),))
    return {r.name: r.results[0] for r in reports}


def test_net_002_converged_pair_passes_and_names_what_it_tested() -> None:
    rows = judge("NET-002", ("h1", node("h1", "h2")), ("h2", node("h2", "h1")))
    for name in ("h1", "h2"):
        assert rows[name].status is P, rows[name].message
    assert "16509, 49152" in rows["h1"].message
    assert "h1 -> h2, h2 -> h1" in rows["h1"].message


def test_net_002_a_filtered_port_fails_on_both_hosts_naming_the_pair() -> None:
    h1 = node("h1", "h2")
    set_port(h1, "h2", "49152", "timeout", "10.89.0.12", "no answer within 1 s")
    rows = judge("NET-002", ("h1", h1), ("h2", node("h2", "h1")))
    for name in ("h1", "h2"):
        row = rows[name]
        assert row.status is F, row.message
        assert "h1 -> h2 (h2.lab) port 49152 timed out: filtered" in row.message
        assert "TCP 49152 to h2" in row.fix
        assert "49152-49215" in row.fix


def test_net_002_unreachable_fails_refused_listener_is_lv_005s() -> None:
    h1 = node("h1", "h2")
    set_port(h1, "h2", "16509", "unreachable", "10.89.0.12", "No route to host")
    assert judge("NET-002", ("h1", h1))["h1"].status is F
    set_port(h1, "h2", "16509", "refused", "10.89.0.12", "Connection refused")
    row = judge("NET-002", ("h1", h1))["h1"]
    assert row.status is P, row.message
    assert "h2's libvirt listener does not listen (LV-005 judges it on h2" in row.message


def test_net_002_unknowns_and_skips() -> None:
    h1 = node("h1", "h2")
    set_port(h1, "h2", "49152", "unresolved", None, "Name or service not known")
    row = judge("NET-002", ("h1", h1))["h1"]
    assert row.status is E
    assert "NET-001 judges the name" in row.message
    bare = load("debian12-converged")
    del bare["peers"]
    assert judge("NET-002", ("h1", bare))["h1"].status is S
    many = node("h1", "h2")
    many["peers"].update(skipped="40 peers, more than 32: not tested", hosts={})
    row = judge("NET-002", ("h1", many))["h1"]
    assert row.status is S
    assert "more than 32" in row.message
    # Its own connects not made, the other's to it made: judged on those, the gap named.
    row = judge("NET-002", ("h1", bare), ("h2", node("h2", "h1")))["h1"]
    assert row.status is P, row.message
    assert "h2 -> h1" in row.message
    assert "not tested: h1's probe did not test its peers" in row.message
    alone = node("h1", "h2")
    alone["peers"]["hosts"] = {}
    assert "no other host in cluster lab" in judge("NET-002", ("h1", alone))["h1"].message


def test_one_008_converged_hops_pass_with_the_front_end() -> None:
    rows = judge(
        "ONE-008",
        ("fe", front_end("h1", "h2")),
        ("h1", node("h1", "h2")),
        ("h2", node("h2", "h1")),
    )
    for name in ("fe", "h1", "h2"):
        assert rows[name].status is P, (name, rows[name].message)
    # Every hop a machine is either end of.
    assert rows["h1"].message == (
        "4 hop(s) work as oneadmin in BatchMode: h1 -> h2, h1 -> fe, h2 -> h1, fe -> h1"
    )
    assert rows["fe"].message.endswith("h1 -> fe, h2 -> fe, fe -> h1, fe -> h2")


def test_one_008_a_failing_hop_is_named_with_its_fix() -> None:
    h1 = node("h1", "h2")
    h1["peers"]["hosts"]["h2"]["ssh"] = {
        "ok": False,
        "rc": 255,
        "message": "Host key verification failed.",
    }
    denied = {"ok": False, "rc": 255, "message": "oneadmin@h2.lab: Permission denied (publickey)."}
    rows = judge(
        "ONE-008",
        ("fe", front_end("h1", "h2", h2=denied)),
        ("h1", h1),
        ("h2", node("h2", "h1")),
    )
    assert rows["h1"].status is F
    assert "h1 -> h2 (h2.lab): Host key verification failed." in rows["h1"].message
    assert "h2.lab's host key in oneadmin's known_hosts on h1" in rows["h1"].fix
    assert "kvmprep apply with the frontend group" in rows["h1"].fix
    # The hop h1 -> h2 is on h2's row too: the fix may be its authorized_keys.
    assert "h1 -> h2 (h2.lab): Host key verification failed." in rows["h2"].message
    assert "h1 -> h2" not in rows["fe"].message
    # The front-end's hop to h2 fails: on the front-end's row and h2's.
    for name in ("fe", "h2"):
        assert rows[name].status is F, rows[name].message
        assert "fe -> h2 (h2.lab): oneadmin@h2.lab: Permission denied" in rows[name].message
        assert "fe's oneadmin key in oneadmin's authorized_keys on h2" in rows[name].fix


def test_one_008_what_stops_the_hops() -> None:
    missing = node("h1", "h2")
    missing["peers"]["ssh_skipped"] = {"kind": "ssh", "message": "ssh is not installed"}
    row = judge("ONE-008", ("h1", missing))["h1"]
    assert row.status is F
    assert "every hop from h1 fails" in row.message
    assert "openssh-client" in row.fix
    root = load("debian12-unprivileged")
    row = judge("ONE-008", ("h1", root))["h1"]
    assert row.status is E
    assert "needs root (or oneadmin)" in row.message
    nouser = node("h1", "h2")
    nouser["peers"]["ssh_skipped"] = {"kind": "user", "message": "no user oneadmin"}
    row = judge("ONE-008", ("h1", nouser))["h1"]
    assert row.status is S
    assert "USR-001" in row.message
    bare = load("debian12-converged")
    del bare["peers"]
    assert judge("ONE-008", ("h1", bare))["h1"].status is S
    # A front-end that could not be probed: no PASS for the hosts.
    rows = evaluate_fleet(
        [
            HostInput("fe", None, role=Role.FRONTEND, error="unreachable"),
            HostInput("h1", node("h1", "h2"), Expect()),
        ],
        controls=(by_id("ONE-008"),),
    )
    assert {r.name: r.results[0].status for r in rows} == {"fe": E, "h1": E}


def test_the_judges_read_hosts_facts_only() -> None:
    # A front-end's facts never count as a host's connects.
    fe = HostFacts("fe", front_end("h1"), Expect(), role=Role.FRONTEND)
    h1 = HostFacts("h1", node("h1", "h2"), Expect())
    assert set(peers.reachability([fe, h1])) == {"h1"}


# --- audit.yml (check's facts): each host's peers, computed once, grouped as the judges do ---

INVENTORY = {
    "a": {
        "one_frontend_cluster": "c1",
        "one_frontend_host_name": "a.lab",
        "kvm_host_apparmor_datastore_path": "/srv/datastores",
    },
    # A setting of the role's, templated as the role would see it.
    "b": {"one_frontend_cluster": "c1", "kvm_host_oneadmin_home": "/srv/{{ 'one' }}"},
    # A cluster id (the settings want a string); the TLS listener.
    "c": {"one_frontend_cluster": "100", "kvm_host_migration_transport": "tls"},
    "d": {"kvm_host_migration_transport": "ssh"},  # one_frontend's default cluster; no listener
    "e": {
        "one_frontend_cluster": "default",
        "kvm_host_qemu_conf_extra": {"migration_port_min": 50000},
        "kvm_host_kvm_device_group": "kvm-dev",
        "kvm_host_oneadmin_user": "one",
    },
}
# Every argument of the probe call but gather: the settings task makes them for each host.
PROBE_ARGS = {
    "blocks", "user", "emulator", "remotes_dir", "frontend", "names", "peers", "ports", "groups",
    "expect",
}  # fmt: skip


@pytest.mark.ansible
def test_check_gives_each_host_its_probe_arguments(tmp_path: Path) -> None:
    plays = yaml.safe_load((REPO_ROOT / "playbooks" / "audit.yml").read_text())
    # The settings task computes them in its pass over the hosts' variables, once per run.
    (named,) = [t for t in plays[0]["tasks"] if "kvmprep.kvm.kvm_host_settings" in t]
    assert named["run_once"] is True  # once per run, not once per host
    assert named["kvmprep.kvm.kvm_host_settings"]["fleet"] is True
    (host_task,) = plays[1]["tasks"]
    assert set(host_task["kvmprep.kvm.kvm_host_probe"]) == {"gather"}
    fe_task = plays[2]["tasks"][0]["kvmprep.kvm.one_frontend_probe"]
    playbook = [
        # audit.yml's own first play: its hosts, the settings task as it is.
        {**plays[0], "tasks": [named]},
        {
            "hosts": "kvm_hosts",
            "gather_facts": False,
            "tasks": [
                # What the probe call gets: audit.yml's own expression.
                {
                    "ansible.builtin.debug": {
                        "msg": host_task["module_defaults"]["kvmprep.kvm.kvm_host_probe"]
                    }
                },
                # What the role's own variables say, for apply's probe and AppArmor task and
                # its restart check (static import: the role's variables, no task run).
                {
                    "ansible.builtin.import_role": {
                        "name": "kvmprep.kvm.kvm_host",
                        "tasks_from": "set_vars",
                    },
                    "when": False,
                },
                {
                    "ansible.builtin.debug": {
                        "msg": {
                            "blocks": "{{ __kvm_host_probe_blocks }}",
                            "port": "{{ __kvm_host_listener_port | int }}",
                            "user": "{{ kvm_host_oneadmin_user }}",
                            "emulator": "{{ kvm_host_emulator_link }}",
                            "remotes_dir": "{{ kvm_host_remotes_dir }}",
                        }
                    }
                },
            ],
        },
        {
            "hosts": "frontend",
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.debug": {"msg": fe_task["peers"]}},
                {"ansible.builtin.debug": {"msg": fe_task["names"]}},
            ],
        },
    ]
    (tmp_path / "check-peers.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local"},
            "children": {
                "frontend": {"hosts": {"fe": {}}},
                "kvm_hosts": {"hosts": INVENTORY},
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    playbook_cmd = Path(sys.executable).with_name("ansible-playbook")
    proc = subprocess.run(
        [str(playbook_cmd), "-i", "hosts.yml", "check-peers.yml"],
        cwd=tmp_path,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    tasks = result["plays"][1]["tasks"]
    args = {host: found["msg"] for host, found in tasks[0]["hosts"].items()}
    assert set(args) == set(INVENTORY)
    for host in INVENTORY:
        assert set(args[host]) == PROBE_ARGS, host
    got = {host: [p["name"] for p in args[host]["peers"]] for host in INVENTORY}
    # What the fleet judges compare: migration.by_cluster over the same inventory values.
    facts = [HostFacts(h, {}, Expect.from_vars(v)) for h, v in INVENTORY.items()]
    want = {
        h.name: [m.name for m in group if m is not h]
        for group in by_cluster(facts).values()
        for h in group
    }
    assert got == want
    assert got == {"a": ["b"], "b": ["a"], "c": [], "d": ["e"], "e": ["d"]}
    # The address is the name OpenNebula knows the host by.
    assert args["b"]["peers"] == [{"name": "a", "address": "a.lab"}]
    fe = result["plays"][2]["tasks"][0]["hosts"]["fe"]["msg"]
    assert sorted(p["name"] for p in fe) == sorted(INVENTORY)
    # NET-001: the names OpenNebula knows the kvm hosts by, one_frontend_host_name first.
    assert result["plays"][2]["tasks"][1]["hosts"]["fe"]["msg"] == ["a.lab", "b", "c", "d", "e"]
    # Each host's probe resolves the same names, the front-end's among them.
    for host in INVENTORY:
        assert args[host]["names"] == ["a.lab", "b", "c", "d", "e", "fe"], host
        assert args[host]["frontend"] == "fe", host
    # The role's own variables, as Ansible templates them for the host, say the same: the
    # AppArmor blocks apply writes and its probe looks for, the listener's port, oneadmin, the
    # emulator link and the remotes dir.
    role = {host: found["msg"] for host, found in tasks[-1]["hosts"].items()}
    for host in INVENTORY:
        assert args[host]["blocks"] == role[host]["blocks"], host
        assert args[host]["user"] == role[host]["user"], host
        assert args[host]["emulator"] == role[host]["emulator"], host
        assert args[host]["remotes_dir"] == role[host]["remotes_dir"], host
        listener = [int(role[host]["port"])] if int(role[host]["port"]) else []
        assert args[host]["ports"][:-1] == listener, host
    assert "  owner /srv/datastores/** rwk," in {b["block"] for b in args["a"]["blocks"]}
    assert args["e"]["user"] == "one"
    # NET-002's ports: the listener's (tcp 16509, tls 16514, none for ssh), QEMU's first.
    assert {h: args[h]["ports"] for h in INVENTORY} == {
        "a": [16509, 49152],
        "b": [16509, 49152],
        "c": [16514, 49152],
        "d": [49152],
        "e": [16509, 50000],
    }
    # The groups whose members the probe reads: libvirt's candidates, the settings' own.
    assert args["a"]["groups"] == ["kvm", "libvirt", "libvirtd", "oneadmin"]
    assert args["e"]["groups"] == ["kvm", "libvirt", "libvirtd", "kvm-dev", "oneadmin"]
    # The settings the controls judge each host against: every variable of the model's Expect,
    # the role's default where the inventory sets none, the inventory's value templated, the
    # front-end role's per-host values as given (None: unset), the run's front-end.
    defaults = yaml.safe_load((REPO_ROOT / "roles/kvm_host/defaults/main.yml").read_text())
    for host, values in INVENTORY.items():
        want = {
            Expect.var_name(f): defaults.get(Expect.var_name(f)) for f in dataclasses.fields(Expect)
        }
        want.update(values, kvmprep_frontend="fe")
        if host == "b":
            want["kvm_host_oneadmin_home"] = "/srv/one"
        assert args[host]["expect"] == want, host
        expect = Expect.from_vars(args[host]["expect"])
        assert expect.oneadmin_uid == defaults["kvm_host_oneadmin_uid"]
    assert args["d"]["expect"]["one_frontend_cluster"] is None


def test_net_002_a_refused_listener_that_listens_is_rejected_on_the_way() -> None:
    # h2's own probe shows libvirt listening on :: 16509 (the converged fixture), yet h1's
    # connect there is refused: a REJECT rule (or a listener bound elsewhere) blocks migration.
    h1 = node("h1", "h2")
    set_port(h1, "h2", "16509", "refused", "10.89.0.12", "Connection refused")
    h2 = node("h2", "h1")
    assert h2["listen"]["sockets"] == [{"address": "::", "family": "ipv6", "port": 16509}]
    rows = judge("NET-002", ("h1", h1), ("h2", h2))
    for name in ("h1", "h2"):
        row = rows[name]
        assert row.status is F, row.message
        assert (
            "h1 -> h2 (h2.lab) port 16509 refused at 10.89.0.12 although h2 listens on :: port "
            "16509: rejected on the way" in row.message
        )
        assert "TCP 16509 to h2" in row.fix
        assert "kvm_host_libvirt_listen_addr" in row.fix
    # Listening on loopback only is not listening for the others: LV-005's, noted.
    h2["listen"]["sockets"] = [{"address": "127.0.0.1", "family": "ipv4", "port": 16509}]
    row = judge("NET-002", ("h1", h1), ("h2", h2))["h1"]
    assert row.status is P, row.message
    assert "h2's libvirt listener does not listen" in row.message
    # A refused QEMU port is a closed port (nothing listens there between migrations).
    h1["peers"]["hosts"]["h2"]["ports"]["16509"] = {"state": "open", "address": "10.89.0.12"}
    set_port(h1, "h2", "49152", "refused", "10.89.0.12", "Connection refused")
    assert judge("NET-002", ("h1", h1), ("h2", node("h2", "h1")))["h1"].status is P


def test_one_008_without_a_front_end_failing_hops_warn() -> None:
    # No frontend group: apply exchanges no keys (ONE-006 SKIPs), so check must not call the
    # hosts non-compliant for it; it still says which hops fail and how to fix them.
    h1 = node("h1", "h2")
    h1["peers"]["frontend"] = None
    h1["peers"]["hosts"]["h2"]["ssh"] = {
        "ok": False,
        "rc": 255,
        "message": "Host key verification failed.",
    }
    h2 = node("h2", "h1")
    h2["peers"]["frontend"] = None
    rows = judge("ONE-008", ("h1", h1), ("h2", h2), frontend="")
    for name in ("h1", "h2"):
        row = rows[name]
        assert row.status is W, row.message
        assert "h1 -> h2 (h2.lab): Host key verification failed." in row.message
        assert "no frontend group" in row.message
        assert "h2.lab's host key in oneadmin's known_hosts on h1" in row.fix


def test_net_002_a_peer_name_resolving_to_loopback_is_not_a_pass() -> None:
    # h1's /etc/hosts maps h2 to 127.0.1.1: the connects reach h1's own listener (open) and a
    # closed port of its own (refused), which would read as reachable.
    h1 = node("h1", "h2")
    for port, state in (("16509", "open"), ("49152", "refused")):
        set_port(
            h1, "h2", port, state, "127.0.1.1", "" if state == "open" else "Connection refused"
        )
    rows = judge("NET-002", ("h1", h1), ("h2", node("h2", "h1")))
    for name in ("h1", "h2"):
        row = rows[name]
        assert row.status is E, row.message
        assert (
            "h1 -> h2 (h2.lab) port 16509 went to 127.0.1.1, a loopback address of h1 itself, "
            "not h2 - NET-001 judges the name" in row.message
        )
    # A firewall on the way still FAILs, and says the loopback connects too.
    set_port(h1, "h2", "49152", "timeout", "10.89.0.12", "no answer within 1 s")
    row = judge("NET-002", ("h1", h1), ("h2", node("h2", "h1")))["h1"]
    assert row.status is F, row.message
    assert "went to 127.0.1.1" in row.message
