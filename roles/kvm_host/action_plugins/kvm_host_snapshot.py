"""kvm_host_snapshot, run on the host without AnsiballZ as kvm_host_probe is.

The snapshot is taken on every apply, converged or not: under AnsiballZ the host spent more CPU
importing Ansible's module_utils than saving libvirt's configuration. The module asks nothing
of AnsibleModule that the stand-in (module_utils/kvm_host_direct.py) does not give, so the same
action plugin runs it: action_plugins/kvm_host_probe.py, loaded from its file (role action
plugins are not importable by name).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "kvmprep_kvm_host_direct_action"


def _direct_action():
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _NAME, Path(__file__).resolve().with_name("kvm_host_probe.py")
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {spec}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


class ActionModule(_direct_action().ActionModule):
    pass
