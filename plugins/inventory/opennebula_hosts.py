"""opennebula_hosts: the hosts (hypervisors) registered in OpenNebula, as an Ansible inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: opennebula_hosts
short_description: The hosts registered in OpenNebula (its hypervisors) as inventory
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
description:
  - Lists the hosts OpenNebula knows (C(one.hostpool.info) over oned's XML-RPC API, with pyone),
    so that kvmprep can prepare and audit every registered hypervisor without a hand-written
    inventory.
  - Every listed host is named by its OpenNebula name and put in a group per information driver
    (C(one_im_mad_<IM_MAD>)) and per cluster (C(one_cluster_<cluster name>)); names are made
    safe for Ansible (every character other than a letter, a digit or C(_) becomes C(_)).
  - The hosts whose information driver (C(IM_MAD)) is C(kvm) are also put in C(kvm_hosts), the
    group kvmprep's playbooks prepare and audit. Hosts with another driver (C(lxc),
    C(firecracker), C(qemu), C(vcenter), C(dummy)...) are listed in their driver's group only
    and kvmprep leaves them alone; they are listed all the same so that other plays can target
    them (use I(im_mads) to leave them out).
  - Sets, per host, C(one_frontend_host_name) (the OpenNebula name) and C(one_frontend_cluster)
    (the cluster's name), the variables the C(one_frontend) role and C(kvmprep check) read, and
    C(one_host_id), C(one_host_state) (the state's name, for example C(MONITORED)),
    C(one_host_im_mad), C(one_host_vm_mad) and C(ansible_host) (see I(host_address)).
  - The file must be named C(opennebula_hosts.yml) or C(opennebula_hosts.yaml) (or end so, for
    example C(lab.opennebula_hosts.yml)).
  - Errors (no endpoint, no credentials, authentication refused, endpoint unreachable) stop the
    source with one line naming the endpoint and the problem; the password is never shown.
requirements:
  - pyone 7.x on the controller
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description:
      - The name of this plugin. C(kvmprep.kvm.opennebula_hosts) once kvmprep's collection is
        installed; C(opennebula_hosts) finds it through kvmprep's CLI, which puts the plugin on
        C(ANSIBLE_INVENTORY_PLUGINS) and enables it. kvmprep's CLI takes either.
    type: str
    required: true
    choices: [kvmprep.kvm.opennebula_hosts, opennebula_hosts]
  endpoint:
    description:
      - URL of oned's XML-RPC API, for example C(http://frontend:2633/RPC2).
      - Must be an C(http) or C(https) URL with a host name and no credentials in it.
    type: str
    env:
      - name: ONE_XMLRPC
  session:
    description:
      - C(USER:PASSWORD) (or C(USER:TOKEN)) of an OpenNebula user allowed to list hosts. Keep it
        in Ansible Vault, or leave it out and use I(auth_file).
      - Takes precedence over I(auth_file).
    type: str
  auth_file:
    description:
      - File on the controller holding C(USER:PASSWORD) on its first line, like OpenNebula's
        C(one_auth); used when I(session) is not set.
    type: path
    env:
      - name: ONE_AUTH
  validate_certs:
    description: With an C(https) endpoint, verify oned's certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle (PEM) to verify an C(https) endpoint with, instead of the system's.
    type: path
  timeout:
    description: Seconds the XML-RPC call may take (connecting, then reading the answer).
    type: float
    default: 30
  host_address:
    description:
      - What C(ansible_host) is set to. C(name) is the host's OpenNebula name (the name oned
        itself reaches the host by over SSH).
      - Any other value names an attribute of the host's template in OpenNebula (for example
        C(HOSTNAME), which the monitoring probes report, or an C(IP) an operator set); a host
        without it gets its OpenNebula name, with a warning.
    type: str
    default: name
  clusters:
    description:
      - List only the hosts of these clusters (by name or numeric id). Empty lists every
        cluster's hosts.
    type: list
    elements: str
    default: []
  states:
    description:
      - List only the hosts in these states (names, case does not matter), for example
        C([MONITORED]). Empty lists hosts in every state.
      - "The states: C(INIT), C(MONITORING_MONITORED), C(MONITORED), C(ERROR), C(DISABLED),
        C(MONITORING_ERROR), C(MONITORING_INIT), C(MONITORING_DISABLED), C(OFFLINE)."
    type: list
    elements: str
    default: []
  im_mads:
    description:
      - List only the hosts with these information drivers, for example C([kvm]). Empty lists
        hosts of every driver.
    type: list
    elements: str
    default: []
notes:
  - With I(cache) on, the host list (not the credentials) is kept by the cache plugin for
    I(cache_timeout) seconds, under a key derived from this file's path; the filters, groups and
    variables are worked out again from it on each run. C(ansible-inventory --flush-cache)
    reads oned again.
  - The front-end itself is not an OpenNebula host. For C(kvmprep check) to audit it too, give
    a second inventory source with a C(frontend) group.
"""

