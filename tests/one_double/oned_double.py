"""TEST DOUBLE of OpenNebula's oned XML-RPC API (hosts and clusters). Not OpenNebula.

This module answers the part of oned's XML-RPC API that a host-registration client uses, in
oned's own wire format, so that kvmprep's registration code (and pyone, which it uses) can be
tested without an OpenNebula front-end. It re-implements that behaviour as OpenNebula's API
documentation describes it and as a real oned showed it (responses captured in
``tests/fixtures/oned/``); it contains no OpenNebula code. Python standard library only: it
also runs on a plain Debian python3 (>= 3.11) inside a lab container, for example as a systemd
service.

What it does
------------
- Responses are arrays as oned sends them: ``[True, body, 0]`` on success and
  ``[False, message, error_code, resp_id, replication_idx]`` on failure (the last item an
  ``<i8>``), with oned's error codes (AUTHENTICATION 0x100 ... LOCKED 0x8000) and message texts
  (``[one.host.allocate] Error allocating a new host. NAME is already taken by HOST 0.``).
- Bodies of ``*.info`` calls are XML documents in oned's format (HOST, HOST_POOL, CLUSTER,
  CLUSTER_POOL), element for element as a real oned renders a host that has no monitoring data.
  Pools list the newest object first (oned's default ``API_LIST_ORDER = "DESC"``).
- Sessions are ``user:password`` strings checked against the configured users.
- Hosts start in INIT (0) after ``one.host.allocate``. A monitor stands in for monitord reaching
  the host: it runs for every host right after allocation and then every ``interval`` seconds;
  success makes the host MONITORED (2) and clears TEMPLATE/ERROR, failure makes it ERROR (3)
  and records ``TEMPLATE/ERROR = "<ctime> : Error monitoring Host NAME (ID): <output>"``, as
  oned does, when the host enters ERROR. DISABLED (4) and OFFLINE (8) hosts keep their state
  (OFFLINE ones are not monitored). Without a monitor a host becomes MONITORED once
  ``interval`` has passed.
- The default cluster 0, "default", exists from the start (with datastores 0, 1, 2 as in a
  fresh oned); user clusters get IDs from 100 on, like oned's.
- With a state file, every change is written to it (JSON) and read back on start.

Methods: one.system.version, one.system.config, one.host.allocate/info/delete/status/update/
rename, one.hostpool.info, one.cluster.allocate/info/delete/update/rename/addhost/delhost,
one.clusterpool.info. Others answer with the fault xmlrpc-c gives for an unknown method.

Running it
----------
CLI (for a lab container or by hand)::

    python3 oned_double.py --listen 127.0.0.1:2633 --auth-file /var/lib/one/.one/one_auth \\
        [--state-file /var/lib/one-double/state.json] \\
        [--monitor-command 'ssh -o BatchMode=yes {host} cat /var/tmp/one/VERSION'] \\
        [--monitor-interval 30]

``--auth-file`` holds ``user:password`` lines (like OpenNebula's one_auth). ``{host}`` in the
monitor command is replaced by the host name (shell-quoted); exit status 0 means monitored,
anything else an error whose output is recorded.

Python (tests)::

    from tests.one_double.oned_double import start
    with start(users={"oneadmin": "pw"}, monitor=lambda name: (True, "")) as one:
        client = pyone.OneServer(one.url, session="oneadmin:pw")
        ...
        assert one.host("kvm1").state == 2

``Double`` also has ``hosts`` / ``clusters`` (copies of the state, by ID), ``calls`` (every
method received, without the session), ``wait_for_state(name, state)`` and
``set_monitor(callable)`` to change what the monitor answers from now on.

Faithfulness: tests/unit/test_oned_double_fidelity.py replays calls captured from a real oned
7.4.0 (tests/fixtures/oned/) and requires the same response bytes. Known differences (details in
tests/fixtures/oned/README.md): no ACLs (every configured user acts as oneadmin), no VMs,
datastores or networks, no MONITORING data or HOST_SHARE capacity for monitored hosts, the
ERROR detail is the monitor's output, no hooks, no raft.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from xml.sax.saxutils import escape as xml_escape
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

ONE_VERSION = "7.4.0"

# Error codes (OpenNebula XML-RPC API reference).
SUCCESS = 0x0000
AUTHENTICATION = 0x0100
AUTHORIZATION = 0x0200
NO_EXISTS = 0x0400
ACTION = 0x0800
XML_RPC_API = 0x1000
INTERNAL = 0x2000
ALLOCATE = 0x4000
LOCKED = 0x8000

# Host states (OpenNebula's HostState numbering; 1, 5, 6 and 7 are no longer used).
INIT = 0
MONITORED = 2
ERROR = 3
DISABLED = 4
OFFLINE = 8
STATE_NAMES = {
    INIT: "INIT",
    MONITORED: "MONITORED",
    ERROR: "ERROR",
    DISABLED: "DISABLED",
    OFFLINE: "OFFLINE",
}

# one.host.status argument.
STATUS_ENABLED, STATUS_DISABLED, STATUS_OFFLINE = 0, 1, 2

DEFAULT_CLUSTER_ID = 0
DEFAULT_CLUSTER_NAME = "default"
FIRST_USER_CLUSTER_ID = 100

# replication_idx of a failure response: UINT64_MAX sent as a signed <i8>.
_NO_REPLICATION = -1

# xmlrpc-c fault codes (oned's XML-RPC library).
_FAULT_TYPE = -501
_FAULT_NO_SUCH_METHOD = -506

_INVALID_NAME_CHARS = "&|:\\\";/'#{}$<>\t\n\v\f\r"

Monitor = Callable[[str], tuple[bool, str]]
Template = list  # [(NAME, "value" | [(KEY, "value"), ...]), ...]


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class Host:
    id: int
    name: str
    im_mad: str
    vm_mad: str
    cluster_id: int
    state: int = INIT
    prev_state: int = INIT
    template: list = field(default_factory=list)
    monitored_ok: bool = False
    allocated_at: float = 0.0
    last_monitored: float = 0.0
    # oned's pool listing shows the body stored at insert time, whose HOST_SHARE/DATASTORES is
    # still empty, until the host is written again (any state or template change).
    stored_since_insert: bool = False

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))

    def template_value(self, name: str) -> str | None:
        for key, value in self.template:
            if key == name and isinstance(value, str):
                return value
        return None


@dataclass
class Cluster:
    id: int
    name: str
    hosts: list = field(default_factory=list)
    datastores: list = field(default_factory=list)
    vnets: list = field(default_factory=list)
    template: list = field(default_factory=list)


class Fault(Exception):
    """An XML-RPC fault, as xmlrpc-c raises it for a malformed call."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Failure(Exception):
    """An oned failure response: [False, message, code, resp_id, replication_idx]."""

    def __init__(self, code: int, message: str, resp_id: int = -1):
        super().__init__(message)
        self.code = code
        self.message = message
        self.resp_id = resp_id


