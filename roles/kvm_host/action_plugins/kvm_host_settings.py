"""kvm_host_settings, run on the controller only: judge the roles' settings before any change.

Reads each public variable of the named roles (their meta/argument_specs.yml) from the task's
variables as the inventory gives it, templated but not converted (argument_specs' type str
would turn a dict into its text), with the argument_specs default when it is not set, and
judges it with module_utils/kvm_host_settings.py. No round trip to the host.

Arguments: ``roles`` (list: kvm_host, one_frontend), ``apply`` (bool, default true: also what
apply needs together, such as the SASL password for tcp).

Result: on a problem, ``failed`` with ``msg`` (the lines joined) and ``kvmprep_invalid_settings``
(one line per problem, "VARIABLE: value REPR: problem"); ``warnings`` for allowed but weaker
settings (TLS without tls_allowed_dn_list).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

ROLES_DIR = Path(__file__).resolve().parents[2]
SETTINGS = ROLES_DIR / "kvm_host" / "module_utils" / "kvm_host_settings.py"
KNOWN_ROLES = ("kvm_host", "one_frontend")


def load_settings() -> ModuleType:
    """module_utils/kvm_host_settings.py, by path: it is no module Ansible ships to a host here."""
    spec = importlib.util.spec_from_file_location("kvm_host_settings", SETTINGS)
    if spec is None or spec.loader is None:
        raise AnsibleActionFail(f"cannot load {SETTINGS}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def _specs(self, roles: list[str]) -> dict[str, dict[str, Any]]:
        specs: dict[str, dict[str, Any]] = {}
        for role in roles:
            document = self._loader.load_from_file(
                str(ROLES_DIR / role / "meta" / "argument_specs.yml")
            )
            specs.update(document["argument_specs"]["main"]["options"])
        return specs

    def _value(self, name: str, spec: dict[str, Any], task_vars: dict[str, Any]) -> Any:
        if name not in task_vars:
            return spec.get("default")
        try:
            return self._templar.template(task_vars[name])
        except AnsibleError as exc:
            # The message names the variable; its text may hold another variable's value.
            raise _Unusable(f"{name}: cannot be templated: {type(exc).__name__}") from None

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        roles = self._task.args.get("roles", ["kvm_host"])
        if not isinstance(roles, list) or not set(roles) <= set(KNOWN_ROLES):
            raise AnsibleActionFail(f"roles: expected a list of {', '.join(KNOWN_ROLES)}")
        apply = boolean(self._task.args.get("apply", True))
        settings = load_settings()
        specs = self._specs(roles)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, spec in specs.items():
            try:
                values[name] = self._value(name, spec, task_vars)
            except _Unusable as exc:
                problems.append(str(exc))
        problems += settings.validate(values, specs, apply=apply)
        result["changed"] = False
        if problems:
            result.update(failed=True, msg="; ".join(problems), kvmprep_invalid_settings=problems)
            return result
        warnings = settings.warnings(values) if "kvm_host" in roles else []
        if warnings:
            result["warnings"] = warnings
        result["validated"] = sorted(values)
        return result


class _Unusable(Exception):
    """A variable whose value cannot even be templated."""
