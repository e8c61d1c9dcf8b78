"""Tests of the one_frontend_host module against the oned test double, through pyone.

The double (tests/one_double/oned_double.py) serves oned's XML-RPC API on loopback; the module
talks to it with the real pyone client over real HTTP, as it talks to a front-end.
"""

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyone
import pytest

from tests.one_double.oned_double import start
from tests.unit.ansible_env import ansible_env
from tests.unit.test_kvm_host_conf import load_library_module

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "modules"

ofh = load_library_module("one_frontend_host", library=LIBRARY)

PASSWORD = "Pw-7f3c9e1d-never-shown"
WRONG = "Wrong-4b2a81-never-shown"
SESSION = f"oneadmin:{PASSWORD}"


@pytest.fixture
def one():
    """A double whose hosts are monitored successfully 0.1 s after allocation."""
    with start(users={"oneadmin": PASSWORD}, interval=0.1) as double:
        yield double


def params(endpoint, **overrides):
    """The module's parameters with its defaults, as AnsibleModule hands them over."""
    values = {key: spec.get("default") for key, spec in ofh.ARGUMENT_SPEC.items()}
    values.update(
        endpoint=endpoint, session=SESSION, name="kvm1", wait_monitored=5, wait_interval=0.05
    )
    values.update(overrides)
    return values


def run(endpoint, check_mode=False, **overrides):
    return ofh.run(params(endpoint, **overrides), check_mode=check_mode)


def client(double, password=PASSWORD):
    return pyone.OneServer(double.url, session=f"oneadmin:{password}", protocol="xmlrpc")


def writes(double):
    """The state-changing calls the double received (method names)."""
    reads = ("one.hostpool.info", "one.host.info", "one.clusterpool.info", "one.cluster.info")
    return [method for method, _ in double.calls if method not in reads]


def assert_clean(*texts):
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text)
        assert PASSWORD not in blob
        assert WRONG not in blob


# --- registration ---------------------------------------------------------------------------


def test_new_host_is_allocated_and_waited_for_until_monitored(one):
    failed, result, warnings = run(one.url)

    assert not failed, result["msg"]
    assert result["changed"] is True
    assert warnings == []
    host = result["host"]
    assert host["id"] == one.host("kvm1").id
    assert (host["name"], host["im_mad"], host["vm_mad"]) == ("kvm1", "kvm", "kvm")
    assert (host["cluster_id"], host["cluster"]) == (0, "default")
    assert (host["state"], host["state_name"]) == (2, "MONITORED")
    assert result["waited"] > 0
    assert result["msg"].startswith(f"host kvm1 allocated as id {host['id']} in cluster default")
    assert ("one.host.allocate", ("kvm1", "kvm", "kvm", 0)) in one.calls
    assert one.host("kvm1").state == 2
    assert_clean(result, warnings)


def test_rerun_changes_nothing_and_only_reads(one):
    assert not run(one.url)[0]
    before = len(one.calls)

    failed, result, warnings = run(one.url)

    assert not failed
    assert result["changed"] is False
    assert result["actions"] == []
    assert result["mismatch"] == {}
    assert result["host"]["state_name"] == "MONITORED"
    assert warnings == []
    assert [m for m, _ in one.calls[before:]] == ["one.clusterpool.info", "one.hostpool.info"]
    assert "already registered" in result["msg"]


def test_wait_monitored_zero_returns_at_once(one):
    one.set_monitor(lambda name: (time.sleep(0.5), (True, ""))[1])

    failed, result, _ = run(one.url, wait_monitored=0)

    assert not failed
    assert result["changed"] is True
    assert result["host"]["state_name"] == "INIT"
    assert result["waited"] == 0


def test_registered_but_not_monitored_host_is_waited_for(one):
    host_id = client(one).host.allocate("kvm1", "kvm", "kvm", 0)

    failed, result, _ = run(one.url)

    assert not failed
    assert result["changed"] is False
    assert result["host"]["id"] == host_id
    assert result["host"]["state_name"] == "MONITORED"