EXAMPLES = r"""
---
# opennebula_hosts.yml: every host OpenNebula knows; endpoint and credentials from
# ONE_XMLRPC and ONE_AUTH (a file holding user:password).
plugin: kvmprep.kvm.opennebula_hosts

---
# lab.opennebula_hosts.yml: the monitored kvm hosts of two clusters, reached at the address
# an operator recorded in their template, with a group per state and cached for 10 minutes.
plugin: kvmprep.kvm.opennebula_hosts
endpoint: https://one.example.org:2633/RPC2
auth_file: ~/.one/one_auth
ca_path: /etc/pki/one-ca.pem
clusters: [production, "100"]
states: [MONITORED]
im_mads: [kvm]
host_address: IP
keyed_groups:
  - key: one_host_state | lower
    prefix: one_state
compose:
  ansible_user: "'root'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/kvmprep-inventory
cache_timeout: 600
"""

import re
import time
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.vars import load_extra_vars

display = Display()

#: The names ``plugin:`` may give: the collection's, and the short one kvmprep's CLI enables
#: (a plugin on ANSIBLE_INVENTORY_PLUGINS is known by its file name).
NAMES = ("kvmprep.kvm.opennebula_hosts", "opennebula_hosts")
FILE_SUFFIXES = ("opennebula_hosts.yml", "opennebula_hosts.yaml")

