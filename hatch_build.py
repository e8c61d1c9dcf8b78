"""Ship the Ansible collection kvmprep.kvm in the wheel, at ``ansible_collections/kvmprep/kvm``.

That is where the ``ansible`` PyPI package ships its collections: Python imports the collection
from site-packages (kvmprep imports its judges from it) and Ansible finds it there by itself
(COLLECTIONS_SCAN_SYS_PATH). Only a regular wheel gets the copy: hatchling would put
``force-include`` files into an editable install too, where a copy in site-packages would
go stale and shadow the checkout for ansible-playbook run by hand. An editable install finds
the checkout itself (kvmprep/content.py, collections_dir).
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The collection's content (galaxy.yml's build_ignore leaves out the same other files).
CONTENT = ("galaxy.yml", "README.md", "meta", "plugins", "roles", "playbooks", "inventory")
TARGET = "ansible_collections/kvmprep/kvm"


class CollectionHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        build_data["force_include"].update({name: f"{TARGET}/{name}" for name in CONTENT})