def test_cluster_by_name_and_by_id(one):
    cluster_id = client(one).cluster.allocate("production")
    assert cluster_id == 100

    failed, by_name, _ = run(one.url, cluster="production")
    assert not failed, by_name["msg"]
    assert (by_name["host"]["cluster_id"], by_name["host"]["cluster"]) == (100, "production")
    assert one.host("kvm1").cluster_id == 100

    failed, by_id, _ = run(one.url, cluster="100")
    assert not failed
    assert by_id["changed"] is False
    assert by_id["mismatch"] == {}

    failed, other, _ = run(one.url, name="kvm2", cluster="0")
    assert not failed
    assert other["host"]["cluster"] == "default"
    assert one.host("kvm2").cluster_id == 0


def test_unknown_cluster_fails_listing_the_existing_ones(one):
    client(one).cluster.allocate("production")

    failed, result, _ = run(one.url, cluster="staging")

    assert failed
    assert result["changed"] is False
    assert result["msg"] == (
        f"OpenNebula at {one.url}: cluster 'staging' does not exist in OpenNebula "
        "(clusters: default (0), production (100))"
    )
    assert writes(one) == ["one.cluster.allocate"]  # the test's own
    assert one.hosts == {}

    failed, result, _ = run(one.url, cluster="7")
    assert failed
    assert "cluster '7' does not exist" in result["msg"]


# --- a host registered differently ------------------------------------------------------------


def test_host_in_another_cluster_is_reported_then_moved_on_request(one):
    production = client(one).cluster.allocate("production")
    host_id = client(one).host.allocate("kvm1", "kvm", "kvm", 0)
    one.wait_for_state("kvm1", 2)

    failed, reported, warnings = run(one.url, cluster="production")

    assert not failed
    assert reported["changed"] is False
    assert reported["mismatch"] == {
        "cluster": {"registered": "default (0)", "wanted": "production (100)"}
    }
    assert len(warnings) == 1
    assert "cluster default (0) (wanted production (100))" in warnings[0]
    assert "fix_mismatch" in warnings[0]
    assert one.host("kvm1").cluster_id == 0
    assert writes(one) == ["one.cluster.allocate", "one.host.allocate"]

    failed, fixed, _ = run(one.url, cluster="production", fix_mismatch=True)

    assert not failed, fixed["msg"]
    assert fixed["changed"] is True
    assert fixed["host"]["id"] == host_id  # moved, not re-created
    assert fixed["host"]["cluster_id"] == production
    assert one.host("kvm1").cluster_id == production
    assert ("one.cluster.addhost", (production, host_id)) in one.calls
    assert "moved to cluster production (100)" in fixed["msg"]

    failed, again, warnings = run(one.url, cluster="production", fix_mismatch=True)
    assert (failed, again["changed"], again["mismatch"], warnings) == (False, False, {}, [])


def test_host_with_other_drivers_is_reported_then_reallocated_on_request(one):
    old_id = client(one).host.allocate("kvm1", "qemu", "lxc", 0)
    one.wait_for_state("kvm1", 2)

    failed, reported, warnings = run(one.url)

    assert not failed
    assert reported["changed"] is False
    assert reported["mismatch"] == {
        "im_mad": {"registered": "qemu", "wanted": "kvm"},
        "vm_mad": {"registered": "lxc", "wanted": "kvm"},
    }
    assert "im_mad qemu (wanted kvm); vm_mad lxc (wanted kvm)" in warnings[0]
    assert one.host("kvm1").vm_mad == "lxc"

    failed, fixed, _ = run(one.url, fix_mismatch=True)

    assert not failed, fixed["msg"]
    assert fixed["changed"] is True
    assert fixed["host"]["id"] != old_id
    assert (fixed["host"]["im_mad"], fixed["host"]["vm_mad"]) == ("kvm", "kvm")
    assert fixed["host"]["state_name"] == "MONITORED"
    assert fixed["actions"][0].startswith(f"deleted host kvm1 (id {old_id})")
    assert ("one.host.delete", (old_id,)) in one.calls
    assert one.host("kvm1").vm_mad == "kvm"
    assert f"re-allocated as id {fixed['host']['id']} (was {old_id})" in fixed["msg"]


