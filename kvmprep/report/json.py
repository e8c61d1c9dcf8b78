"""``kvmprep check --format json`` and ``kvmprep controls --format json``.

check's report (schema ``kvmprep.check/1``) is written by the collection's check_report
(plugins/plugin_utils/check_report.py, where the schema is documented), the code the action
plugin kvmprep.kvm.check writes it with: the CLI and ``ansible-playbook kvmprep.kvm.check`` give
the same bytes for the same hosts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from kvmprep import content

# The judging code is the collection's (plugins/plugin_utils): importable once a checkout's
# ansible_collections directory is on sys.path (kvmprep depends on the collection).
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_report
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import HostReport
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Control

CATALOG_SCHEMA = "kvmprep.controls/1"


def document(
    reports: Sequence[HostReport], *, strict: bool = False, exit_status: int = 0
) -> dict[str, Any]:
    """check's report as data, with this kvmprep's version."""
    import kvmprep

    return check_report.document(
        reports, version=kvmprep.__version__, strict=strict, exit_status=exit_status
    )


def render_json(
    reports: Sequence[HostReport], stream: TextIO, *, strict: bool = False, exit_status: int = 0
) -> None:
    stream.write(check_report.dumps(document(reports, strict=strict, exit_status=exit_status)))


def render_catalog(controls: Sequence[Control], stream: TextIO) -> None:
    """``kvmprep controls --format json``: {"schema": ..., "controls": [{id, title, ...}]}."""
    json.dump(
        {"schema": CATALOG_SCHEMA, "controls": [c.as_dict() for c in controls]}, stream, indent=2
    )
    stream.write("\n")
