"""The environment unit tests run the ansible CLI with: JSON results, no colour, no warnings
about the implicit localhost, and Ansible's own state kept under the test's tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def ansible_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` with those settings, then ``extra`` (ANSIBLE_LIBRARY, ...) over them.
    The collection kvmprep.kvm is found as kvmprep finds it (its modules import their
    module_utils from it, the fixture playbooks name its roles by FQCN)."""
    from kvmprep import content

    return {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(content.collections_dir()),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_HOME": str(tmp_path / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        **extra,
    }


# Where the json callback's document starts (sorted keys: "custom_stats" first), after what
# -v and up print on the same stdout.
_JSON_RESULT = re.compile(r'^\{\n\s*"custom_stats"', re.MULTILINE)


def run_module_locally(
    tmp_path: Path, module: str, args: Mapping[str, Any], *extra: str, **env: str
) -> dict[str, Any]:
    """Run one module on localhost with the ansible CLI (``extra``: more CLI arguments, ``env``:
    ANSIBLE_LIBRARY and the like); return its result dict."""
    return run_module_with_output(tmp_path, module, args, *extra, **env)[0]


def run_module_with_output(
    tmp_path: Path, module: str, args: Mapping[str, Any], *extra: str, **env: str
) -> tuple[dict[str, Any], str]:
    """``run_module_locally``, and everything else Ansible printed (with ``-vvv`` in
    ``extra``: the connection's commands and the action's messages)."""
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which(
        "ansible"
    )
    assert ansible is not None, "the ansible command is not installed (pip install .[test])"
    interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    cmd = [
        ansible,
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-m",
        module,
        # An empty "{}" would be taken for raw parameters.
        *(["-a", json.dumps(dict(args))] if args else []),
        "-e",
        f"ansible_python_interpreter={interpreter}",
        *extra,
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=ansible_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    start = _JSON_RESULT.search(proc.stdout)
    try:
        output = json.loads(proc.stdout[start.start() if start else 0 :])
    except ValueError:
        raise AssertionError(
            f"ansible printed no JSON (rc={proc.returncode}): {proc.stdout}{proc.stderr}"
        ) from None
    printed = proc.stdout[: start.start() if start else 0] + proc.stderr
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"], printed
