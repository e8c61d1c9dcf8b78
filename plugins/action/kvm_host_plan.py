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

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

# The collection's own module_utils, as kvmprep check imports them too: one judge for both.
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge as judge


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
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