class I8(int):
    """An integer sent as <i8> (oned sends replication_idx that way)."""


# --------------------------------------------------------------------------------------------
# Templates: OpenNebula's "NAME = VALUE" syntax and XML, rendered as oned renders them
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<name>[A-Za-z_][\w\-.]*)
      | (?P<eq>=)
      | (?P<lbr>\[)
      | (?P<rbr>\])
      | (?P<comma>,)
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | (?P<bare>[^\s,\[\]="]+)
    )""",
    re.VERBOSE | re.DOTALL,
)


def _tokens(text: str):
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            return
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"syntax error at: {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "comment":
            continue
        value = m.group(kind)
        if kind == "dq":
            value = re.sub(r"\\(.)", r"\1", value)
            kind = "str"
        elif kind == "bare":
            kind = "str"
        yield kind, value


def parse_template(text: str) -> Template:
    """Parses a template given as OpenNebula template text or as XML."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("<"):
        return _parse_template_xml(text)
    toks = list(_tokens(text))
    out: Template = []
    i = 0

    def expect(kind):
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind:
            raise ValueError("syntax error in template")
        i += 1
        return toks[i - 1][1]

    while i < len(toks):
        name = expect("name").upper()
        expect("eq")
        if i < len(toks) and toks[i][0] == "lbr":
            i += 1
            pairs = []
            while i < len(toks) and toks[i][0] != "rbr":
                if toks[i][0] == "comma":
                    i += 1
                    continue
                key = expect("name").upper()
                expect("eq")
                kind, val = toks[i] if i < len(toks) else ("", "")
                if kind not in ("str", "name"):
                    raise ValueError("syntax error in vector attribute")
                i += 1
                pairs.append((key, val))
            expect("rbr")
            out.append((name, pairs))
        else:
            if i < len(toks) and toks[i][0] in ("str", "name"):
                out.append((name, toks[i][1]))
                i += 1
            else:
                out.append((name, ""))
    return out


def _parse_template_xml(text: str) -> Template:
    root = ET.fromstring(text)
    out: Template = []
    for child in root:
        if len(child):
            out.append((child.tag.upper(), [(c.tag.upper(), c.text or "") for c in child]))
        else:
            out.append((child.tag.upper(), child.text or ""))
    return out


def merge_template(old: Template, new: Template) -> Template:
    """Append mode of one.*.update: attributes of the new template replace the old ones."""
    names = {name for name, _ in new}
    return [a for a in old if a[0] not in names] + list(new)


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_template(tmpl: Template, root: str = "TEMPLATE") -> str:
    # oned keeps attributes in a multimap (sorted by name, insertion order among equal names)
    # and the pairs of a vector attribute in a map (sorted by key).
    parts = [f"<{root}>"]
    for name, value in sorted(tmpl, key=lambda a: a[0]):
        if isinstance(value, str):
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
        else:
            inner = "".join(f"<{k}>{_cdata(v)}</{k}>" for k, v in sorted(dict(value).items()) if k)
            parts.append(f"<{name}>{inner}</{name}>")
    parts.append(f"</{root}>")
    return "".join(parts)


def _ids(tag: str, ids) -> str:
    return f"<{tag}>" + "".join(f"<ID>{i}</ID>" for i in sorted(ids)) + f"</{tag}>"


def _text(value) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------
# The server state and the API methods
# --------------------------------------------------------------------------------------------


class OnedState:
    """Hosts and clusters, behind one lock, persisted to an optional JSON file."""

    def __init__(self, state_file: str | None = None):
        self.lock = threading.RLock()
        self.state_file = state_file
        self.hosts: dict[int, Host] = {}
        self.clusters: dict[int, Cluster] = {}
        self.next_host_id = 0
        self.next_cluster_id = FIRST_USER_CLUSTER_ID
        if state_file and Path(state_file).exists():
            self._load()
        else:
            self.clusters[DEFAULT_CLUSTER_ID] = Cluster(
                DEFAULT_CLUSTER_ID,
                DEFAULT_CLUSTER_NAME,
                datastores=[0, 1, 2],
                template=[("RESERVED_CPU", ""), ("RESERVED_MEM", "")],
            )
            self.save()

    def _load(self) -> None:
        data = json.loads(Path(self.state_file).read_text(encoding="utf-8"))

        def tmpl(raw):
            return [(n, v if isinstance(v, str) else [tuple(p) for p in v]) for n, v in raw]

        for h in data["hosts"]:
            h["template"] = tmpl(h["template"])
            host = Host(**h)
            self.hosts[host.id] = host
        for c in data["clusters"]:
            c["template"] = tmpl(c["template"])
            cluster = Cluster(**c)
            self.clusters[cluster.id] = cluster
        self.next_host_id = data["next_host_id"]
        self.next_cluster_id = data["next_cluster_id"]

    def save(self) -> None:
        if not self.state_file:
            return
        data = {
            "format": "kvmprep oned double state/1",
            "hosts": [asdict(h) for h in self.hosts.values()],
            "clusters": [asdict(c) for c in self.clusters.values()],
            "next_host_id": self.next_host_id,
            "next_cluster_id": self.next_cluster_id,
        }
        tmp = Path(f"{self.state_file}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(self.state_file)

    # ---------------------------------------------------------------------------- rendering

    def host_xml(self, host: Host, pool: bool = False) -> str:
        cluster = self.clusters.get(host.cluster_id)
        if pool and not host.stored_since_insert:
            datastores = "<DATASTORES></DATASTORES>"
        else:
            datastores = (
                "<DATASTORES><DISK_USAGE><![CDATA[0]]></DISK_USAGE><FREE_DISK><![CDATA[0]]>"
                "</FREE_DISK><MAX_DISK><![CDATA[0]]></MAX_DISK><USED_DISK><![CDATA[0]]>"
                "</USED_DISK></DATASTORES>"
            )
        return (
            "<HOST>"
            f"<ID>{host.id}</ID>"
            f"<NAME>{_text(host.name)}</NAME>"
            f"<STATE>{host.state}</STATE>"
            f"<PREV_STATE>{host.prev_state}</PREV_STATE>"
            f"<IM_MAD>{_cdata(host.im_mad)}</IM_MAD>"
            f"<VM_MAD>{_cdata(host.vm_mad)}</VM_MAD>"
            f"<CLUSTER_ID>{host.cluster_id}</CLUSTER_ID>"
            f"<CLUSTER>{_text(cluster.name if cluster else '')}</CLUSTER>"
            "<HOST_SHARE>"
            "<MEM_USAGE>0</MEM_USAGE><CPU_USAGE>0</CPU_USAGE>"
            "<TOTAL_MEM>0</TOTAL_MEM><TOTAL_CPU>0</TOTAL_CPU>"
            "<MAX_MEM>0</MAX_MEM><MAX_CPU>0</MAX_CPU>"
            "<RUNNING_VMS>0</RUNNING_VMS><VMS_THREAD>1</VMS_THREAD>"
            f"{datastores}"
            "<PCI_DEVICES></PCI_DEVICES>"
            "<NUMA_NODES></NUMA_NODES>"
            "</HOST_SHARE>"
            "<VMS></VMS>"
            f"{render_template(host.template)}"
            "<MONITORING/>"
            "</HOST>"
        )

    def cluster_xml(self, cluster: Cluster) -> str:
        return (
            "<CLUSTER>"
            f"<ID>{cluster.id}</ID>"
            f"<NAME>{_text(cluster.name)}</NAME>"
            f"{_ids('HOSTS', cluster.hosts)}"
            f"{_ids('DATASTORES', cluster.datastores)}"
            f"{_ids('VNETS', cluster.vnets)}"
            f"{render_template(cluster.template)}"
            "</CLUSTER>"
        )

    # ---------------------------------------------------------------------------- lookups

    def _host(self, oid: int) -> Host:
        host = self.hosts.get(oid)
        if host is None:
            raise Failure(NO_EXISTS, f"Error getting host [{oid}].", oid)
        return host

    def _cluster(self, oid: int) -> Cluster:
        cluster = self.clusters.get(oid)
        if cluster is None:
            raise Failure(NO_EXISTS, f"Error getting cluster [{oid}].", oid)
        return cluster

    def set_state(self, host: Host, state: int) -> None:
        """A pool update: oned sets PREV_STATE to the state it writes."""
        host.state = state
        host.prev_state = state
        host.stored_since_insert = True

    # ---------------------------------------------------------------------------- host API

    def host_allocate(self, name: str, im_mad: str, vm_mad: str, cluster_id: int) -> int:
        if cluster_id == -1:
            cluster_id = DEFAULT_CLUSTER_ID
        cluster = self._cluster(cluster_id)
        error = _hostname_error(name) or _name_error(name)
        if not error and not im_mad:
            error = "IM_MAD_NAME cannot be empty."
        if not error and not vm_mad:
            error = "VMM_MAD_NAME cannot be empty."
        if not error:
            for other in self.hosts.values():
                if other.name == name:
                    error = f"NAME is already taken by HOST {other.id}."
                    break
        if error:
            raise Failure(ALLOCATE, f"Error allocating a new host. {error}")
        oid = self.next_host_id
        self.next_host_id += 1
        self.hosts[oid] = Host(
            oid,
            name,
            im_mad,
            vm_mad,
            cluster_id,
            # oned copies the drivers into the template of a new host
            template=[
                ("IM_MAD", im_mad),
                ("RESERVED_CPU", ""),
                ("RESERVED_MEM", ""),
                ("VM_MAD", vm_mad),
            ],
            allocated_at=time.time(),
        )
        cluster.hosts = sorted({*cluster.hosts, oid})
        self.save()
        return oid

    def host_delete(self, oid: int) -> int:
        host = self._host(oid)
        del self.hosts[oid]
        cluster = self.clusters.get(host.cluster_id)
        if cluster:
            cluster.hosts = [h for h in cluster.hosts if h != oid]
        self.save()
        return oid

    def host_status(self, oid: int, status: int) -> int:
        host = self._host(oid)
        if status == STATUS_ENABLED:
            if host.state == DISABLED and host.monitored_ok:
                self.set_state(host, MONITORED)
            else:
                self.set_state(host, INIT)
        elif status == STATUS_DISABLED:
            self.set_state(host, DISABLED)
        elif status == STATUS_OFFLINE:
            self.set_state(host, OFFLINE)
            host.monitored_ok = False
        else:
            raise Failure(INTERNAL, "Wrong status code")
        self.save()
        return oid

    def host_update(self, oid: int, text: str, append: int) -> int:
        if append not in (0, 1):
            raise Failure(XML_RPC_API, "Wrong update type")
        host = self._host(oid)
        host.template = _update(host.template, text, append)
        host.stored_since_insert = True
        self.save()
        return oid

    def host_rename(self, oid: int, new_name: str) -> int:
        host = self._host(oid)
        if new_name == host.name:
            return oid
        for other in self.hosts.values():
            if other.name == new_name:
                raise Failure(
                    ACTION,
                    f"host cannot be renamed to {new_name} because it collides with host "
                    f"{other.id}",
                )
        error = _name_error(new_name)  # oned checks only the generic name rules here
        if error:
            raise Failure(ACTION, error)
        host.name = new_name
        host.stored_since_insert = True
        self.save()
        return oid

    # ---------------------------------------------------------------------------- cluster API

    def cluster_allocate(self, name: str) -> int:
        error = _name_error(name)
        if not error:
            for other in self.clusters.values():
                if other.name == name:
                    error = f"NAME is already taken by CLUSTER {other.id}."
                    break
        if error:
            raise Failure(ALLOCATE, f"Error allocating a new cluster. {error}")
        oid = self.next_cluster_id
        self.next_cluster_id += 1
        self.clusters[oid] = Cluster(
            oid, name, template=[("RESERVED_CPU", ""), ("RESERVED_MEM", "")]
        )
        self.save()
        return oid

    def cluster_delete(self, oid: int) -> int:
        cluster = self._cluster(oid)
        if oid < FIRST_USER_CLUSTER_ID:
            raise Failure(
                ACTION, "Cannot delete cluster. System Clusters (ID < 100) cannot be deleted."
            )
        for kind, members in (
            ("hosts", cluster.hosts),
            ("datastores", cluster.datastores),
            ("vnets", cluster.vnets),
        ):
            if members:
                raise Failure(
                    ACTION,
                    f"Cannot delete cluster. Cluster {oid} is not empty, it contains "
                    f"{len(members)} {kind}.",
                )
        del self.clusters[oid]
        self.save()
        return oid

    def cluster_update(self, oid: int, text: str, append: int) -> int:
        if append not in (0, 1):
            raise Failure(XML_RPC_API, "Wrong update type")
        cluster = self._cluster(oid)
        cluster.template = _update(cluster.template, text, append)
        self.save()
        return oid

    def cluster_rename(self, oid: int, new_name: str) -> int:
        cluster = self._cluster(oid)
        if new_name == cluster.name:
            return oid
        for other in self.clusters.values():
            if other.name == new_name:
                raise Failure(
                    ACTION,
                    f"cluster cannot be renamed to {new_name} because it collides with "
                    f"cluster {other.id}",
                )
        error = _name_error(new_name)
        if error:
            raise Failure(ACTION, error)
        cluster.name = new_name
        self.save()
        return oid

    def cluster_addhost(self, oid: int, host_id: int) -> int:
        cluster = self._cluster(oid)
        host = self._host(host_id)
        if host.cluster_id != oid:
            old = self.clusters.get(host.cluster_id)
            if old:
                old.hosts = [h for h in old.hosts if h != host_id]
            host.cluster_id = oid
            host.stored_since_insert = True
            cluster.hosts = sorted({*cluster.hosts, host_id})
            self.save()
        return oid


def _update(tmpl: Template, text: str, append: int) -> Template:
    try:
        new = parse_template(text)
    except (ValueError, ET.ParseError) as exc:
        raise Failure(INTERNAL, f"Cannot update template. Parse error: {exc}") from exc
    return merge_template(tmpl, new) if append == 1 else new


def _name_error(name: str) -> str | None:
    if not name:
        return "Invalid NAME, it cannot be empty"
    for ch in name:
        if ch in _INVALID_NAME_CHARS:
            return f"Invalid NAME, char '{ch}' is not allowed"
    if len(name) > 128:
        return "Invalid NAME, max length is 128 chars"
    return None


def _hostname_error(name: str) -> str | None:
    if len(name) < 2 or len(name) > 63:
        return (
            "Invalid HOSTNAME, HOSTNAME length should be greater than 1, but smaller than 64 "
            "characters"
        )
    if name[0] in "-._":
        return f"Invalid HOSTNAME, first character can't be '{name[0]}'"
    for ch in name:
        if not (ch.isascii() and ch.isalnum()) and ch not in "-._":
            return f"Invalid HOSTNAME, '{ch}' is invalid character for a HOSTNAME"
    return None


# --------------------------------------------------------------------------------------------
# XML-RPC front
# --------------------------------------------------------------------------------------------


def _arg(params, index: int, kind: type, default=None):
    """Reads parameter `index` like xmlrpc-c's paramList.get*() does."""
    if index >= len(params):
        if default is not None:
            return default
        raise Fault(_FAULT_TYPE, "Not enough parameters")
    value = params[index]
    if type(value) is not kind:
        names = {int: "integer", str: "string", bool: "boolean"}
        raise Fault(_FAULT_TYPE, f"Parameter that is supposed to be {names[kind]} is not")
    return value


def _value(v) -> str:
    """One XML-RPC value, written as xmlrpc-c (oned's library) writes it."""
    if isinstance(v, bool):
        return f"<value><boolean>{int(v)}</boolean></value>"
    if isinstance(v, I8):
        return f"<value><i8>{int(v)}</i8></value>"
    if isinstance(v, int):
        return f"<value><i4>{v}</i4></value>"
    if isinstance(v, str):
        return f"<value><string>{xml_escape(v)}</string></value>"
    if isinstance(v, list):
        items = "".join(_value(x) + "\r\n" for x in v)
        return f"<value><array><data>\r\n{items}</data></array></value>"
    raise TypeError(f"cannot send {type(v).__name__}")


_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\r\n<methodResponse>\r\n'


def _response_xml(result) -> bytes:
    return (
        f"{_XML_HEAD}<params>\r\n<param>{_value(result)}</param>\r\n</params>\r\n"
        "</methodResponse>\r\n"
    ).encode()


def _fault_xml(code: int, message: str) -> bytes:
    return (
        f"{_XML_HEAD}<fault>\r\n<value><struct>\r\n"
        f"<member><name>faultCode</name>\r\n{_value(code)}</member>\r\n"
        f"<member><name>faultString</name>\r\n{_value(message)}</member>\r\n"
        "</struct></value>\r\n</fault>\r\n</methodResponse>\r\n"
    ).encode()


class Oned:
    """The XML-RPC method table over an OnedState."""

    def __init__(self, state: OnedState, users: dict[str, str], on_allocate=None):
        self.state = state
        self.users = dict(users)
        self.on_allocate = on_allocate
        self.calls: list[tuple[str, tuple]] = []
        self.listen: tuple[str, int] = ("127.0.0.1", 2633)
        s = state
        self.methods = {
            "one.system.version": lambda p: ONE_VERSION,
            "one.system.config": lambda p: self._config(),
            "one.host.allocate": lambda p: self._allocated(
                s.host_allocate(_arg(p, 1, str), _arg(p, 2, str), _arg(p, 3, str), _arg(p, 4, int))
            ),
            "one.host.delete": lambda p: s.host_delete(_arg(p, 1, int)),
            "one.host.info": lambda p: (
                _arg(p, 2, bool, False),
                s.host_xml(s._host(_arg(p, 1, int))),
            )[1],
            "one.host.update": lambda p: s.host_update(
                _arg(p, 1, int), _arg(p, 2, str), _arg(p, 3, int, 0)
            ),
            "one.host.rename": lambda p: s.host_rename(_arg(p, 1, int), _arg(p, 2, str)),
            "one.host.status": lambda p: s.host_status(_arg(p, 1, int), _arg(p, 2, int)),
            "one.hostpool.info": lambda p: (
                "<HOST_POOL>"
                + "".join(
                    s.host_xml(h, pool=True) for _, h in sorted(s.hosts.items(), reverse=True)
                )
                + "</HOST_POOL>"
            ),
            "one.cluster.allocate": lambda p: s.cluster_allocate(_arg(p, 1, str)),
            "one.cluster.delete": lambda p: s.cluster_delete(_arg(p, 1, int)),
            "one.cluster.info": lambda p: (
                _arg(p, 2, bool, False),
                s.cluster_xml(s._cluster(_arg(p, 1, int))),
            )[1],
            "one.cluster.update": lambda p: s.cluster_update(
                _arg(p, 1, int), _arg(p, 2, str), _arg(p, 3, int, 0)
            ),
            "one.cluster.rename": lambda p: s.cluster_rename(_arg(p, 1, int), _arg(p, 2, str)),
            "one.cluster.addhost": lambda p: s.cluster_addhost(_arg(p, 1, int), _arg(p, 2, int)),
            # oned ignores the cluster id: a host leaves its cluster for the default one.
            "one.cluster.delhost": lambda p: (
                _arg(p, 1, int),
                s.cluster_addhost(DEFAULT_CLUSTER_ID, _arg(p, 2, int)),
            )[0],
            "one.clusterpool.info": lambda p: (
                "<CLUSTER_POOL>"
                + "".join(s.cluster_xml(c) for _, c in sorted(s.clusters.items(), reverse=True))
                + "</CLUSTER_POOL>"
            ),
        }

    def _allocated(self, oid: int) -> int:
        if self.on_allocate:
            self.on_allocate(oid)
        return oid

    def _config(self) -> str:
        """A few attributes of oned.conf (a default 7.4 one), in oned's format."""
        address, port = self.listen
        kvm = [
            ("ARGUMENTS", "-t 15 -r 0 kvm -p"),
            ("DEFAULT", "vmm_exec/vmm_exec_kvm.conf"),
            ("EXECUTABLE", "one_vmm_exec"),
            ("KEEP_SNAPSHOTS", "yes"),
            ("LIVE_RESIZE", "yes"),
            ("NAME", "kvm"),
            ("SUNSTONE_NAME", "KVM"),
            ("SUPPORT_SHAREABLE", "yes"),
            ("TYPE", "kvm"),
        ]
        monitord = [
            ("ARGUMENTS", "-c monitord.conf"),
            ("EXECUTABLE", "onemonitord"),
            ("NAME", "monitord"),
            ("THREADS", "8"),
        ]
        attrs = [
            ("API_LIST_ORDER", "DESC"),
            ("IM_MAD", monitord),
            ("LISTEN_ADDRESS", address),
            ("PORT", str(port)),
            ("VM_MAD", kvm),
        ]
        return render_template(attrs, "OPENNEBULA_CONFIGURATION")

    def authenticate(self, session) -> bool:
        if not isinstance(session, str) or ":" not in session:
            return False
        user, _, password = session.partition(":")
        return user in self.users and self.users[user] == password

    def call(self, method: str, params: tuple):
        """Returns the response array, or raises Fault."""
        handler = self.methods.get(method)
        if handler is None:
            raise Fault(_FAULT_NO_SUCH_METHOD, f"Method '{method}' not defined")
        session = _arg(params, 0, str)
        with self.state.lock:
            self.calls.append((method, tuple(params[1:])))
        if not self.authenticate(session):
            return self._failure(
                method, Failure(AUTHENTICATION, "User couldn't be authenticated, aborting call.")
            )
        try:
            with self.state.lock:
                body = handler(params)
        except Failure as failure:
            return self._failure(method, failure)
        return [True, body, SUCCESS]

    @staticmethod
    def _failure(method: str, failure: Failure) -> list:
        return [
            False,
            f"[{method}] {failure.message}",
            failure.code,
            failure.resp_id,
            I8(_NO_REPLICATION),
        ]


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def log_message(self, format, *args):  # quiet: tests read their own output
        pass


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, oned: Oned, family=socket.AF_INET):
        self.address_family = family
        self.oned = oned
        super().__init__(addr, requestHandler=_Handler, logRequests=False, allow_none=False)

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        try:
            params, method = xmlrpc.client.loads(data, use_builtin_types=False)
        except Exception as exc:  # malformed request: an XML-RPC fault, as any server sends
            return _fault_xml(-503, f"Call XML not a proper XML-RPC call. {exc}")
        try:
            return _response_xml(self.oned.call(method, params))
        except Fault as fault:
            return _fault_xml(fault.code, fault.message)


# --------------------------------------------------------------------------------------------
# Monitoring: stands in for monitord reaching the hosts
# --------------------------------------------------------------------------------------------


def command_monitor(template: str, timeout: float = 60.0) -> Monitor:
    """A monitor that runs a shell command; `{host}` is replaced by the shell-quoted name."""

    def monitor(name: str) -> tuple[bool, str]:
        cmd = template.replace("{host}", shlex.quote(name))
        try:
            proc = subprocess.run(
                cmd,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"Timeout monitoring host ({timeout:g} s)"
        output = proc.stdout.decode("utf-8", "replace").strip()
        return proc.returncode == 0, output

    return monitor


class _Monitoring(threading.Thread):
    def __init__(self, state: OnedState, monitor: Monitor | None, interval: float):
        super().__init__(name="oned-double-monitor", daemon=True)
        self.state = state
        self.monitor = monitor
        self.interval = interval
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.due: dict[int, float] = {}

    def host_allocated(self, oid: int) -> None:
        delay = 0.0 if self.monitor else self.interval
        self.due[oid] = time.monotonic() + delay
        self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        with self.state.lock:  # hosts restored from a state file are monitored at once
            for oid in self.state.hosts:
                self.due.setdefault(oid, time.monotonic())
        while not self.stopping.is_set():
            now = time.monotonic()
            with self.state.lock:
                todo = [
                    (oid, host.name)
                    for oid, host in self.state.hosts.items()
                    if host.state != OFFLINE and self.due.setdefault(oid, now) <= now
                ]
            for oid, name in todo:
                if self.stopping.is_set():
                    return
                self._monitor_one(oid, name)
            with self.state.lock:
                for oid in list(self.due):
                    if oid not in self.state.hosts:
                        del self.due[oid]
                next_due = min(self.due.values(), default=now + self.interval)
            self.wake.wait(max(0.01, min(next_due - time.monotonic(), self.interval)))
            self.wake.clear()

    def _monitor_one(self, oid: int, name: str) -> None:
        if self.monitor is None:
            ok, message = True, ""
        else:
            try:
                ok, message = self.monitor(name)
            except Exception as exc:
                ok, message = False, f"{type(exc).__name__}: {exc}"
        with self.state.lock:
            self.due[oid] = time.monotonic() + self.interval
            host = self.state.hosts.get(oid)
            if host is None or host.name != name or host.state == OFFLINE:
                return
            host.last_monitored = time.time()
            if ok:
                host.monitored_ok = True
                host.stored_since_insert = True
                host.template = [a for a in host.template if a[0] != "ERROR"]
                if host.state != DISABLED:
                    self.state.set_state(host, MONITORED)
            elif host.state != ERROR:  # oned records the error when the state changes to ERROR
                error = f"{time.ctime()} : Error monitoring Host {host.name} ({host.id}): {message}"
                host.template = [a for a in host.template if a[0] != "ERROR"]
                host.template.append(("ERROR", error))
                host.stored_since_insert = True
                if host.state != DISABLED:
                    self.state.set_state(host, ERROR)
            self.state.save()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class Double:
    """A running oned double. `url` is its XML-RPC endpoint; `stop()` (or `with`) ends it."""

    def __init__(
        self,
        users: dict[str, str],
        monitor: Monitor | None = None,
        interval: float = 0.2,
        state_file: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.state = OnedState(state_file)
        self._monitoring = _Monitoring(self.state, monitor, interval)
        self.oned = Oned(self.state, users, on_allocate=self._monitoring.host_allocated)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), self.oned, family)
        bound_host, bound_port = self._server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/RPC2"
        self.oned.listen = (bound_host, bound_port)
        self.port = bound_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._monitoring.start()

    # -- state for assertions (copies, taken under the lock) ----------------------------------
    @property
    def hosts(self) -> dict[int, Host]:
        with self.state.lock:
            return copy.deepcopy(self.state.hosts)

    @property
    def clusters(self) -> dict[int, Cluster]:
        with self.state.lock:
            return copy.deepcopy(self.state.clusters)

    @property
    def calls(self) -> list[tuple[str, tuple]]:
        """(method, params without the session) of every call received, in order."""
        with self.state.lock:
            return list(self.oned.calls)

    def host(self, name: str) -> Host | None:
        with self.state.lock:
            for h in self.state.hosts.values():
                if h.name == name:
                    return copy.deepcopy(h)
        return None

    def wait_for_state(self, name: str, state: int, timeout: float = 5.0) -> Host:
        deadline = time.monotonic() + timeout
        while True:
            host = self.host(name)
            if host is not None and host.state == state:
                return host
            if time.monotonic() > deadline:
                got = None if host is None else host.state_name
                raise TimeoutError(f"host {name}: state {got}, wanted {STATE_NAMES[state]}")
            time.sleep(0.02)

    def set_monitor(self, monitor: Monitor | None) -> None:
        self._monitoring.monitor = monitor

    def stop(self) -> None:
        self._monitoring.stop()
        self._server.shutdown()
        self._server.server_close()
        self._monitoring.join(timeout=5)

    def __enter__(self) -> Double:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(
    users: dict[str, str] | None = None,
    monitor: Monitor | None = None,
    interval: float = 0.2,
    state_file: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Double:
    """Starts a double on a free loopback port (by default) and returns it, already serving."""
    return Double(
        users if users is not None else {"oneadmin": "oneadmin"},
        monitor=monitor,
        interval=interval,
        state_file=state_file,
        host=host,
        port=port,
    )


def read_auth_file(path: str) -> dict[str, str]:
    users = {}
    with Path(path).open(encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}: expected user:password lines")
            users[user] = password
    if not users:
        raise ValueError(f"{path}: no user:password line")
    return users


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="TEST DOUBLE of OpenNebula's oned XML-RPC API (hosts and clusters)."
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 2633),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:2633)",
    )
    parser.add_argument("--auth-file", required=True, help="user:password lines (like one_auth)")
    parser.add_argument("--state-file", help="JSON file that keeps hosts and clusters")
    parser.add_argument(
        "--monitor-command", help="shell command run per host, {host} replaced; exit 0 = monitored"
    )
    parser.add_argument("--monitor-interval", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        users = read_auth_file(args.auth_file)
    except (OSError, ValueError) as exc:
        print(f"oned double: {exc}", file=sys.stderr)
        return 1
    monitor = command_monitor(args.monitor_command) if args.monitor_command else None
    double = Double(
        users,
        monitor=monitor,
        interval=args.monitor_interval,
        state_file=args.state_file,
        host=args.listen[0],
        port=args.listen[1],
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(
        f"oned double (TEST DOUBLE, OpenNebula {ONE_VERSION} API) on {double.url}",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