class ServerWithVMs:
    """The pyone server, except that host `name` reports VMs (the double runs no VM)."""

    def __init__(self, server, name, vms):
        self._server = server
        self._name = name
        self._vms = vms

    def _with_vms(self, host):
        if self._name == host.NAME:
            host.VMS.ID = list(self._vms)
        return host

    def __getattr__(self, attr):
        target = getattr(self._server, attr)
        if attr == "hostpool":
            return Namespace(info=lambda: self._pool(target.info()))
        if attr == "host":
            return Namespace(
                info=lambda *a: self._with_vms(target.info(*a)),
                delete=target.delete,
                allocate=target.allocate,
            )
        return target

    def _pool(self, pool):
        for host in pool.HOST:
            self._with_vms(host)
        return pool


class Namespace:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_driver_fix_is_refused_while_the_host_runs_vms(one):
    client(one).host.allocate("kvm1", "qemu", "kvm", 0)
    one.wait_for_state("kvm1", 2)

    def factory(endpoint, session, **kwargs):
        return ServerWithVMs(ofh.connect(endpoint, session, **kwargs), "kvm1", [12, 14])

    failed, result, _ = ofh.run(params(one.url, fix_mismatch=True), server_factory=factory)

    assert failed
    assert result["changed"] is False
    assert "runs VMs 12, 14" in result["msg"]
    assert "nothing was changed" in result["msg"]
    assert result["host"]["vms"] == [12, 14]
    assert "one.host.delete" not in writes(one)
    assert one.host("kvm1").im_mad == "qemu"

    failed, result, _ = ofh.run(params(one.url, state="absent"), server_factory=factory)
    assert failed
    assert "runs VMs 12, 14" in result["msg"]
    assert one.host("kvm1") is not None


# --- monitoring -------------------------------------------------------------------------------


def test_monitoring_failure_fails_with_the_hosts_error(one):
    one.set_monitor(
        lambda name: (False, f"ssh: connect to host {name} port 22: Connection refused")
    )

    failed, result, _ = run(one.url)

    assert failed
    assert result["changed"] is True  # the host was allocated before monitoring failed
    assert result["actions"][0].startswith("allocated host kvm1")
    assert result["host"]["state_name"] == "ERROR"
    msg = result["msg"]
    assert msg.startswith(
        f"OpenNebula at {one.url}: host kvm1 (id 0): monitoring failed, state ERROR"
    )
    assert "Error monitoring Host kvm1 (0): ssh: connect to host kvm1 port 22" in msg
    assert "\n" not in msg


def test_host_already_in_error_may_recover_during_the_wait(one):
    one.set_monitor(lambda name: (False, "not yet"))
    client(one).host.allocate("kvm1", "kvm", "kvm", 0)
    one.wait_for_state("kvm1", 3)

    threading.Timer(0.3, one.set_monitor, args=(lambda name: (True, ""),)).start()
    failed, result, _ = run(one.url)

    assert not failed, result["msg"]
    assert result["changed"] is False
    assert result["host"]["state_name"] == "MONITORED"
    assert result["host"]["error"] == ""
    assert result["waited"] >= 0.2


def test_wait_runs_out():
    with start(users={"oneadmin": PASSWORD}, interval=60) as slow:  # first monitor after 60 s
        began = time.monotonic()
        failed, result, _ = run(slow.url, wait_monitored=1, wait_interval=0.2)
        elapsed = time.monotonic() - began

    assert failed
    assert 1 <= elapsed < 3
    assert result["msg"] == (
        f"OpenNebula at {slow.url}: host kvm1 (id 0): not monitored after 1 s, state INIT"
    )
    assert result["host"]["state_name"] == "INIT"


def test_disabled_host_is_left_alone_with_a_warning(one):
    assert not run(one.url)[0]
    host_id = one.host("kvm1").id
    client(one).host.status(host_id, 1)  # disabled by an operator
    before = len(one.calls)

    failed, result, warnings = run(one.url)

    assert not failed
    assert result["changed"] is False
    assert result["host"]["state_name"] == "DISABLED"
    assert warnings == [
        f"host kvm1 (id {host_id}) is DISABLED in OpenNebula (an operator's choice): "
        "kvmprep neither enables it nor waits for it"
    ]
    assert "one.host.status" not in [m for m, _ in one.calls[before:]]


