"""kvm_host_settings, run on the controller only: judge the roles' settings before any change.

Reads each public variable of the named roles (their meta/argument_specs.yml) from the task's
variables as the inventory gives it, templated but not converted (argument_specs' type str
would turn a dict into its text), with the argument_specs default when it is not set, and
judges it with module_utils/kvm_host_settings.py. No round trip to the host.

Arguments: ``roles`` (list: kvm_host, one_frontend) for the task's own host, or ``hosts`` (host
name -> its roles) to judge every host of a play in one call (run_once, from hostvars); ``apply``
(bool, default true: also what apply needs together, such as the SASL password for tcp);
``fleet`` (bool, default false): also return what every machine's probe of a check run needs
from the inventory, read from hostvars in the same task, one loop over the kvm hosts
(run_once: registered, it reaches every host of the run): ``one_names``, the name OpenNebula
knows each kvm host by
(``one_frontend_host_name``, else the inventory name), and ``peers``, the kvm hosts per cluster
(``one_frontend_cluster``, else one_frontend's default "default"), each cluster's ``names``
(inventory names) and ``peers`` (``{name, address}``: the address is the OpenNebula name);
and ``probes``, for each kvm host of ``hosts``, every argument of its probe call but ``gather``
(plugins/plugin_utils/audit_args.py: among them the run's front-end, the first host of the
frontend group; the names to resolve, ``one_names`` and the front-end's; its peers, the other
hosts of its cluster; and ``expect``, every variable the controls judge against: the model's
Expect, as this task templated it).
Computed here, in one process, rather than in each host's worker: ansible-core compiles a task
argument's templates again in every fork, which made the probe's arguments cost each host tens
of milliseconds of the controller.

Result: on a problem, ``failed`` with ``msg`` (the lines joined) and ``kvmprep_invalid_settings``
(one line per problem, "VARIABLE: value REPR: problem"); ``warnings`` for allowed but weaker
settings (TLS without tls_allowed_dn_list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_settings
from ansible_collections.kvmprep.kvm.plugins.plugin_utils import audit_args
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect

# The collection's roles, whose meta/argument_specs.yml name the settings (plugins/action/X.py
# sits two levels below the collection's root).
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
KNOWN_ROLES = ("kvm_host", "one_frontend")
# libyaml when PyYAML has it: the specs are the collection's own plain YAML (no vault, no
# templates), and the DataLoader's tagging and deep copy cost ten times the parse.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Expect's per-host variables of the front-end role (one_frontend_host_name, ..._cluster, ...).
_FRONT_END_VARS = tuple(
    Expect.var_name(f) for f in fields(Expect) if Expect.var_name(f).startswith("one_frontend_")
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def _specs(self, roles: list[str]) -> dict[str, dict[str, Any]]:
        specs: dict[str, dict[str, Any]] = {}
        for role in roles:
            path = ROLES_DIR / role / "meta" / "argument_specs.yml"
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
            specs.update(document["argument_specs"]["main"]["options"])
        return specs

    def _fleet(
        self, task_vars: Mapping[str, Any], judged: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """``one_names``, ``peers`` and ``probes`` (the module's docstring) of every kvm host
        of the inventory (not only the play's: a --limit run still probes the names and ports
        of the hosts it leaves out); ``judged``: the settings of each host of the play, as
        _judge templated them."""
        groups = task_vars.get("groups", {})
        frontend = str((groups.get("frontend") or [""])[0])
        names: list[str] = []
        clusters: dict[str, dict[str, list[Any]]] = {}
        cluster_of: dict[str, str] = {}
        # Expect's variables of the front-end role, per kvm host, as the inventory gives them
        # (None when unset: Expect's own default applies), each templated once.
        given: dict[str, dict[str, Any]] = {}
        for host in groups.get("kvm_hosts", []):
            variables = task_vars["hostvars"][host]
            given[str(host)] = {n: self._value(variables, n) for n in _FRONT_END_VARS}
            one_name = given[str(host)]["one_frontend_host_name"] or host
            cluster = given[str(host)]["one_frontend_cluster"]
            key = "default" if cluster is None else str(cluster)
            entry = clusters.setdefault(key, {"names": [], "peers": []})
            entry["names"].append(str(host))
            entry["peers"].append({"name": str(host), "address": str(one_name)})
            names.append(str(one_name))
            cluster_of[str(host)] = key
        probe_names = list(dict.fromkeys(n for n in [*names, frontend] if n))
        probes = {}
        for host, values in judged.items():
            if host not in cluster_of:
                continue  # the front-end: its probe takes the fleet's names and peers
            probes[host] = audit_args.probe_arguments(
                values,
                frontend=frontend,
                names=probe_names,
                peers=[p for p in clusters[cluster_of[host]]["peers"] if p["name"] != host],
                expect=_expect(values, given[host], frontend),
            )
        return {
            "one_names": names,
            "peers": clusters,
            "probes": probes,
        }

    def _value(self, variables: Mapping[str, Any], name: str) -> Any:
        if name not in variables:
            return None
        try:
            return self._templar.template(variables[name])
        except AnsibleError as exc:
            raise AnsibleActionFail(f"{name}: cannot be templated: {type(exc).__name__}") from None

    def _judge(
        self,
        roles: list[str],
        variables: Mapping[str, Any],
        apply: bool,
        specs: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[list[str], list[str], dict[str, Any]]:
        """(problems, warnings, the settings as templated) of one host, whose variables are
        ``variables``; ``specs``: these roles' specs, when the caller has them already."""
        if specs is None:
            specs = self._specs(roles)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, spec in specs.items():
            if name not in variables:
                values[name] = spec.get("default")
                continue
            try:
                values[name] = self._templar.template(variables[name])
            except AnsibleError as exc:
                # Only the name: the error's text may hold another variable's value.
                problems.append(f"{name}: cannot be templated: {type(exc).__name__}")
        problems += kvm_host_settings.validate(values, specs, apply=apply)
        warnings = (
            kvm_host_settings.warnings(values) if "kvm_host" in roles and not problems else []
        )
        return problems, warnings, values

    def _judge_hosts(
        self,
        hosts: Mapping[str, list[str]],
        task_vars: dict[str, Any],
        apply: bool,
    ) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
        """(problems, warnings) over the hosts, and each host's settings as templated."""
        # Once for every host of the play: the same problem on every host is said once, one
        # that only some hosts have names them.
        found: dict[str, list[str]] = {}
        warned: dict[str, list[str]] = {}
        # Loaded once per call, not per host: the loader hands out a deep copy of
        # argument_specs.yml on every load (0.1 s each), which made this task grow with the
        # fleet. validate() only reads the specs, so the hosts can share them.
        specs: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
        judged: dict[str, dict[str, Any]] = {}
        for host, roles in hosts.items():
            checked = _roles(roles)
            key = tuple(checked)
            if key not in specs:
                specs[key] = self._specs(checked)
            problems, warnings, judged[str(host)] = self._judge(
                checked, task_vars["hostvars"][host], apply, specs[key]
            )
            for line in problems:
                found.setdefault(line, []).append(str(host))
            for line in warnings:
                warned.setdefault(line, []).append(str(host))
        return _named(found, len(hosts)), _named(warned, len(hosts)), judged

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        apply = boolean(self._task.args.get("apply", True))
        hosts = self._task.args.get("hosts")
        judged: dict[str, dict[str, Any]] = {}
        if hosts is None:
            roles = _roles(self._task.args.get("roles", ["kvm_host"]))
            problems, warnings, _values = self._judge(roles, task_vars, apply)
        elif isinstance(hosts, Mapping):
            problems, warnings, judged = self._judge_hosts(hosts, task_vars, apply)
        else:
            raise AnsibleActionFail("hosts: expected a mapping of host name to roles")
        result["changed"] = False
        if problems:
            result.update(failed=True, msg="; ".join(problems), kvmprep_invalid_settings=problems)
            return result
        if warnings:
            result["warnings"] = warnings
        if boolean(self._task.args.get("fleet", False)):
            result.update(self._fleet(task_vars, judged))
        return result


def _expect(values: Mapping[str, Any], given: Mapping[str, Any], frontend: str) -> dict[str, Any]:
    """The variables the controls judge against (Expect's), as the host's probe sends them:
    the roles' settings as judged (argument_specs' default when unset), the front-end role's
    per-host ones as the inventory gives them (``given``) and the run's front-end."""
    expect: dict[str, Any] = {}
    for f in fields(Expect):
        name = Expect.var_name(f)
        if name == "kvmprep_frontend":
            expect[name] = frontend
        elif name.startswith("kvm_host_"):
            expect[name] = values[name]
        else:
            expect[name] = given[name]
    return expect


def _roles(roles: Any) -> list[str]:
    if not isinstance(roles, list) or not set(roles) <= set(KNOWN_ROLES):
        raise AnsibleActionFail(f"roles: expected a list of {', '.join(KNOWN_ROLES)}")
    return roles


def _named(lines: Mapping[str, list[str]], every: int) -> list[str]:
    return [
        line if len(hosts) == every else f"{line} (on {', '.join(hosts)})"
        for line, hosts in lines.items()
    ]
