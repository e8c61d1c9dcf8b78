"""The environment unit tests run the ansible CLI with: JSON results, no colour, no warnings
about the implicit localhost, and Ansible's own state kept under the test's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path


def ansible_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` with those settings, then ``extra`` (ANSIBLE_LIBRARY, ...) over them."""
    return {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_HOME": str(tmp_path / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        **extra,
    }
