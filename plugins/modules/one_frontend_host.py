#!/usr/bin/python
"""one_frontend_host: register a KVM host with OpenNebula through its XML-RPC API (pyone)."""

# Ansible module conventions: the documentation strings come before the imports. Unlike the
# other modules of kvmprep this one runs on the CONTROLLER (the role delegates it to localhost
# with ansible_playbook_python), where kvmprep's own environment provides pyone.
DOCUMENTATION = r"""
---
module: one_frontend_host
short_description: Register (or remove) a KVM host in OpenNebula and wait until it is monitored
description:
  - Talks to oned's XML-RPC API with pyone, the client OpenNebula publishes for Python.
  - I(state=present) allocates the host (C(one.host.allocate)) when OpenNebula has no host of that
    name, in the cluster given by name or id, then waits (bounded by I(wait_monitored)) until
    OpenNebula reports it C(MONITORED). It fails with the host's state and its error message
    (C(TEMPLATE/ERROR)) when monitoring fails or the wait runs out.
  - A host already registered with the same drivers in the same cluster is left as it is
    (C(changed=false)); when it is not monitored yet, the module waits for it as above.
  - A host registered with other drivers or in another cluster is reported (a warning and
    C(mismatch) in the result, C(changed=false)). With I(fix_mismatch=true) it is moved to the
    cluster (C(one.cluster.addhost)); other drivers can only be set by deleting the host and
    allocating it again, which is done only when it runs no VM (else the module fails and
    changes nothing). A re-allocated host gets a new id and loses the attributes set on it.
  - I(state=absent) deletes the host, unless it runs VMs (then it fails and changes nothing).
  - Hosts that an operator set C(DISABLED) or C(OFFLINE) are not enabled nor waited for; a
    warning says so.
  - Errors from oned or from the way to it (authentication, authorization, connection refused,
    name resolution, timeout, TLS) fail with one line naming the endpoint, the XML-RPC call and
    the reason. The password never appears in the result, the warnings or the messages.
version_added: "0.1.0"
requirements:
  - pyone 7.x on the machine the module runs on (the controller)
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  endpoint:
    description:
      - URL of oned's XML-RPC API, for example C(http://frontend:2633/RPC2).
      - Must be an C(http) or C(https) URL with a host name and no credentials in it.
    type: str
    required: true
  session:
    description:
      - "C(USER:PASSWORD) (or C(USER:TOKEN)) of an OpenNebula user allowed to manage hosts, as in
        a C(one_auth) file: surrounding white space and anything after the first line are
        ignored."
    type: str
    required: true
  name:
    description:
      - The host name OpenNebula knows the host by (and reaches it by, over SSH).
      - Required unless I(state=query).
    type: str
  im_mad:
    description: Information (monitoring) driver of the host.
    type: str
    default: kvm
  vmm_mad:
    description: Virtualization driver of the host (C(VM_MAD) in OpenNebula's host document).
    type: str
    default: kvm
    aliases: [vm_mad]
  cluster:
    description:
      - Cluster the host belongs to, by name or numeric id. Digits are tried as an id first,
        then as a name.
      - An unknown cluster fails, listing the existing ones.
    type: str
    default: default
  fix_mismatch:
    description:
      - When the host is registered in another cluster or with other drivers, C(false) only
        reports it; C(true) moves it to I(cluster) and re-allocates it when the drivers differ
        (only if it runs no VM).
    type: bool
    default: false
  state:
    description:
      - Whether the host must be registered or not.
      - C(query) changes nothing and returns every host and cluster of OpenNebula (in I(hosts)
        and I(clusters), two calls; I(name) is then not needed); what kvmprep check reads.
    type: str
    choices: [present, absent, query]
    default: present
  wait_monitored:
    description:
      - Seconds to wait for the host to be C(MONITORED) after allocating it, or when it is
        registered but not monitored yet. C(0) does not wait.
    type: int
    default: 120
  wait_interval:
    description: Seconds between two reads of the host's state while waiting.
    type: float
    default: 2
  timeout:
    description: Seconds each XML-RPC call may take (connecting, then reading the answer).
    type: float
    default: 30
  validate_certs:
    description: With an C(https) endpoint, verify oned's certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle (PEM) to verify an C(https) endpoint with, instead of the system's.
    type: path
notes:
  - Runs on the controller; delegate it to localhost with the controller's Python
    (C(ansible_python_interpreter={{ ansible_playbook_python }})).
  - Put C(no_log) on the task; the module also hides the password from its own output.
  - Needs OpenNebula 5.0 or later (C(one.host.allocate) with a cluster id as fourth argument).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the host and cluster pools; allocates, moves, deletes and waits for nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Register the host with OpenNebula
  kvmprep.kvm.one_frontend_host:
    endpoint: http://frontend:2633/RPC2
    session: "{{ one_frontend_auth }}"
    name: "{{ inventory_hostname }}"
    cluster: default
  delegate_to: localhost
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  no_log: true
"""

