"""The oned double answers byte for byte as a real oned 7.4.0 did (tests/fixtures/oned/).

The captures were made by sending a fixed sequence of calls to a real oned (see the README in
that folder). This test sends the same sequence to the double and compares every response that
has a capture: the raw methodResponse bytes (value types, element names and order, CDATA, error
codes and texts), only the ctime timestamps in ERROR texts being masked.
"""

from __future__ import annotations

import http.client
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
import xmlrpc.client
from pathlib import Path

import pyone
import pytest

from tests.one_double.oned_double import ERROR, start

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "oned"
PASSWORD = "fidelity-pw"
S = f"oneadmin:{PASSWORD}"
TEMPLATE = 'LABELS="kvmprep"\nPIN=[A="1",B="x y"]'

# (capture name, method, params after the session); "WATCH" lets the host's monitoring fail.
SCENARIO: list[tuple[str, str, tuple]] = [
    ("system.version", "one.system.version", ()),
    ("auth_failure.host.info", "one.host.info", ("BAD", 0)),
    ("clusterpool.info.fresh", "one.clusterpool.info", ()),
    ("hostpool.info.empty", "one.hostpool.info", ()),
    ("host.allocate.ok", "one.host.allocate", ("127.0.0.2", "kvm", "kvm", -1)),
    ("host.info.new", "one.host.info", (0,)),
    ("host.allocate.duplicate", "one.host.allocate", ("127.0.0.2", "kvm", "kvm", -1)),
    ("host.allocate.bad_cluster", "one.host.allocate", ("127.0.0.3", "kvm", "kvm", 99)),
    ("host.allocate.bad_name", "one.host.allocate", ("bad name", "kvm", "kvm", -1)),
    ("host.allocate.wrong_type", "one.host.allocate", ("127.0.0.4", "kvm", "kvm", "x")),
    ("host.info.missing", "one.host.info", (99,)),
    ("hostpool.info.one", "one.hostpool.info", ()),
    ("unknown_method", "one.nosuch.method", ()),
    ("cluster.allocate.ok", "one.cluster.allocate", ("production",)),
    ("cluster.allocate.duplicate", "one.cluster.allocate", ("production",)),
    ("cluster.info.new", "one.cluster.info", (100,)),
    ("cluster.addhost.ok", "one.cluster.addhost", (100, 0)),
    ("cluster.info.with_host", "one.cluster.info", (100,)),
    ("host.info.in_cluster", "one.host.info", (0,)),
    ("cluster.delhost.ok", "one.cluster.delhost", (100, 0)),
    ("clusterpool.info.two", "one.clusterpool.info", ()),
    ("host.update.append", "one.host.update", (0, TEMPLATE, 1)),
    ("host.info.updated", "one.host.info", (0,)),
    ("host.status.bad", "one.host.status", (0, 9)),
    ("WATCH", "", ()),
    ("host.info.after_watch", "one.host.info", (0,)),
    ("hostpool.info.after_watch", "one.hostpool.info", ()),
    ("host.status.disable", "one.host.status", (0, 1)),
    ("host.info.disabled", "one.host.info", (0,)),
    ("host.status.offline", "one.host.status", (0, 2)),
    ("host.info.offline", "one.host.info", (0,)),
    ("host.status.enable", "one.host.status", (0, 0)),
    ("host.info.enabled", "one.host.info", (0,)),
    ("host.delete.ok", "one.host.delete", (0,)),
    ("host.delete.missing", "one.host.delete", (0,)),
]

