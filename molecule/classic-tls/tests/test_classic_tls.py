"""Verify the classic daemon layout with the TLS transport: libvirtd runs with --listen, its socket
units are masked, it listens on 16514 only, and a KVM domain run by oneadmin live-migrates
between the Debian 12 and Debian 13 hosts over qemu+tls with x509 client certificates."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import testinfra

HOSTS = ("kvmprep-tls12", "kvmprep-tls13")
DATASTORE = "/var/lib/one/datastores/0"
DISK = f"{DATASTORE}/kvmprep-test.qcow2"
DOMAIN = "kvmprep-test"
DOMAIN_XML = Path(__file__).resolve().parents[2] / "default" / "files" / "kvmprep-test.xml"


def as_oneadmin(host, command: str):
    return host.run("runuser -u oneadmin -- sh -c %s", command)


def test_libvirtd_runs_as_a_classic_daemon_with_listen(host):
    assert host.service("libvirtd.socket").is_masked
    assert host.service("libvirtd-tcp.socket").is_masked
    assert host.service("libvirtd").is_running
    assert "--listen" in host.check_output("ps -o args= -C libvirtd")


def test_only_the_tls_port_listens(host):
    assert host.socket("tcp://0.0.0.0:16514").is_listening
    assert not host.socket("tcp://0.0.0.0:16509").is_listening


def test_server_key_and_client_key_are_private(host):
    assert host.file("/etc/pki/libvirt/private/serverkey.pem").mode == 0o600
    client_key = host.file("/var/lib/one/.pki/libvirt/clientkey.pem")
    assert client_key.user == "oneadmin"
    assert client_key.mode == 0o600


def test_oneadmin_uses_qemu_system(host):
    result = as_oneadmin(host, "virsh -c qemu:///system uri")
    assert result.rc == 0, result.stderr


def test_a_client_without_certificate_is_refused(host):
    # root has no client certificate in /etc/pki: the TLS listener must not let it in.
    name = host.check_output("hostname")
    result = host.run("virsh -c 'qemu+tls://%s/system' list < /dev/null", name)
    assert result.rc != 0


def domain_state(host) -> str:
    result = as_oneadmin(host, f"virsh -c qemu:///system domstate {DOMAIN}")
    return result.stdout.strip() if result.rc == 0 else "absent"


@pytest.fixture(scope="module")
def lab_domain():
    hosts = {name: testinfra.get_host(f"podman://{name}") for name in HOSTS}
    for host in hosts.values():
        created = as_oneadmin(
            host, f"mkdir -p {DATASTORE} && rm -f {DISK} && qemu-img create -q -f qcow2 {DISK} 16M"
        )
        assert created.rc == 0, created.stderr
    source = hosts[HOSTS[0]]
    source.run(f"cat > /tmp/kvmprep-test.xml <<'XML'\n{DOMAIN_XML.read_text()}\nXML")
    started = as_oneadmin(source, "virsh -c qemu:///system create /tmp/kvmprep-test.xml")
    assert started.rc == 0, started.stderr
    yield hosts
    for host in hosts.values():
        as_oneadmin(host, f"virsh -c qemu:///system destroy {DOMAIN}")


def test_domain_live_migrates_over_tls_there_and_back(lab_domain):
    first, second = (lab_domain[name] for name in HOSTS)
    for source, destination, name in ((first, second, HOSTS[1]), (second, first, HOSTS[0])):
        result = as_oneadmin(
            source,
            f"virsh -c qemu:///system migrate --live --unsafe {DOMAIN} qemu+tls://{name}/system",
        )
        assert result.rc == 0, result.stderr
        assert domain_state(destination) == "running"
        assert domain_state(source) == "absent"
        time.sleep(1)