# --- check mode and state=absent ----------------------------------------------------------------


def test_check_mode_reports_what_would_be_registered(one):
    failed, result, _ = run(one.url, check_mode=True)

    assert not failed
    assert result["changed"] is True
    assert result["msg"] == (
        "would allocate host kvm1 (im_mad kvm, vm_mad kvm) in cluster default (0)"
    )
    assert result["host"]["id"] is None
    assert result["host"]["cluster"] == "default"
    assert one.hosts == {}
    assert writes(one) == []


def test_check_mode_fixes_nothing(one):
    client(one).cluster.allocate("production")
    client(one).host.allocate("kvm1", "kvm", "xen", 0)
    one.wait_for_state("kvm1", 2)
    before = writes(one)

    failed, result, _ = run(one.url, check_mode=True, cluster="production", fix_mismatch=True)

    assert not failed
    assert result["changed"] is True
    assert result["msg"].startswith("would re-allocate host kvm1")
    assert set(result["mismatch"]) == {"vm_mad", "cluster"}
    assert writes(one) == before
    assert one.host("kvm1").vm_mad == "xen"


def test_state_absent_deletes_then_changes_nothing(one):
    assert not run(one.url)[0]
    host_id = one.host("kvm1").id

    failed, checked, _ = run(one.url, check_mode=True, state="absent")
    assert (failed, checked["changed"]) == (False, True)
    assert one.host("kvm1") is not None

    failed, deleted, _ = run(one.url, state="absent")
    assert not failed
    assert deleted["changed"] is True
    assert deleted["host"]["id"] == host_id
    assert one.host("kvm1") is None

    failed, again, _ = run(one.url, state="absent")
    assert (failed, again["changed"], again["host"]) == (False, False, None)
    assert again["msg"] == "host kvm1 is not registered"


# --- errors on the way to oned ------------------------------------------------------------------


def test_wrong_password_is_one_line_without_the_password(one):
    failed, result, warnings = run(one.url, session=f"oneadmin:{WRONG}")

    assert failed
    assert result["msg"] == (
        f"OpenNebula at {one.url} (one.clusterpool.info): authentication failed: "
        "[one.clusterpool.info] User couldn't be authenticated, aborting call."
    )
    assert one.hosts == {}
    assert_clean(result, warnings)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_closed_port_is_reported_unreachable():
    endpoint = f"http://127.0.0.1:{free_port()}/RPC2"

    failed, result, _ = run(endpoint)

    assert failed
    assert result["msg"] == (
        f"OpenNebula at {endpoint} (one.clusterpool.info): connection refused "
        "(is oned running and listening there?)"
    )


def test_silent_endpoint_times_out():
    with socket.socket() as listener:  # the kernel accepts connections; nobody answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2"
        began = time.monotonic()
        failed, result, _ = run(endpoint, timeout=0.5)
        elapsed = time.monotonic() - began

    assert failed
    assert elapsed < 3
    assert result["msg"] == (
        f"OpenNebula at {endpoint} (one.clusterpool.info): connected, but no answer within "
        "0.5 s (timed out)"
    )


def test_not_an_xmlrpc_endpoint(one):
    endpoint = one.url.replace("/RPC2", "/other")

    failed, result, _ = run(endpoint)

    assert failed
    assert "HTTP error 404 (is it oned's XML-RPC endpoint" in result["msg"]


