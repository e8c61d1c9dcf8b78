"""The collection's judges, for check's controls: kvm_host_judge (what apply would change on a
host) and machine_types (which machine types a cluster's hosts share).

apply asks the same files through the collection's kvm_host_plan action plugin and
one_frontend filters: check and apply judge a host with one code. The dependency points from the
CLI to the collection: these are imported from ``ansible_collections.kvmprep.kvm``, the
collection kvmprep runs (``content.collections_dir()``), never copied into the kvmprep package.
"""

from __future__ import annotations

from types import ModuleType

from kvmprep.content import import_collection

# Before the imports below: a source checkout's collection is importable only once its
# ansible_collections directory is on sys.path (an installed wheel's is there already).
import_collection()

from ansible_collections.kvmprep.kvm.plugins.module_utils import (  # noqa: E402
    kvm_host_judge,
    machine_types,
)

__all__ = ["judge", "kvm_host_judge", "machine_types"]


def judge() -> ModuleType:
    """The judge module (the controls call ``judge().NAME``)."""
    return kvm_host_judge