RETURN = r"""
changed:
  description: Whether the host was (or, in check mode, would be) allocated, moved or deleted.
  returned: always
  type: bool
msg:
  description: What was done (or would be done), in one line.
  returned: always
  type: str
  sample: "host kvm1 allocated as id 3 in cluster default (0); MONITORED after 4.1 s"
host:
  description:
    - The host as OpenNebula reports it at the end. In check mode, for a host that would be
      allocated, C(id) and C(state) are null. After a deletion, the host as it was.
  returned: always (null when there is no such host and I(state=absent))
  type: dict
  contains:
    id: {description: Host id, type: int}
    name: {description: Host name, type: str}
    state: {description: "Host state number (2: MONITORED)", type: int}
    state_name: {description: "Host state name (INIT, MONITORED, ERROR, DISABLED...)", type: str}
    im_mad: {description: Information driver, type: str}
    vm_mad: {description: Virtualization driver, type: str}
    cluster_id: {description: Cluster id, type: int}
    cluster: {description: Cluster name, type: str}
    error:
      description: The host's last monitoring error (C(TEMPLATE/ERROR)), empty if none.
      type: str
    vms: {description: Ids of the VMs on the host, type: list, elements: int}
  sample:
    id: 3
    name: kvm1
    state: 2
    state_name: MONITORED
    im_mad: kvm
    vm_mad: kvm
    cluster_id: 0
    cluster: default
    error: ""
    vms: []
mismatch:
  description:
    - How the registered host differs from what was asked, per field (C(im_mad), C(vm_mad),
      C(cluster)); empty when it does not.
  returned: always
  type: dict
  sample: {cluster: {registered: "default (0)", wanted: "kvm (100)"}}
actions:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
waited:
  description: Seconds spent waiting for the host to be monitored.
  returned: always
  type: float
hosts:
  description: With I(state=query), every host of OpenNebula, each with the fields of I(host).
  returned: when I(state=query) succeeded
  type: list
  elements: dict
clusters:
  description: With I(state=query), every cluster of OpenNebula (C(id), C(name)).
  returned: when I(state=query) succeeded
  type: list
  elements: dict
endpoint:
  description: The XML-RPC endpoint used (empty when it was refused as not a URL).
  returned: always
  type: str
"""

import errno
import re
import socket
import ssl
import time
import traceback
import warnings
import xmlrpc.client
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import pyone
    import requests
    from urllib3.exceptions import InsecureRequestWarning

    PYONE_IMPORT_ERROR = None
except ImportError:  # reported by main() with Ansible's usual message
    pyone = None
    requests = None
    InsecureRequestWarning = Warning
    PYONE_IMPORT_ERROR = traceback.format_exc()

# oned's host states (include/Host.h); pyone.HOST_STATES has the same numbers.
HOST_STATE_NAMES = (
    "INIT",
    "MONITORING_MONITORED",
    "MONITORED",
    "ERROR",
    "DISABLED",
    "MONITORING_ERROR",
    "MONITORING_INIT",
    "MONITORING_DISABLED",
    "OFFLINE",
)
MONITORED_STATES = frozenset((1, 2))  # MONITORING_MONITORED: monitored, being refreshed
ERROR_STATES = frozenset((3, 5))
PARKED_STATES = frozenset((4, 7, 8))  # set by an operator: not enabled, not waited for