def test_https_to_a_plain_http_endpoint(one):
    endpoint = one.url.replace("http://", "https://")

    failed, result, _ = run(endpoint)

    assert failed
    assert result["msg"].startswith(f"OpenNebula at {endpoint} (one.clusterpool.info): TLS ")


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on loopback with a self-signed certificate; answers 404 to everything."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oned test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/RPC2", cert_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_untrusted_certificate_then_trusted_with_ca_path(tls_server):
    endpoint, cert_file = tls_server

    failed, result, _ = run(endpoint)
    assert failed
    assert result["msg"].startswith(
        f"OpenNebula at {endpoint} (one.clusterpool.info): TLS certificate not trusted: "
    )
    assert "(set ca_path, or validate_certs=false)" in result["msg"]

    # Trusted: the TLS handshake passes and the request reaches HTTP (this server says 404).
    failed, result, _ = run(endpoint, ca_path=str(cert_file))
    assert failed
    assert "HTTP error 404" in result["msg"]

    failed, result, _ = run(endpoint, validate_certs=False)
    assert "HTTP error 404" in result["msg"]


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the endpoint's host"),
        (OSError(113, "No route to host"), "unreachable (No route to host)"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset by peer"),
    ],
)
def test_network_errors_below_requests_are_named(cause, expected):
    # What requests raises for them (a ConnectionError wrapping urllib3's wrapping the OSError);
    # built here because the tests send traffic to loopback only.
    import requests
    import urllib3

    try:
        try:
            raise cause
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(None, f"Failed: {exc}") from exc
    except urllib3.exceptions.NewConnectionError as exc:
        wrapped = requests.exceptions.ConnectionError(
            urllib3.exceptions.MaxRetryError(None, "/RPC2", exc)
        )

    kind, reason = ofh.explain(wrapped, 30)

    assert kind == "unreachable"
    assert reason.startswith(expected)


def test_pyone_environment_cannot_switch_the_protocol(one, monkeypatch):
    # pyone picks gRPC when ONEAPI_PROTOCOL says so; the module always speaks XML-RPC.
    monkeypatch.setenv("ONEAPI_PROTOCOL", "grpc")
    monkeypatch.setenv("ONE_XMLRPC", "http://127.0.0.1:9/RPC2")

    failed, result, _ = run(one.url)

    assert not failed, result["msg"]
    assert one.host("kvm1") is not None


def test_an_unforeseen_answer_is_one_line_too():
    class Odd:  # a cluster pool whose clusters have no ID
        class clusterpool:  # pyone's attribute name
            @staticmethod
            def info():
                return Namespace(CLUSTER=[Namespace(NAME="default")])

    failed, result, _ = ofh.run(
        params("http://127.0.0.1:9/RPC2"), server_factory=lambda *a, **k: Odd()
    )

    assert failed
    assert result["msg"].startswith("OpenNebula at http://127.0.0.1:9/RPC2: unexpected ")
    assert "AttributeError" in result["msg"]
    assert "\n" not in result["msg"]
    assert "Traceback" in result["exception"]


# --- bad input ----------------------------------------------------------------------------------


#: The message names an example of a good endpoint, or why a URL with credentials is refused.
EXAMPLE = "is not an http(s) URL such as http://frontend:2633/RPC2"
NO_SCHEME = f"endpoint {EXAMPLE} (it does not start with http:// or https://)"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("frontend:2633", NO_SCHEME),
        (SESSION, NO_SCHEME),
        ("ftp://frontend/RPC2", f"endpoint 'ftp://frontend/RPC2' {EXAMPLE}"),
        ("http://", f"endpoint 'http://' {EXAMPLE}"),
        ("", NO_SCHEME),
        # urllib's reason follows (its wording is Python's).
        ("http://frontend:26x3/RPC2", f"endpoint 'http://frontend:26x3/RPC2' {EXAMPLE}: "),
        (
            f"http://oneadmin:{PASSWORD}@frontend:2633/RPC2",
            "endpoint 'http://***@frontend:2633/RPC2' holds credentials: give them in session, "
            "not in the URL",
        ),
    ],
)
def test_endpoint_must_be_an_http_url(endpoint, expected):
    failed, result, _ = run(endpoint)

    assert failed
    if expected.endswith(": "):
        assert result["msg"].startswith(expected)
    else:
        assert result["msg"] == expected
    assert_clean(result)


@pytest.mark.parametrize("session", ["oneadmin", f":{PASSWORD}", "oneadmin:", "", "\n"])
def test_session_must_be_user_colon_password_and_is_not_echoed(session):
    failed, result, _ = run("http://127.0.0.1:9/RPC2", session=session)

    assert failed
    assert result["msg"].startswith("session must be USER:PASSWORD")
    assert_clean(result)


