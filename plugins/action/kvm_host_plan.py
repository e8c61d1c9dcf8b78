"""kvm_host_plan, run on the controller only: what apply must change on a host, from its probe.

Asks module_utils/kvm_host_judge.py, the code check's controls ask too, what of the packages,
/dev/kvm, oneadmin, libvirt's units and configuration files, the SASL account, the drivers'
runtime and the AppArmor block is not as the settings want it, and what must change. No round
trip to the host: the facts are those the probe just returned.

Arguments: ``facts`` (the probe's ``probe`` result), ``settings`` (``kvm_host_<name>`` values the
judge compares with, role defaults applied), ``libvirt_group`` (the group apply puts oneadmin in
beside kvm), ``pending`` (check mode found packages to install), ``packages`` (the list apply
installs), ``sasl`` (the TCP listener's SASL account is managed), ``sasl_db``, ``emulator``,
``remotes_dir`` (the paths the probe stat'ed for them), ``defaults_file`` and ``defaults_key``
(the distribution's daemon defaults file and variable, for a host where the probe found none).

Result: ``plan``, the judge's plan (see kvm_host_judge.plan); ``failed`` with ``msg`` when the
settings are not what the judge can compare with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"
#: The name the role's module_utils are loaded under on the controller: a package of its own,
#: so that the judge's relative import of kvm_host_layouts resolves to the role's file.
PACKAGE = "kvm_host_controller_utils"


def load_judge() -> ModuleType:
    """module_utils/kvm_host_judge.py (with kvm_host_layouts), compiled from its text so that
    no __pycache__ lands in the role; loaded once per controller process."""
    loaded = sys.modules.get(f"{PACKAGE}.kvm_host_judge")
    if loaded is not None:
        return loaded
    package = sys.modules.setdefault(PACKAGE, ModuleType(PACKAGE))
    package.__path__ = []  # a package, so that relative imports resolve in sys.modules
    module = package
    for name in ("kvm_host_layouts", "kvm_host_judge"):
        path = MODULE_UTILS / f"{name}.py"
        module = ModuleType(f"{PACKAGE}.{name}")
        module.__file__ = str(path)
        module.__package__ = PACKAGE
        sys.modules[module.__name__] = module
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        judge = load_judge()
        try:
            settings = judge.Settings.from_vars(args.get("settings") or {})
        except ValueError as exc:
            raise AnsibleActionFail(f"kvm_host_plan: {exc}") from exc
        facts = args.get("facts")
        if not isinstance(facts, dict):
            raise AnsibleActionFail("kvm_host_plan: facts must be the probe's result")
        result["plan"] = judge.plan(
            facts,
            settings,
            libvirt_group_name=args.get("libvirt_group") or None,
            pending=boolean(args.get("pending", False), strict=False),
            packages_wanted=list(args.get("packages") or []),
            sasl_enabled=boolean(args.get("sasl", False), strict=False),
            sasl_db=str(args.get("sasl_db") or "/etc/libvirt/passwd.db"),
            emulator=str(args.get("emulator") or ""),
            remotes_dir=str(args.get("remotes_dir") or ""),
            # The remotes directory goes to oneadmin once it exists (vars/main.yml says when).
            oneadmin_exists=True,
            defaults_file=str(args.get("defaults_file") or ""),
            defaults_key=str(args.get("defaults_key") or "LIBVIRTD_ARGS"),
        )
        result["changed"] = False
        return result
