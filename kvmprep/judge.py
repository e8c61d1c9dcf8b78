"""The judge of kvm_host (roles/kvm_host/module_utils/kvm_host_judge.py), for check's controls.

apply asks the same file through the role's kvm_host_plan action plugin: check and apply judge
a host with one code. It is the role's file, loaded by path from kvmprep's Ansible content
(the role keeps it where its action plugin finds it), under a package of its own so that its
relative import of kvm_host_layouts resolves to the role's file too.
"""

from __future__ import annotations

import sys
from functools import cache
from types import ModuleType

from kvmprep.content import content_root

#: The package the role's module_utils are loaded under; the action plugin uses the same name,
#: so a process that runs both (unit tests) loads them once.
PACKAGE = "kvm_host_controller_utils"
_FILES = ("kvm_host_layouts", "kvm_host_judge")


@cache
def judge() -> ModuleType:
    """The judge module (loaded once per process: it is pure and its source does not change
    while kvmprep runs)."""
    loaded = sys.modules.get(f"{PACKAGE}.kvm_host_judge")
    if loaded is not None:
        return loaded
    package = sys.modules.setdefault(PACKAGE, ModuleType(PACKAGE))
    package.__path__ = []
    directory = content_root() / "roles" / "kvm_host" / "module_utils"
    module = package
    for name in _FILES:
        path = directory / f"{name}.py"
        module = ModuleType(f"{PACKAGE}.{name}")
        module.__file__ = str(path)
        module.__package__ = PACKAGE
        sys.modules[module.__name__] = module
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module