#: oned's host state names (include/Host.h), what ``states`` may name.
STATES = (
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

#: The group kvmprep's playbooks prepare and audit.
KVM_GROUP = "kvm_hosts"
KVM_IM_MAD = "kvm"

# The module that registers hosts knows how to reach oned (endpoint and session checks, a
# timeout on every call, one-line reasons for every failure): the plugin reads it rather than
# keep a second copy: the collection's plugins/modules/one_frontend_host.py.
_HERE = Path(__file__).resolve().parent
_REGISTRAR = (_HERE.parent / "modules" / "one_frontend_host.py",)


def _load_registrar() -> types.ModuleType:
    """one_frontend_host, by path: compiled from its text, so no __pycache__ lands beside it."""
    for path in _REGISTRAR:
        if path.is_file():
            module = types.ModuleType("kvmprep_one_frontend_host")
            module.__file__ = str(path)
            exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
            return module
    searched = ", ".join(str(p) for p in _REGISTRAR)
    raise AnsibleParserError(f"opennebula_hosts: one_frontend_host.py not found in {searched}")


def safe_group_name(text: object) -> str:
    """Letters, digits and _ only: valid in every Ansible group pattern."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(text))


def read_session(auth_file: str) -> str:
    """The first line of a one_auth file; the error names the file, never its content."""
    path = Path(auth_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(
            f"cannot read the credentials file {auth_file} (ONE_AUTH or auth_file): {reason}"
        ) from None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def host_record(host: Any, one: types.ModuleType) -> dict[str, Any]:
    """What the inventory keeps of a pyone HOST: plain data, fit for a cache plugin."""
    template = getattr(host, "TEMPLATE", None)
    attributes = {}
    if isinstance(template, dict):
        # Single values only: vector attributes (dicts) are no address.
        attributes = {
            str(k): str(v) for k, v in template.items() if isinstance(v, (str, int, float))
        }
    return {
        "id": int(host.ID),
        "name": str(host.NAME),
        "state": one.state_name(host.STATE),
        "im_mad": str(host.IM_MAD),
        "vm_mad": str(host.VM_MAD),
        "cluster_id": int(host.CLUSTER_ID),
        "cluster": str(host.CLUSTER),
        "template": attributes,
    }


# A source this plugin failed on is handed to the next enabled plugin, and the auto plugin
# loads this one again for it: without a memory of the failure, an endpoint that times out
# would be waited for twice. Kept briefly, so that a later refresh_inventory asks oned again.
_FAILED: dict[str, tuple[float, str]] = {}
_FAILURE_KEPT_S = 10.0


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = NAMES[0]

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and str(path).endswith(FILE_SUFFIXES)

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._configure(path)

        key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        hosts = None
        if use_cache and cache:
            hosts = self.cache.get(key)
        if hosts is None:
            hosts = self._fetch_once(path)
            if use_cache:
                self.cache[key] = hosts
        self._populate(hosts)

    def _configure(self, path: str) -> None:
        """What BaseInventoryPlugin._read_config_data does, but taking either of NAMES in
        ``plugin:``: the base accepts only the name the plugin was loaded by, and before the
        collection exists that is the short one."""
        try:
            config = self.loader.load_from_file(path, cache="none", trusted_as_template=True)
        except Exception as exc:  # the loader's own one-line message (YAML error, vault)
            raise AnsibleParserError(f"{path}: {exc}") from None
        if not isinstance(config, dict) or not config:
            raise AnsibleParserError(f"{path}: expected a mapping with 'plugin: {NAMES[0]}'")
        if config.get("plugin") not in NAMES:
            raise AnsibleParserError(
                f"Incorrect plugin name in file: {config.get('plugin', 'none found')}"
            )
        self.set_options(direct=config, var_options=load_extra_vars(self.loader))
        if self.get_option("cache"):
            self.load_cache_plugin()

    # -- oned ------------------------------------------------------------------------------

    def _fetch_once(self, path: str) -> list[dict[str, Any]]:
        failed = _FAILED.get(path)
        if failed is not None and time.monotonic() - failed[0] < _FAILURE_KEPT_S:
            raise AnsibleParserError(failed[1])
        try:
            return self._fetch()
        except AnsibleParserError as exc:
            _FAILED[path] = (time.monotonic(), str(exc.message))
            raise

    def _fetch(self) -> list[dict[str, Any]]:
        """Every host of OpenNebula, as host_record dicts sorted by id."""
        one = _load_registrar()
        raw_endpoint = self.get_option("endpoint")
        if not raw_endpoint:
            raise AnsibleParserError(
                "opennebula_hosts: no OpenNebula endpoint: set endpoint in the inventory file "
                "or ONE_XMLRPC (e.g. http://one.example.org:2633/RPC2)"
            )
        try:
            endpoint = one.check_endpoint(raw_endpoint)
        except ValueError as exc:
            raise AnsibleParserError(f"opennebula_hosts: {exc}") from None
        where = f"OpenNebula at {endpoint}"
        if one.pyone is None:
            raise AnsibleParserError(
                f"{where}: the opennebula_hosts inventory needs pyone on the controller "
                "(pip install 'pyone>=7,<8' next to ansible-core)"
            )
        try:
            session = self._session()
            session, _user = one.check_session(session)
        except ValueError as exc:
            raise AnsibleParserError(f"{where}: {exc}") from None

        timeout = float(self.get_option("timeout"))
        registrar = one.HostRegistrar(None, timeout=timeout)
        try:
            registrar.server = one.connect(
                endpoint,
                session,
                timeout=timeout,
                validate_certs=self.get_option("validate_certs"),
                ca_path=self.get_option("ca_path"),
            )
            pool = registrar.call("hostpool.info")
            hosts = [host_record(h, one) for h in (pool.HOST or [])]
        except one.OneCallError as exc:
            raise AnsibleParserError(f"{where} ({exc.method}): {exc.reason}") from None
        except Exception as exc:  # an answer nobody foresaw: still one line, no secret
            reason = one.explain(exc, timeout)[1]
            raise AnsibleParserError(f"{where}: unexpected {reason}") from None
        finally:
            transport = getattr(registrar.server, "_ServerProxy__transport", None)
            if isinstance(transport, one._Transport):
                transport.close()
        return sorted(hosts, key=lambda h: h["id"])

    def _session(self) -> str:
        session = self.get_option("session")
        if session:
            return session
        auth_file = self.get_option("auth_file")
        if not auth_file:
            raise ValueError(
                "no OpenNebula credentials: set session (in Ansible Vault) or auth_file in the "
                "inventory file, or ONE_AUTH to a file holding user:password"
            )
        return read_session(auth_file)

    # -- inventory -------------------------------------------------------------------------

    def _selected(self, hosts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        clusters = {str(c).strip() for c in self.get_option("clusters") or []}
        states = {str(s).strip().upper() for s in self.get_option("states") or []}
        if unknown := sorted(states - set(STATES)):
            # A misspelt state would silently list no host at all.
            raise AnsibleParserError(
                f"opennebula_hosts: states: unknown {', '.join(unknown)} "
                f"(OpenNebula's host states: {', '.join(STATES)})"
            )
        im_mads = {str(m).strip() for m in self.get_option("im_mads") or []}
        for host in hosts:
            if clusters and not clusters & {host["cluster"], str(host["cluster_id"])}:
                continue
            if states and host["state"] not in states:
                continue
            if im_mads and host["im_mad"] not in im_mads:
                continue
            yield host

    def _populate(self, hosts: Iterable[dict[str, Any]]) -> None:
        address = self.get_option("host_address")
        strict = self.get_option("strict")
        without_address = []
        for host in self._selected(hosts):
            name = host["name"]
            self.inventory.add_host(name)
            groups = [
                f"one_im_mad_{safe_group_name(host['im_mad'])}",
                f"one_cluster_{safe_group_name(host['cluster'])}",
            ]
            if host["im_mad"] == KVM_IM_MAD:
                groups.insert(0, KVM_GROUP)
            for group in groups:
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)

            ansible_host = name
            if address != "name":
                # oned stores attribute names upper case (an IP set as "ip" reads back "IP").
                template = host["template"]
                found = template.get(address) or template.get(address.upper())
                ansible_host = found or name
                if not found:
                    without_address.append(name)
            for var, value in (
                ("ansible_host", ansible_host),
                ("one_frontend_host_name", name),
                ("one_frontend_cluster", host["cluster"]),
                ("one_host_id", host["id"]),
                ("one_host_state", host["state"]),
                ("one_host_im_mad", host["im_mad"]),
                ("one_host_vm_mad", host["vm_mad"]),
            ):
                self.inventory.set_variable(name, var, value)

            variables = self.inventory.get_host(name).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(
                self.get_option("groups"), variables, name, strict=strict
            )
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), variables, name, strict=strict
            )
        if without_address:
            display.warning(
                f"opennebula_hosts: no {address} attribute in the OpenNebula template of "
                f"{', '.join(without_address)}: reached by their OpenNebula name"
            )
