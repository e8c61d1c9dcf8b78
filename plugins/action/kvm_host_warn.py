"""kvm_host_warn, run on the controller: a warning needs no round trip to the host.

Same arguments and result as plugins/modules/kvm_host_warn.py (kept for its documentation and for a
run that finds only the module): every message of ``msg`` becomes a warning of the task.
"""

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        messages = self._task.args.get("msg")
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise AnsibleActionFail("msg: expected a list of strings")
        result.update(changed=False, warned=list(messages), warnings=list(messages))
        changes = self._task.args.get("changes")
        if changes is not None:
            if not isinstance(changes, dict):
                raise AnsibleActionFail("changes: expected a mapping of concern to lines")
            result["kvmprep_changes"] = changes
        return result