HOST_NAME_RE = re.compile(r"^[^\s'\"]{1,128}$")


class RegistrationError(Exception):
    """Registration failed or was refused; the message is one line, free of secrets."""

    def __init__(self, message, host=None):
        super().__init__(message)
        self.host = host


class OneCallError(Exception):
    """An XML-RPC call failed; ``reason`` says why in one line."""

    def __init__(self, method, reason, kind="api"):
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason
        self.kind = kind  # auth, authz, unreachable, timeout, tls, protocol, api


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def redact_url(url):
    """The URL without any user:password@ part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def check_endpoint(endpoint):
    """Return the endpoint stripped, or raise ValueError saying what an endpoint looks like."""
    text = (endpoint or "").strip()
    example = "an http(s) URL such as http://frontend:2633/RPC2"
    if "://" not in text:
        # Not echoed: without a scheme it may well be a user:password pasted in the wrong place.
        raise ValueError(f"endpoint is not {example} (it does not start with http:// or https://)")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"endpoint {redact_url(text)!r} is not {example}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {redact_url(text)!r} is not {example}")
    if "@" in parts.netloc:
        raise ValueError(
            f"endpoint {redact_url(text)!r} holds credentials: give them in session, not in the URL"
        )
    if port == 0:
        raise ValueError(f"endpoint {text!r} is not {example}: port 0")
    return text


def check_session(session):
    """Return (session, user) from a one_auth-style text, or raise ValueError (without it)."""
    lines = (session or "").strip().splitlines()
    first = lines[0].strip() if lines else ""
    user, sep, secret = first.partition(":")
    if not sep or not user or not secret:
        raise ValueError(
            "session must be USER:PASSWORD (the content of a one_auth file); "
            "the value given is not (it is not shown)"
        )
    return first, user


def check_host_name(name):
    text = (name or "").strip()
    if not HOST_NAME_RE.match(text) or not text.isprintable():
        raise ValueError(
            f"name {name!r} is not a host name (1 to 128 printable characters, "
            "no white space or quotes)"
        )
    return text


# ---------------------------------------------------------------------------------------------
# Errors of the way to oned, in one line
# ---------------------------------------------------------------------------------------------


def _chain(exc):
    """exc and every exception it wraps (cause, context, reason, args), breadth first."""
    seen, queue = [], [exc]
    while queue:
        current = queue.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        queue.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            queue.append(reason)
        queue.extend((current.__cause__, current.__context__))
    return seen


def _os_reason(exc):
    """The first plain OS-level error in the chain, as (errno, text), or None."""
    for item in _chain(exc):
        if isinstance(item, socket.gaierror):
            return ("gai", item.strerror or str(item))
        if isinstance(item, ssl.SSLError):
            continue
        if isinstance(item, OSError) and item.errno is not None and item.strerror:
            return (item.errno, item.strerror)
    return None


def _tls_reason(exc):
    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            detail = item.verify_message or item.reason or str(item)
            return f"TLS certificate not trusted: {detail} (set ca_path, or validate_certs=false)"
        if isinstance(item, ssl.SSLError):
            detail = item.reason or item.strerror or str(item)
            hint = " (is the endpoint plain http?)" if "WRONG_VERSION" in str(detail) else ""
            return f"TLS handshake failed: {detail}{hint}"
    return None


def explain(exc, timeout=None):
    """(kind, one-line reason) for an exception raised by a pyone call."""
    if pyone is not None and isinstance(exc, pyone.OneException):
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, pyone.OneAuthenticationException):
            return "auth", f"authentication failed: {text}"
        if isinstance(exc, pyone.OneAuthorizationException):
            return "authz", f"not authorized: {text}"
        return "api", text
    if requests is not None and isinstance(exc, requests.exceptions.SSLError):
        return "tls", _tls_reason(exc) or "TLS error"
    within = f" within {timeout:g} s" if timeout else ""
    if requests is not None and isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timeout", f"no connection{within} (timed out)"
    if requests is not None and isinstance(exc, requests.exceptions.ReadTimeout):
        return "timeout", f"connected, but no answer{within} (timed out)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout", f"no answer{within} (timed out)"
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return "protocol", (
            f"HTTP error {exc.errcode} (is it oned's XML-RPC endpoint, "
            "usually http://<front-end>:2633/RPC2?)"
        )
    if isinstance(exc, (ExpatError, xmlrpc.client.ResponseError)):
        return "protocol", f"the answer is not XML-RPC ({exc})"
    if isinstance(exc, xmlrpc.client.Fault):
        return "api", f"fault {exc.faultCode}: {exc.faultString}"
    tls = _tls_reason(exc)
    if tls:
        return "tls", tls
    reason = _os_reason(exc)
    if reason is not None:
        code, text = reason
        if code == "gai":
            return "unreachable", f"cannot resolve the endpoint's host name ({text})"
        if code == errno.ECONNREFUSED:
            return "unreachable", "connection refused (is oned running and listening there?)"
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable", f"unreachable ({text})"
        if code == errno.ETIMEDOUT:
            return "timeout", f"connection timed out ({text})"
        return "unreachable", text[0].lower() + text[1:]
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        return "unreachable", type(exc).__name__
    text = " ".join(str(exc).split())
    return "api", f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# OpenNebula logic (pure: takes any object with pyone's server interface)
# ---------------------------------------------------------------------------------------------


def state_name(state):
    try:
        number = int(state)
    except (TypeError, ValueError):
        return str(state)
    if 0 <= number < len(HOST_STATE_NAMES):
        return HOST_STATE_NAMES[number]
    return f"UNKNOWN({number})"


def _template_error(host):
    template = getattr(host, "TEMPLATE", None)
    if not isinstance(template, dict):
        return ""
    error = template.get("ERROR", "")
    if isinstance(error, dict):  # a vector attribute: ERROR=[MESSAGE=..., TIMESTAMP=...]
        error = error.get("MESSAGE", "") or " ".join(str(v) for v in error.values())
    return " ".join(str(error or "").split())


def _vm_ids(host):
    vms = getattr(host, "VMS", None)
    ids = getattr(vms, "ID", None) or []
    if not isinstance(ids, (list, tuple)):
        ids = [ids]
    return [int(i) for i in ids]


def host_summary(host):
    """The fields of a pyone HOST the module reports."""
    return {
        "id": int(host.ID),
        "name": host.NAME,
        "state": int(host.STATE),
        "state_name": state_name(host.STATE),
        "im_mad": host.IM_MAD,
        "vm_mad": host.VM_MAD,
        "cluster_id": int(host.CLUSTER_ID),
        "cluster": host.CLUSTER,
        "error": _template_error(host),
        "vms": _vm_ids(host),
    }


def _cluster_label(name, cluster_id):
    return f"{name} ({cluster_id})"


class HostRegistrar:
    """Registration of one host, on a pyone-like server object (``server.host.info(id)``...)."""

    def __init__(self, server, sleep=time.sleep, clock=time.monotonic, timeout=None):
        self.server = server
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout
        self.actions = []
        self.warnings = []
        self.waited = 0.0

    # -- calls ------------------------------------------------------------------------------

    def call(self, method, *args):
        """server.<method>(*args); any failure becomes a OneCallError with a one-line reason."""
        target = self.server
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except Exception as exc:  # every failure of the call is reported in one line
            kind, reason = explain(exc, self.timeout)
            raise OneCallError("one." + method, reason, kind) from None

    def clusters(self):
        pool = self.call("clusterpool.info")
        # oned lists pools newest first; messages list them by id.
        return sorted((int(c.ID), c.NAME) for c in (pool.CLUSTER or []))

    def resolve_cluster(self, spec):
        """(id, name) of the cluster given by id or name; RegistrationError when unknown."""
        spec = str(spec).strip()
        clusters = self.clusters()
        if spec.isdigit():
            for cluster_id, name in clusters:
                if cluster_id == int(spec):
                    return cluster_id, name
        for cluster_id, name in clusters:
            if name == spec:
                return cluster_id, name
        known = ", ".join(_cluster_label(n, i) for i, n in clusters) or "none"
        raise RegistrationError(
            f"cluster {spec!r} does not exist in OpenNebula (clusters: {known})"
        )

    def find_host(self, name):
        pool = self.call("hostpool.info")
        for host in pool.HOST or []:
            if name == host.NAME:
                return host
        return None

    def query(self):
        """Every host (as host_summary) and cluster of OpenNebula; changes nothing."""
        hosts = [host_summary(h) for h in self.call("hostpool.info").HOST or []]
        clusters = [{"id": i, "name": n} for i, n in self.clusters()]
        return {"hosts": hosts, "clusters": clusters}

    # -- waiting ----------------------------------------------------------------------------

    def wait_monitored(self, host, wait, interval, fresh=False):
        """Poll the host until it is monitored (or parked by an operator); return it.

        A host allocated by this run (``fresh``) that goes to ERROR fails at once. A host that
        was already in ERROR may recover (oned retries it, and kvmprep may just have fixed what
        failed), so the wait goes on until the deadline, unless it leaves ERROR and fails again.
        """
        start = self.clock()
        deadline = start + wait
        tolerate_error = not fresh and int(host.STATE) in ERROR_STATES
        while True:
            state = int(host.STATE)
            if state in MONITORED_STATES or state in PARKED_STATES:
                break
            if state in ERROR_STATES and not tolerate_error:
                self.waited = self.clock() - start
                raise RegistrationError(self._state_failure(host, "monitoring failed"), host)
            if state not in ERROR_STATES:
                tolerate_error = False
            remaining = deadline - self.clock()
            if remaining <= 0:
                self.waited = self.clock() - start
                raise RegistrationError(
                    self._state_failure(host, f"not monitored after {wait:g} s"), host
                )
            self.sleep(min(interval, remaining))
            host = self.call("host.info", int(host.ID))
        self.waited = self.clock() - start
        return host

    @staticmethod
    def _state_failure(host, what):
        text = f"host {host.NAME} (id {host.ID}): {what}, state {state_name(host.STATE)}"
        error = _template_error(host)
        return f"{text}: {error}" if error else text

    def _note_parked(self, host):
        if int(host.STATE) in PARKED_STATES:
            self.warnings.append(
                f"host {host.NAME} (id {host.ID}) is {state_name(host.STATE)} in OpenNebula "
                "(an operator's choice): kvmprep neither enables it nor waits for it"
            )

    # -- present ----------------------------------------------------------------------------

    def present(
        self,
        name,
        im_mad="kvm",
        vm_mad="kvm",
        cluster="default",
        fix_mismatch=False,
        wait=120,
        interval=2.0,
        check_mode=False,
    ):
        """Make sure the host is registered; return the result dict (without warnings)."""
        cluster_id, cluster_name = self.resolve_cluster(cluster)
        wanted = _cluster_label(cluster_name, cluster_id)
        host = self.find_host(name)

        if host is None:
            what = f"host {name} (im_mad {im_mad}, vm_mad {vm_mad}) in cluster {wanted}"
            if check_mode:
                self.actions.append(f"allocate {what}")
                planned = {
                    "id": None,
                    "name": name,
                    "state": None,
                    "state_name": None,
                    "im_mad": im_mad,
                    "vm_mad": vm_mad,
                    "cluster_id": cluster_id,
                    "cluster": cluster_name,
                    "error": "",
                    "vms": [],
                }
                return self._result(True, f"would allocate {what}", planned)
            host = self._allocate(name, im_mad, vm_mad, cluster_id)
            self.actions.append(f"allocated {what} as id {host.ID}")
            host = self._settle(host, wait, interval, fresh=True)
            return self._result(
                True, f"host {name} allocated as id {host.ID} {self._describe(host)}", host
            )

        mismatch = {}
        for field, registered, asked in (
            ("im_mad", host.IM_MAD, im_mad),
            ("vm_mad", host.VM_MAD, vm_mad),
        ):
            if registered != asked:
                mismatch[field] = {"registered": registered, "wanted": asked}
        if int(host.CLUSTER_ID) != cluster_id:
            mismatch["cluster"] = {
                "registered": _cluster_label(host.CLUSTER, host.CLUSTER_ID),
                "wanted": wanted,
            }

        if not mismatch:
            if not check_mode:
                host = self._settle(host, wait, interval)
            else:
                self._note_parked(host)
            message = f"host {name} (id {host.ID}) already registered {self._describe(host)}"
            return self._result(False, message, host)

        differences = "; ".join(
            f"{field} {values['registered']} (wanted {values['wanted']})"
            for field, values in mismatch.items()
        )
        if not fix_mismatch:
            self.warnings.append(
                f"host {name} (id {host.ID}) is registered with other settings: {differences}; "
                "left as it is (set fix_mismatch to change it)"
            )
            if not check_mode:
                host = self._settle(host, wait, interval)
            message = (
                f"host {name} (id {host.ID}) left as it is (fix_mismatch is false), "
                f"registered {self._describe(host)}; differs: {differences}"
            )
            result = self._result(False, message, host)
            result["mismatch"] = mismatch
            return result

        if "im_mad" in mismatch or "vm_mad" in mismatch:
            vms = _vm_ids(host)
            if vms:
                raise RegistrationError(
                    f"host {name} (id {host.ID}) must be re-allocated to change its drivers "
                    f"({differences}), but it runs VMs {', '.join(map(str, vms))}: "
                    "migrate or remove them first; nothing was changed",
                    host,
                )
            old_id = host.ID
            what = f"host {name} (im_mad {im_mad}, vm_mad {vm_mad}) in cluster {wanted}"
            if check_mode:
                self.actions.append(f"delete host {name} (id {old_id}) and allocate {what}")
                result = self._result(True, f"would re-allocate {what} ({differences})", host)
                result["mismatch"] = mismatch
                return result
            self.call("host.delete", int(old_id))
            self.actions.append(f"deleted host {name} (id {old_id}): {differences}")
            host = self._allocate(name, im_mad, vm_mad, cluster_id)
            self.actions.append(f"allocated {what} as id {host.ID}")
            host = self._settle(host, wait, interval, fresh=True)
            message = (
                f"host {name} re-allocated as id {host.ID} (was {old_id}) {self._describe(host)}"
            )
            result = self._result(True, message, host)
            result["mismatch"] = mismatch
            return result

        # Only the cluster differs: move the host, it keeps its id, attributes and VMs.
        if check_mode:
            self.actions.append(f"move host {name} (id {host.ID}) to cluster {wanted}")
            result = self._result(True, f"would move host {name} to cluster {wanted}", host)
            result["mismatch"] = mismatch
            return result
        self.call("cluster.addhost", cluster_id, int(host.ID))
        self.actions.append(
            f"moved host {name} (id {host.ID}) from cluster "
            f"{mismatch['cluster']['registered']} to {wanted}"
        )
        host = self.call("host.info", int(host.ID))
        host = self._settle(host, wait, interval)
        message = f"host {name} (id {host.ID}) moved {self._describe(host, 'to')}"
        result = self._result(True, message, host)
        result["mismatch"] = mismatch
        return result

    def _allocate(self, name, im_mad, vm_mad, cluster_id):
        host_id = self.call("host.allocate", name, im_mad, vm_mad, cluster_id)
        return self.call("host.info", int(host_id))

    def _settle(self, host, wait, interval, fresh=False):
        """Wait for the host when asked to, and warn about an operator-parked host."""
        if wait > 0 and int(host.STATE) not in MONITORED_STATES:
            host = self.wait_monitored(host, wait, interval, fresh)
        self._note_parked(host)
        return host

    def _describe(self, host, where="in"):
        """'in cluster default (0) (im_mad kvm, vm_mad kvm); MONITORED after 3.0 s'"""
        text = (
            f"{where} cluster {_cluster_label(host.CLUSTER, host.CLUSTER_ID)} "
            f"(im_mad {host.IM_MAD}, vm_mad {host.VM_MAD}); {state_name(host.STATE)}"
        )
        if self.waited:
            text += f" after {self.waited:.1f} s"
        return text

    def _result(self, changed, msg, host):
        summary = host if isinstance(host, dict) or host is None else host_summary(host)
        return {
            "changed": changed,
            "msg": msg,
            "host": summary,
            "mismatch": {},
            "actions": list(self.actions),
            "waited": round(self.waited, 3),
        }

    # -- absent -----------------------------------------------------------------------------

    def absent(self, name, check_mode=False):
        host = self.find_host(name)
        if host is None:
            return self._result(False, f"host {name} is not registered", None)
        vms = _vm_ids(host)
        if vms:
            raise RegistrationError(
                f"host {name} (id {host.ID}) runs VMs {', '.join(map(str, vms))}: migrate or "
                "remove them before deleting it; nothing was changed",
                host,
            )
        if check_mode:
            self.actions.append(f"delete host {name} (id {host.ID})")
            return self._result(True, f"would delete host {name} (id {host.ID})", host)
        self.call("host.delete", int(host.ID))
        self.actions.append(f"deleted host {name} (id {host.ID})")
        return self._result(True, f"host {name} (id {host.ID}) deleted", host)


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


class _Transport(xmlrpc.client.Transport):
    """pyone's transport (requests) with a timeout on every call.

    pyone's own ``timeout`` only sets the socket module's default timeout, which requests
    overrides with "no timeout": a front-end that accepts connections but does not answer would
    block the run forever.
    """

    def __init__(self, https, verify, timeout):
        super().__init__()
        self.scheme = "https" if https else "http"
        self.verify = verify
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, host, handler, request_body, verbose=False):
        url = f"{self.scheme}://{host}/{handler.lstrip('/')}"
        with warnings.catch_warnings():
            # validate_certs=false is the operator's explicit choice: no warning per call.
            warnings.simplefilter("ignore", InsecureRequestWarning)
            response = self.session.post(
                url,
                data=request_body,
                headers={"Content-Type": "text/xml", "Accept": "*/*"},
                verify=self.verify,
                timeout=self.timeout,
            )
        if response.status_code != 200:
            raise xmlrpc.client.ProtocolError(
                url, response.status_code, response.reason or "", response.headers
            )
        parser, unmarshaller = self.getparser()
        parser.feed(response.content)
        parser.close()
        return unmarshaller.close()

    def close(self):
        self.session.close()
        super().close()


def connect(endpoint, session, timeout=30.0, validate_certs=True, ca_path=None):
    """A pyone XML-RPC server object whose calls time out after ``timeout`` seconds."""
    verify = ca_path if (ca_path and validate_certs) else bool(validate_certs)
    server = pyone.OneServer(endpoint, session=session, protocol="xmlrpc", https_verify=verify)
    # xmlrpc.client.ServerProxy keeps its transport in a private attribute; pyone itself patches
    # ServerProxy's private request method the same way.
    server._ServerProxy__transport = _Transport(endpoint.startswith("https"), verify, timeout)
    return server


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------

ARGUMENT_SPEC = {
    "endpoint": {"type": "str", "required": True},
    "session": {"type": "str", "required": True, "no_log": True},
    "name": {"type": "str"},
    "im_mad": {"type": "str", "default": "kvm"},
    "vmm_mad": {"type": "str", "default": "kvm", "aliases": ["vm_mad"]},
    "cluster": {"type": "str", "default": "default"},
    "fix_mismatch": {"type": "bool", "default": False},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent", "query"]},
    "wait_monitored": {"type": "int", "default": 120},
    "wait_interval": {"type": "float", "default": 2.0},
    "timeout": {"type": "float", "default": 30.0},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
}


def validate(params):
    """The module's parameters checked and cleaned; ValueError (one line, no secret) if bad."""
    job = dict(params)
    job["endpoint"] = check_endpoint(params["endpoint"])
    job["session"], job["user"] = check_session(params["session"])
    if params["state"] != "query":
        job["name"] = check_host_name(params["name"])
    for key in ("im_mad", "vmm_mad"):
        value = (params[key] or "").strip()
        if not value or not HOST_NAME_RE.match(value):
            raise ValueError(f"{key} must be a driver name such as kvm, got {params[key]!r}")
        job[key] = value
    if params["wait_monitored"] < 0:
        raise ValueError(f"wait_monitored must be 0 or more, got {params['wait_monitored']}")
    if params["wait_interval"] <= 0:
        raise ValueError(f"wait_interval must be more than 0, got {params['wait_interval']:g}")
    if params["timeout"] <= 0:
        raise ValueError(f"timeout must be more than 0, got {params['timeout']:g}")
    return job


