"""The oned test double (tests/one_double) behaves, for pyone, like a real oned: loopback only."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

import pyone
import pytest
import requests

from tests.one_double import oned_double
from tests.one_double.oned_double import DISABLED, ERROR, INIT, MONITORED, OFFLINE, start

SESSION = "oneadmin:pw"
DOUBLE = Path(oned_double.__file__)
# A stand-in for "ssh {host} cat /var/tmp/one/VERSION": hosts named ok* answer.
MONITOR_COMMAND = "case {host} in ok*) echo 7.4.0;; *) echo 'no route to {host}'; exit 255;; esac"


class GatedMonitor:
    """A monitor whose answer the test sets; it blocks until released."""

    def __init__(self, ok: bool = True, message: str = "") -> None:
        self.ok, self.message = ok, message
        self.release = threading.Event()
        self.seen: list[str] = []

    def __call__(self, name: str) -> tuple[bool, str]:
        self.seen.append(name)
        self.release.wait(10)
        return self.ok, self.message


@pytest.fixture
def one():
    with start(users={"oneadmin": "pw"}, monitor=lambda name: (True, ""), interval=0.05) as d:
        yield d


@pytest.fixture
def client(one):
    return pyone.OneServer(one.url, session=SESSION)


def test_url_is_loopback_and_version(one, client) -> None:
    assert one.url.startswith("http://127.0.0.1:")
    assert one.url.endswith("/RPC2")
    assert client.system.version() == oned_double.ONE_VERSION


def test_allocate_info_and_pool(one, client) -> None:
    hid = client.host.allocate("kvm1.example.org", "kvm", "kvm", -1)
    assert hid == 0
    assert client.host.allocate("kvm2.example.org", "kvm", "kvm", 0) == 1
    host = client.host.info(hid)
    assert (host.ID, host.NAME, host.IM_MAD, host.VM_MAD) == (0, "kvm1.example.org", "kvm", "kvm")
    assert (host.CLUSTER_ID, host.CLUSTER) == (0, "default")
    assert host.STATE in (INIT, MONITORED)
    assert host.HOST_SHARE.TOTAL_CPU == 0
    pool = client.hostpool.info()
    # oned lists pools newest first (oned.conf API_LIST_ORDER = "DESC")
    assert [h.NAME for h in pool.HOST] == ["kvm2.example.org", "kvm1.example.org"]
    assert one.host("kvm2.example.org").id == 1


def test_clusters(one, client) -> None:
    (default,) = client.clusterpool.info().CLUSTER
    assert (default.ID, default.NAME, default.DATASTORES.ID) == (0, "default", [0, 1, 2])
    cid = client.cluster.allocate("production")
    assert cid == 100
    hid = client.host.allocate("kvm1", "kvm", "kvm", cid)
    cluster = client.cluster.info(cid)
    assert cluster.NAME == "production"
    members = cluster.HOSTS.ID
    assert members == [hid]
    assert client.host.info(hid).CLUSTER == "production"
    assert client.cluster.info(0).HOSTS.ID == []
    # addhost moves a host; delhost sends it back to the default cluster
    assert client.cluster.addhost(0, hid) == 0
    assert (client.host.info(hid).CLUSTER_ID, client.cluster.info(cid).HOSTS.ID) == (0, [])
    client.cluster.addhost(cid, hid)
    assert client.cluster.delhost(cid, hid) == cid
    assert hid in client.cluster.info(0).HOSTS.ID
    assert one.clusters[cid].hosts == []
    with pytest.raises(pyone.OneException, match=r"NAME is already taken by CLUSTER 100\."):
        client.cluster.allocate("production")


def test_duplicate_name_is_the_oned_error(client) -> None:
    client.host.allocate("kvm1", "kvm", "kvm", -1)
    with pytest.raises(pyone.OneException) as err:
        client.host.allocate("kvm1", "kvm", "kvm", -1)
    assert str(err.value) == (
        "[one.host.allocate] Error allocating a new host. NAME is already taken by HOST 0."
    )


def test_missing_objects(client) -> None:
    with pytest.raises(pyone.OneNoExistsException) as err:
        client.host.info(7)
    assert str(err.value) == "[one.host.info] Error getting host [7]."

    with pytest.raises(pyone.OneNoExistsException, match=r"Error getting cluster \[99\]\."):
        client.host.allocate("kvm1", "kvm", "kvm", 99)
    with pytest.raises(pyone.OneNoExistsException, match=r"Error getting cluster \[5\]\."):
        client.cluster.info(5)


def test_raw_responses_have_oned_shape(one) -> None:
    proxy = xmlrpc.client.ServerProxy(one.url)
    assert proxy.one.host.allocate(SESSION, "kvm1", "kvm", "kvm", -1) == [True, 0, 0]
    assert proxy.one.host.allocate(SESSION, "kvm1", "kvm", "kvm", -1) == [
        False,
        "[one.host.allocate] Error allocating a new host. NAME is already taken by HOST 0.",
        0x4000,
        -1,
        -1,
    ]
    assert proxy.one.host.info("oneadmin:wrong", 0) == [
        False,
        "[one.host.info] User couldn't be authenticated, aborting call.",
        0x100,
        -1,
        -1,
    ]
    assert proxy.one.host.info(SESSION, 3)[2:4] == [0x400, 3]
    with pytest.raises(xmlrpc.client.Fault):
        proxy.one.host.info(SESSION, "0")
    with pytest.raises(xmlrpc.client.Fault):
        proxy.one.vm.info(SESSION, 0)


def test_authentication_error(one) -> None:
    bad = pyone.OneServer(one.url, session="oneadmin:nope")
    with pytest.raises(pyone.OneAuthenticationException, match="User couldn't be authenticated"):
        bad.hostpool.info()
    with pytest.raises(pyone.OneAuthenticationException):
        pyone.OneServer(one.url, session="nobody:pw").system.version()


def test_monitor_success_then_failure_then_recovery() -> None:
    gate = GatedMonitor()
    with start(users={"oneadmin": "pw"}, monitor=gate, interval=0.05) as one:
        client = pyone.OneServer(one.url, session=SESSION)
        hid = client.host.allocate("kvm1", "kvm", "kvm", -1)
        assert client.host.info(hid).STATE == INIT  # the monitor has not answered yet
        gate.release.set()
        one.wait_for_state("kvm1", MONITORED)
        assert client.host.info(hid).STATE == MONITORED
        gate.ok, gate.message = False, "ssh: connect to host kvm1 port 22: Connection refused"
        one.wait_for_state("kvm1", ERROR)
        host = client.host.info(hid)
        assert host.STATE == ERROR
        error = host.TEMPLATE["ERROR"]
        assert re.fullmatch(
            r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} : Error monitoring Host kvm1 \(0\): "
            r"ssh: connect to host kvm1 port 22: Connection refused",
            error,
        )
        gate.ok = True
        one.wait_for_state("kvm1", MONITORED)
        assert "ERROR" not in client.host.info(hid).TEMPLATE
        assert "kvm1" in gate.seen


def test_disable_offline_enable(client, one) -> None:
    hid = client.host.allocate("kvm1", "kvm", "kvm", -1)
    one.wait_for_state("kvm1", MONITORED)
    client.host.status(hid, 1)
    assert client.host.info(hid).STATE == DISABLED
    time.sleep(0.15)  # monitoring goes on but keeps DISABLED
    assert client.host.info(hid).STATE == DISABLED
    client.host.status(hid, 0)
    assert client.host.info(hid).STATE == MONITORED
    client.host.status(hid, 2)
    time.sleep(0.15)
    assert client.host.info(hid).STATE == OFFLINE
    with pytest.raises(pyone.OneInternalException, match="Wrong status code"):
        client.host.status(hid, 9)
    assert client.host.delete(hid) == hid
    assert client.hostpool.info().HOST == []


def test_without_monitor_host_is_monitored_after_an_interval() -> None:
    with start(users={"oneadmin": "pw"}, interval=1.0) as one:
        client = pyone.OneServer(one.url, session=SESSION)
        client.host.allocate("kvm1", "kvm", "kvm", -1)
        assert one.host("kvm1").state == INIT
        one.wait_for_state("kvm1", MONITORED, timeout=3)


def test_update_template(client) -> None:
    hid = client.host.allocate("kvm1", "kvm", "kvm", -1)
    client.host.update(hid, 'LABELS = "kvmprep"\nPIN = [ A = "1", B = "x y" ]', 1)
    tmpl = client.host.info(hid).TEMPLATE
    assert tmpl["LABELS"] == "kvmprep"
    assert tmpl["PIN"] == {"A": "1", "B": "x y"}
    client.host.update(hid, "<TEMPLATE><ONLY>1</ONLY></TEMPLATE>", 0)
    assert dict(client.host.info(hid).TEMPLATE) == {"ONLY": "1"}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with start(users={"oneadmin": "pw"}, state_file=str(state), interval=0.05) as one:
        client = pyone.OneServer(one.url, session=SESSION)
        cid = client.cluster.allocate("prod")
        client.host.allocate("kvm1", "kvm", "kvm", cid)
        one.wait_for_state("kvm1", MONITORED)
    with start(users={"oneadmin": "pw"}, state_file=str(state), interval=10) as again:
        client = pyone.OneServer(again.url, session=SESSION)
        (host,) = client.hostpool.info().HOST
        assert host.NAME == "kvm1"
        assert (host.NAME, host.CLUSTER_ID) == ("kvm1", cid)  # noqa: SIM300
        assert host.STATE == MONITORED
        assert client.cluster.info(cid).HOSTS.ID == [host.ID]
        assert client.host.allocate("kvm2", "kvm", "kvm", -1) == 1
        assert client.cluster.allocate("test") == cid + 1


def test_closed_port_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = pyone.OneServer(f"http://127.0.0.1:{port}/RPC2", session=SESSION)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.system.version()


def test_cli_with_monitor_command(tmp_path: Path) -> None:
    auth = tmp_path / "one_auth"
    auth.write_text("oneadmin:s3cret\n")
    state = tmp_path / "state.json"
    cmd = [
        sys.executable, str(DOUBLE), "--listen", "127.0.0.1:0", "--auth-file", str(auth),
        "--state-file", str(state), "--monitor-interval", "0.1",
        "--monitor-command", MONITOR_COMMAND,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        url = re.search(r"http://\S+/RPC2", line).group(0)
        client = pyone.OneServer(url, session="oneadmin:s3cret")
        good = client.host.allocate("ok1", "kvm", "kvm", -1)
        bad = client.host.allocate("down1", "kvm", "kvm", -1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = (client.host.info(good).STATE, client.host.info(bad).STATE)
            if states == (MONITORED, ERROR):
                break
            time.sleep(0.05)
        assert states == (MONITORED, ERROR)
        error = client.host.info(bad).TEMPLATE["ERROR"]
        assert error.endswith("Error monitoring Host down1 (1): no route to down1")
        assert state.exists()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_cli_rejects_an_empty_auth_file(tmp_path: Path) -> None:
    auth = tmp_path / "one_auth"
    auth.write_text("\n")
    proc = subprocess.run(
        [sys.executable, str(DOUBLE), "--auth-file", str(auth)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no user:password line" in proc.stderr


def test_rename_and_delete_messages_are_onelike(client) -> None:
    """Texts as a real oned 7.4.0 answered them (checked by hand, not in the fixtures)."""
    a = client.host.allocate("127.0.0.9", "kvm", "kvm", -1)
    b = client.host.allocate("127.0.0.8", "kvm", "kvm", -1)
    with pytest.raises(pyone.OneActionException) as err:
        client.host.rename(a, "127.0.0.8")
    assert str(err.value) == (
        "[one.host.rename] host cannot be renamed to 127.0.0.8 because it collides with host 1"
    )
    assert client.host.rename(a, "any name") == a  # oned does not apply HOSTNAME rules here
    cid = client.cluster.allocate("production")
    client.cluster.addhost(cid, b)
    with pytest.raises(pyone.OneActionException) as err:
        client.cluster.delete(cid)
    assert str(err.value) == (
        "[one.cluster.delete] Cannot delete cluster. Cluster 100 is not empty, it contains 1 hosts."
    )
    with pytest.raises(pyone.OneActionException, match="cannot be renamed to default"):
        client.cluster.rename(cid, "default")
    client.cluster.delhost(cid, b)
    assert client.cluster.delete(cid) == cid
    with pytest.raises(pyone.OneActionException, match=r"System Clusters \(ID < 100\)"):
        client.cluster.delete(0)