def test_session_from_a_one_auth_file_keeps_its_first_line(one):
    failed, result, _ = run(one.url, session=f"  {SESSION}\nsecond line\n")

    assert not failed, result["msg"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "two words"}, "name 'two words' is not a host name"),
        ({"name": ""}, "name '' is not a host name"),
        ({"vmm_mad": ""}, "vmm_mad must be a driver name"),
        ({"wait_monitored": -1}, "wait_monitored must be 0 or more"),
        ({"wait_interval": 0}, "wait_interval must be more than 0"),
        ({"timeout": 0}, "timeout must be more than 0"),
    ],
)
def test_bad_values_are_refused_before_any_call(one, overrides, expected):
    failed, result, _ = run(one.url, **overrides)

    assert failed
    assert result["msg"].startswith(expected)
    assert one.calls == []


def test_oned_refusal_is_reported_in_one_line(one):
    failed, result, _ = run(one.url, name="-kvm1")  # oned refuses this host name

    assert failed
    assert result["msg"] == (
        f"OpenNebula at {one.url} (one.host.allocate): [one.host.allocate] Error allocating a "
        "new host. Invalid HOSTNAME, first character can't be '-'"
    )


# --- through Ansible ---------------------------------------------------------------------------


def _ansible_playbook():
    found = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    return found or shutil.which("ansible-playbook")


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Register a host
      kvmprep.kvm.one_frontend_host:
        endpoint: "{{ endpoint }}"
        session: "{{ session }}"
        name: kvm1
        cluster: "{{ cluster }}"
        wait_monitored: 5
        wait_interval: 0.1
    - name: Register it again, with a wrong password
      kvmprep.kvm.one_frontend_host:
        endpoint: "{{ endpoint }}"
        session: "{{ wrong_session }}"
        name: kvm1
      ignore_errors: true
    - name: Moving it is only reported
      kvmprep.kvm.one_frontend_host:
        endpoint: "{{ endpoint }}"
        session: "{{ session }}"
        name: kvm1
        cluster: default
"""


@pytest.mark.ansible
def test_through_ansible_the_secret_never_shows(one, tmp_path):
    playbook_path = _ansible_playbook()
    assert playbook_path is not None, "ansible-playbook is not installed (pip install .[test])"
    client(one).cluster.allocate("production")
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    # Secrets in a vars file, as from a vault: never on the command line.
    (tmp_path / "vars.json").write_text(
        json.dumps(
            {
                "endpoint": one.url,
                "session": SESSION,
                "wrong_session": f"oneadmin:{WRONG}",
                "cluster": 100,  # an id given as a YAML integer
            }
        )
    )
    env = ansible_env(
        tmp_path,
        ANSIBLE_KEEP_REMOTE_FILES="0",
        # The result's invocation shows how the module's arguments are logged: ansible-core
        # 2.21 adds it only when asked (2.19 and 2.20 always, and ignore the variable).
        ANSIBLE_INJECT_INVOCATION="True",
    )
    proc = subprocess.run(
        [playbook_path, "-i", "localhost,", "-c", "local", "-e", "@vars.json", "play.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_clean(proc.stdout, proc.stderr)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON from ansible-playbook (rc={proc.returncode}): {proc.stderr}")
    tasks = [task["hosts"]["localhost"] for task in output["plays"][0]["tasks"]]
    registered, refused, reported = tasks

    assert registered["changed"] is True, registered.get("msg")
    assert registered["host"]["state_name"] == "MONITORED"
    assert registered["host"]["cluster_id"] == 100
    assert registered["invocation"]["module_args"]["session"] == (
        "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    )

    assert refused["failed"] is True
    assert refused["msg"].startswith(f"OpenNebula at {one.url} (one.clusterpool.info): auth")
    assert "Traceback" not in json.dumps(refused)

    assert reported["changed"] is False
    assert reported["mismatch"]["cluster"]["wanted"] == "default (0)"
    assert any("fix_mismatch" in warning for warning in reported["warnings"])

    assert one.host("kvm1").cluster_id == 100
    assert proc.returncode == 0