def execute(registrar, job, check_mode):
    """Register (or delete) the host described by a validated job; return the result dict."""
    if job["state"] == "query":
        return registrar.query()
    if job["state"] == "absent":
        return registrar.absent(job["name"], check_mode=check_mode)
    return registrar.present(
        job["name"],
        im_mad=job["im_mad"],
        vm_mad=job["vmm_mad"],
        cluster=job["cluster"],
        fix_mismatch=job["fix_mismatch"],
        wait=job["wait_monitored"],
        interval=job["wait_interval"],
        check_mode=check_mode,
    )


def run(params, check_mode=False, server_factory=None):
    """Everything the module does, without Ansible: returns (failed, result, warnings).

    Expected failures (bad input, oned's refusals, the way to oned) come back as
    ``failed=True`` with a one-line ``result["msg"]`` naming the endpoint; nothing is raised.
    """
    result = {
        "changed": False,
        "msg": "",
        "host": None,
        "mismatch": {},
        "actions": [],
        "waited": 0.0,
        "endpoint": "",  # set once checked: a wrong value may be a secret in the wrong place
    }
    try:
        job = validate(params)
    except ValueError as exc:
        result["msg"] = str(exc)
        return True, result, []
    endpoint = result["endpoint"] = job["endpoint"]

    server = None
    registrar = HostRegistrar(None, timeout=job["timeout"])
    failure = None
    try:
        server = (server_factory or connect)(
            job["endpoint"],
            job["session"],
            timeout=job["timeout"],
            validate_certs=job["validate_certs"],
            ca_path=job["ca_path"],
        )
        registrar.server = server
        result.update(execute(registrar, job, check_mode))
    except OneCallError as exc:
        failure = f"OpenNebula at {endpoint} ({exc.method}): {exc.reason}"
    except RegistrationError as exc:
        failure = f"OpenNebula at {endpoint}: {exc}"
        if exc.host is not None:
            result["host"] = exc.host if isinstance(exc.host, dict) else host_summary(exc.host)
    except Exception as exc:  # a bug or an answer nobody foresaw: still one line, no secret
        failure = f"OpenNebula at {endpoint}: unexpected {explain(exc, job['timeout'])[1]}"
        result["exception"] = traceback.format_exc()  # shown by Ansible with -vvv only
    finally:
        transport = getattr(server, "_ServerProxy__transport", None)
        if isinstance(transport, _Transport):
            transport.close()

    if failure is None:
        return False, result, list(registrar.warnings)
    result.update(
        msg=failure,
        changed=bool(registrar.actions),  # what was done before the failure stays done
        actions=list(registrar.actions),
        waited=round(registrar.waited, 3),
    )
    return True, result, list(registrar.warnings)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    # Ansible hides the whole session value; hide the password alone too, wherever it shows up.
    lines = (module.params["session"] or "").strip().splitlines()
    password = lines[0].partition(":")[2].strip() if lines else ""
    if password:
        module.no_log_values.add(password)
    if pyone is None:
        module.fail_json(msg=missing_required_lib("pyone"), exception=PYONE_IMPORT_ERROR)

    failed, result, warnings = run(module.params, module.check_mode)
    for warning in warnings:
        module.warn(warning)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