_CTIME = re.compile(rb"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


def _post(url: str, method: str, params: tuple) -> bytes:
    """The raw body of the response, as the capture script read it (no pyone, no parsing)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", u.path, xmlrpc.client.dumps(params, method).encode(), {})
        return conn.getresponse().read()
    finally:
        conn.close()


def _masked(raw: bytes) -> bytes:
    return _CTIME.sub(b"CTIME", raw)


@pytest.fixture(scope="module")
def replayed() -> dict[str, bytes]:
    """Runs the scenario against the double once; returns the raw response of every step."""
    answer_failure, teardown = threading.Event(), threading.Event()
    attempts = []

    def monitor(name: str) -> tuple[bool, str]:
        # Like monitord for 127.0.0.2 (no sshd): the probes cannot be copied. Until the WATCH
        # step the first attempt is still under way, as it was on the real oned; later attempts
        # never end, so that no state change races the calls after it.
        attempts.append(name)
        if len(attempts) == 1:
            answer_failure.wait(10)
        else:
            teardown.wait(10)
        return False, ""

    responses = {}
    with start(users={"oneadmin": PASSWORD}, monitor=monitor, interval=0.05) as one:
        try:
            for name, method, params in SCENARIO:
                if name == "WATCH":
                    answer_failure.set()
                    one.wait_for_state("127.0.0.2", ERROR)
                    continue
                session = "oneadmin:wrong-password" if params[:1] == ("BAD",) else S
                args = params[1:] if params[:1] == ("BAD",) else params
                responses[name] = _post(one.url, method, (session, *args))
        finally:
            answer_failure.set()
            teardown.set()
    return responses


CAPTURED = sorted(p.stem for p in FIXTURES.glob("*.xml"))


def test_every_capture_is_replayed() -> None:
    assert len(CAPTURED) >= 25
    steps = {name for name, _, _ in SCENARIO}
    assert set(CAPTURED) <= steps


@pytest.mark.parametrize("name", CAPTURED)
def test_double_answers_like_oned(name: str, replayed: dict[str, bytes]) -> None:
    expected = _masked((FIXTURES / f"{name}.xml").read_bytes())
    got = _masked(replayed[name])
    if got != expected:  # say where, in terms of the decoded values and XML element paths
        assert _decoded(got) == _decoded(expected)
    assert got == expected


def _paths(doc: str) -> list[tuple[str, str]]:
    out = []

    def walk(el, prefix):
        path = f"{prefix}/{el.tag}"
        out.append((path, (el.text or "").strip() if len(el) == 0 else ""))
        for child in el:
            walk(child, path)

    walk(ET.fromstring(doc), "")
    return out


def _decoded(raw: bytes):
    try:
        (value,), _ = xmlrpc.client.loads(raw)
    except xmlrpc.client.Fault as fault:
        return ("fault", fault.faultCode, fault.faultString)
    if isinstance(value, list) and len(value) > 1 and str(value[1]).startswith("<"):
        return [value[0], _paths(value[1]), *value[2:]]
    return value


@pytest.mark.parametrize("name", ["host.info.new", "hostpool.info.after_watch"])
def test_pyone_parses_capture_and_double_alike(name: str, replayed: dict[str, bytes]) -> None:
    """pyone's generated bindings give the same objects for oned's body and the double's."""

    def parsed(raw: bytes):
        (value,), _ = xmlrpc.client.loads(raw)
        return pyone.bindings.parseString(value[1].encode())

    real, double = parsed((FIXTURES / f"{name}.xml").read_bytes()), parsed(replayed[name])
    hosts = [real] if name.startswith("host.") else real.HOST
    doubles = [double] if name.startswith("host.") else double.HOST
    for r, d in zip(hosts, doubles, strict=True):
        assert (r.ID, r.NAME, r.STATE, r.CLUSTER_ID, r.CLUSTER) == (
            d.ID,
            d.NAME,
            d.STATE,
            d.CLUSTER_ID,
            d.CLUSTER,
        )
        assert (r.IM_MAD, r.VM_MAD, r.HOST_SHARE.TOTAL_CPU) == (
            d.IM_MAD,
            d.VM_MAD,
            d.HOST_SHARE.TOTAL_CPU,
        )
        assert _CTIME.sub(b"", str(dict(r.TEMPLATE)).encode()) == _CTIME.sub(
            b"", str(dict(d.TEMPLATE)).encode()
        )
