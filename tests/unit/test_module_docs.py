"""Every module of plugins/modules says what it takes: DOCUMENTATION, EXAMPLES and RETURN are
YAML (ansible-doc reads them), DOCUMENTATION's options are the argument_spec the module gives
AnsibleModule (names, types, required, defaults, choices, elements, suboptions), and the
examples call the module with documented options only."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from test_kvm_host_conf import load_library_module

MODULES = sorted((REPO_ROOT / "plugins" / "modules").glob("*.py"))
#: What AnsibleModule's add_file_common_args adds (the file attributes a task may set).
FILE_COMMON = {"mode", "owner", "group", "seuser", "serole", "selevel", "setype", "attributes"}


class _Built(Exception):
    """Raised by the stand-in AnsibleModule once it has the module's argument_spec."""


def _module_arguments(module: ModuleType) -> dict[str, Any]:
    """The keyword arguments main() gives AnsibleModule (main() stops there)."""
    given: dict[str, Any] = {}

    def stand_in(**kwargs: Any) -> None:
        given.update(kwargs)
        raise _Built

    module.AnsibleModule = stand_in  # a fresh module object per test: nothing to restore
    with pytest.raises(_Built):
        module.main()
    return given


def _as_documented(spec: dict[str, Any]) -> dict[str, Any]:
    """An argument_spec in DOCUMENTATION's terms, with AnsibleModule's implicit defaults."""
    out = {}
    for name, option in spec.items():
        entry = {
            "type": option.get("type", "str"),
            "required": option.get("required", False),
            "default": option.get("default"),
            "choices": option.get("choices"),
            "elements": option.get("elements"),
        }
        nested = option.get("options", option.get("suboptions"))
        if nested is not None:
            entry["suboptions"] = _as_documented(nested)
        out[name] = entry
    return out


@pytest.fixture(params=MODULES, ids=lambda path: path.stem)
def module(request: pytest.FixtureRequest) -> ModuleType:
    path: Path = request.param
    return load_library_module(path.stem, path.parent)


def test_every_module_is_covered() -> None:
    assert {p.stem for p in MODULES} >= {
        "kvm_host_conf",
        "kvm_host_probe",
        "kvm_host_settings",
        "kvm_host_snapshot",
        "one_frontend_conf",
        "one_frontend_host",
        "one_frontend_read",
    }


def test_documentation_describes_the_argument_spec(module: ModuleType) -> None:
    doc = yaml.safe_load(module.DOCUMENTATION)
    name = Path(module.__file__ or "").stem
    assert doc["module"] == name
    assert doc["short_description"]
    documented = _as_documented(doc.get("options") or {})
    assert documented == _as_documented(_module_arguments(module)["argument_spec"])


def test_return_values_are_documented(module: ModuleType) -> None:
    returned = yaml.safe_load(module.RETURN)
    assert isinstance(returned, dict)
    assert returned
    for key, value in returned.items():
        assert value.get("description"), key
        assert value.get("returned"), key


def test_examples_use_documented_options_only(module: ModuleType) -> None:
    name = Path(module.__file__ or "").stem
    options = set(yaml.safe_load(module.DOCUMENTATION).get("options") or {})
    if _module_arguments(module).get("add_file_common_args"):
        options |= FILE_COMMON
    # By FQCN, as a playbook outside the collection calls it.
    fqcn = f"kvmprep.kvm.{name}"
    calls = [task[fqcn] or {} for task in yaml.safe_load(module.EXAMPLES) if fqcn in task]
    assert calls, f"no example calls {fqcn}"
    for args in calls:
        assert set(args) <= options, sorted(set(args) - options)
