"""kvm_host_probe without AnsiballZ: the action plugin (roles/kvm_host/action_plugins) and the
program it sends (roles/kvm_host/module_utils/kvm_host_direct.py), then both paths compared end
to end through Ansible on this machine."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.ansible_env import run_module_with_output

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "kvm_host"
LIBRARY = ROLE / "library"
ACTIONS = ROLE / "action_plugins"
MODULE_UTILS = ROLE / "module_utils"
RUNTIME = MODULE_UTILS / "kvm_host_direct.py"
DIRECT = "kvm_host_probe: running {} directly (without AnsiballZ)"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # No __pycache__ inside roles/; the runtime also cleans sys.path (it expects a process of
    # its own), which this one must not keep.
    saved = sys.dont_write_bytecode, list(sys.path)
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode, sys.path[:] = saved
    return module


plugin = _load("kvmprep_action_kvm_host_probe", ACTIONS / "kvm_host_probe.py")
runtime = _load("kvmprep_kvm_host_direct", RUNTIME)


def _spec_the_slow_way(path: Path) -> dict[str, Any]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["ARGUMENT_SPEC"]:  # type: ignore[attr-defined]
            return ast.literal_eval(node.value)
    raise AssertionError("no ARGUMENT_SPEC")


# --- the controller's side: the spec, the module_utils, the program ---------------------------


def test_the_spec_is_read_from_the_module_file_without_parsing_all_of_it() -> None:
    source = (LIBRARY / "kvm_host_probe.py").read_text()
    spec = plugin.read_argument_spec(source)
    assert spec == _spec_the_slow_way(LIBRARY / "kvm_host_probe.py")
    assert spec["sasl_fingerprint"] == {"type": "str", "default": "", "no_log": True}
    assert "blocks" in spec  # the last option: the statement was read to its end


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("X = 1\n", "has no module-level ARGUMENT_SPEC"),
        ("def f():\n    ARGUMENT_SPEC = {}\n", "has no module-level ARGUMENT_SPEC"),
        ("ARGUMENT_SPEC = dict(a={})\n", "is not a literal"),
        ('ARGUMENT_SPEC = {"a": {"default": CONSTANT}}\n', "is not a literal"),
        ("ARGUMENT_SPEC = [1]\n", "is not a dict"),
    ],
)
def test_a_spec_that_is_not_a_literal_dict_is_refused(source: str, why: str) -> None:
    with pytest.raises(plugin.NotDirect, match=why):
        plugin.read_argument_spec(source)


def test_the_spec_ends_at_the_next_top_level_statement() -> None:
    source = 'ARGUMENT_SPEC = {\n    "a": {"type": "str"},\n    # c\n}\nB = ARGUMENT_SPEC["a"]\n'
    assert plugin.read_argument_spec(source) == {"a": {"type": "str"}}


def test_module_util_imports() -> None:
    source = """\
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kvm_host_oneadmin import (  # shared
    remotes_digest,
    ssh_state as state,
)
from ansible.module_utils import one, two as deux
import ansible.module_utils.three
"""
    assert list(plugin.module_util_imports(source)) == [
        ("basic", ["AnsibleModule"]),
        ("kvm_host_oneadmin", ["remotes_digest", "ssh_state"]),
        ("one", []),
        ("two", []),
        ("three", []),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "from ansible.module_utils.common.text.converters import to_text",
        "from .sibling import x",
        "import ansible.module_utils.six.moves",
    ],
)
def test_nested_and_relative_module_utils_are_not_sent(line: str) -> None:
    with pytest.raises(plugin.NotDirect):
        list(plugin.module_util_imports(line + "\n"))


def test_module_utils_are_collected_dependencies_first(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "util_x.py").write_text("from ansible.module_utils.util_y import y\n")
    (second / "util_y.py").write_text("y = 1\n")
    (second / "util_x.py").write_text("shadowed = True\n")
    module = (
        "from ansible.module_utils.basic import AnsibleModule\nimport ansible.module_utils.util_x\n"
    )
    got = plugin.collect_module_utils(module, [str(first), str(second)], tmp_path / "ansible")
    assert got == [
        ("util_y", "ansible/module_utils/util_y.py", "y = 1\n"),
        ("util_x", "ansible/module_utils/util_x.py", (first / "util_x.py").read_text()),
    ]


def test_a_module_util_that_cannot_be_sent_means_ansiballz(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    cases = {
        "from ansible.module_utils.nowhere import x\n": "module_utils.nowhere was not found",
        "import ansible.module_utils.pkg\n": "ansible.module_utils.pkg is a package",
        "from ansible.module_utils.basic import AnsibleModule, env_fallback\n": "env_fallback",
    }
    for source, why in cases.items():
        with pytest.raises(plugin.NotDirect, match=why):
            plugin.collect_module_utils(source, [str(tmp_path)], tmp_path / "ansible")
    # Ansible's own module_utils (found in its package directory) are not sent either.
    own = tmp_path / "ansible" / "module_utils"
    own.mkdir(parents=True)
    (own / "urls.py").write_text("")
    with pytest.raises(plugin.NotDirect, match="is Ansible's own"):
        plugin.collect_module_utils(
            "from ansible.module_utils.urls import open_url\n", [str(own)], tmp_path / "ansible"
        )


def test_the_real_module_needs_only_its_roles_module_utils() -> None:
    source = (LIBRARY / "kvm_host_probe.py").read_text()
    got = plugin.collect_module_utils(source, [str(MODULE_UTILS)], Path("/nonexistent"))
    assert [name for name, _file, _source in got] == [
        "kvm_host_names",
        "kvm_host_safepath",  # kvm_host_oneadmin reads oneadmin's files with it
        "kvm_host_oneadmin",
    ]


def test_the_runtime_runs_on_the_targets_oldest_python() -> None:
    # The modules it runs support Python 3.8 on the target (ansible-core 2.19's floor).
    ast.parse(RUNTIME.read_text(), feature_version=(3, 8))


# --- the program on the host, without Ansible -------------------------------------------------

SPEC = {"name": {"type": "str", "default": "x"}, "secret": {"type": "str", "no_log": True}}


def run_program(
    source: str,
    params: Mapping[str, Any] | None = None,
    *,
    spec: Mapping[str, Any] = SPEC,
    module_utils: list[tuple[str, str, str]] | None = None,
    internal: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any], str]:
    """Run ``source`` as kvm_host_probe's program would run it; (exit code, result, stderr)."""
    params = {"name": "x", "secret": None, **(params or {})}
    secret = params.get("secret")
    program = plugin.build_program(
        RUNTIME.read_text(),
        module_source=source,
        module_filename="test_module.py",
        module_utils=module_utils or [],
        argument_spec=spec,
        params=params,
        no_log_values={secret} if secret else set(),
        internal={
            "_ansible_module_name": "test_module",
            "_ansible_no_log": True,
            **(internal or {}),
        },
    )
    proc = subprocess.run(
        [PYTHON], input=program, capture_output=True, timeout=60, check=False, cwd="/"
    )
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc
    return proc.returncode, json.loads(lines[0]), proc.stderr.decode()


MODULE_HEAD = "from ansible.module_utils.basic import AnsibleModule\n"
SPEC_LINE = f"module = AnsibleModule(argument_spec={SPEC!r}, supports_check_mode=True)\n"


def test_exit_json_prints_one_result_with_the_invocation() -> None:
    rc, result, _err = run_program(
        MODULE_HEAD + SPEC_LINE + "module.exit_json(changed=False, name=module.params['name'])\n",
        {"name": "probe"},
    )
    assert rc == 0
    assert result == {
        "changed": False,
        "name": "probe",
        "invocation": {"module_args": {"name": "probe", "secret": None}},
    }


def test_a_no_log_value_never_comes_back() -> None:
    rc, result, _err = run_program(
        MODULE_HEAD
        + SPEC_LINE
        + "module.warn('about ' + module.params['secret'])\n"
        + "module.exit_json(same=module.params['secret'], inside='x' + module.params['secret'],"
        + " flag=True, nothing=None)\n",
        {"secret": "hunter2"},
    )
    assert rc == 0
    assert "hunter2" not in json.dumps(result)
    assert result["same"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert result["inside"] == "x********"
    assert result["warnings"] == ["about ********"]
    assert result["invocation"]["module_args"]["secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert result["flag"] is True
    assert result["nothing"] is None


def test_fail_json_fails_with_exit_code_1() -> None:
    rc, result, _err = run_program(
        MODULE_HEAD + SPEC_LINE + "module.fail_json(msg='no way', rc=3)\n"
    )
    assert rc == 1
    assert result["failed"] is True
    assert result["msg"] == "no way"
    assert result["rc"] == 3


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ("raise ValueError('boom')\n", "Module failed: ValueError: boom"),
        ("", "Module failed: RuntimeError: New-style module did not handle its own exit."),
        ("import ansible.module_utils.absent\n", "Module failed: ModuleNotFoundError: "),
        (
            "module.run_command(['true'], use_unsafe_shell=True)\n",
            "Module failed: TypeError: ",
        ),
    ],
)
def test_anything_unexpected_is_a_failed_result(body: str, msg: str) -> None:
    rc, result, _err = run_program(MODULE_HEAD + SPEC_LINE + body)
    assert rc == 1
    assert result["failed"] is True
    assert result["msg"].startswith(msg)
    assert "Traceback" in result["exception"]


def test_the_module_must_use_the_spec_the_controller_validated_with() -> None:
    rc, result, _err = run_program(MODULE_HEAD + "AnsibleModule(argument_spec={}).exit_json()\n")
    assert rc == 1
    assert "argument_spec is not its ARGUMENT_SPEC" in result["msg"]
    rc, result, _err = run_program(
        MODULE_HEAD + f"AnsibleModule(argument_spec={SPEC!r}, required_if=[1]).exit_json()\n"
    )
    assert rc == 1
    assert "does not implement AnsibleModule(required_if=...)" in result["msg"]


def test_check_mode() -> None:
    module = MODULE_HEAD + "m = AnsibleModule(argument_spec={spec!r}, supports_check_mode={s})\n"
    module += "m.exit_json(check_mode=m.check_mode)\n"
    internal = {"_ansible_check_mode": True}
    _rc, result, _err = run_program(module.format(spec=SPEC, s=True), internal=internal)
    assert result["check_mode"] is True
    _rc, result, _err = run_program(module.format(spec=SPEC, s=False), internal=internal)
    assert result["skipped"] is True
    assert result["msg"] == "remote module (test_module) does not support check mode"
    _rc, result, _err = run_program(module.format(spec=SPEC, s=True))
    assert result["check_mode"] is False


def test_module_utils_are_importable_as_ansible_makes_them() -> None:
    utils = [
        ("util_y", "ansible/module_utils/util_y.py", "Y = 'y'\n"),
        (
            "util_x",
            "ansible/module_utils/util_x.py",
            "from ansible.module_utils.util_y import Y\nX = 'x' + Y\n",
        ),
    ]
    source = MODULE_HEAD + "from ansible.module_utils import util_x\n" + SPEC_LINE
    source += "module.exit_json(x=util_x.X)\n"
    rc, result, _err = run_program(source, module_utils=utils)
    assert (rc, result["x"]) == (0, "xy")


def test_nothing_is_imported_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("raise SystemExit('imported from the cwd')\n")
    program = plugin.build_program(
        RUNTIME.read_text(),
        module_source=MODULE_HEAD + SPEC_LINE + "module.exit_json(ok=True)\n",
        module_filename="m.py",
        module_utils=[],
        argument_spec=SPEC,
        params={"name": "x", "secret": None},
        no_log_values=set(),
        internal={"_ansible_no_log": True},
    )
    proc = subprocess.run([PYTHON], input=program, capture_output=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc
    assert json.loads(proc.stdout)["ok"] is True


# run_command and get_bin_path as AnsibleModule's, in this process.


class _Exit(Exception):
    pass


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> Any:
    results: list[tuple[dict[str, Any], int]] = []

    def emit(result: dict[str, Any], status: int) -> None:
        results.append((result, status))
        raise _Exit

    monkeypatch.setattr(runtime, "_emit", emit)
    monkeypatch.setattr(
        runtime, "_PAYLOAD", {"argument_spec": {}, "internal": {"_ansible_no_log": True}}
    )
    instance = runtime.AnsibleModule(argument_spec={})
    instance.results = results
    return instance


def test_run_command(module: Any, tmp_path: Path) -> None:
    rc, out, err = module.run_command(["sh", "-c", 'echo "$1 $HOME"; echo e >&2; exit 3', "-", "~"])
    # expand_user_and_vars (the default): "~" is the home directory, as AnsibleModule does.
    assert (rc, out, err) == (3, f"{Path('~').expanduser()} {os.environ['HOME']}\n", "e\n")
    rc, out, _err = module.run_command(["echo", "~", "$HOME"], expand_user_and_vars=False)
    assert out == "~ $HOME\n"
    rc, out, _err = module.run_command("cat", data="in")  # a string is split; data gets a newline
    assert (rc, out) == (0, "in\n")
    rc, out, _err = module.run_command(
        ["sh", "-c", 'echo "$KVMPREP_X"'], environ_update={"KVMPREP_X": "y"}
    )
    assert out == "y\n"
    rc, out, _err = module.run_command(["pwd"], cwd=str(tmp_path))
    assert out == f"{tmp_path}\n"
    rc, out, _err = module.run_command(["printf", "\\377"], errors="surrogate_or_replace")
    assert out == "\udcff"
    rc, out, _err = module.run_command(["printf", "\\377"], encoding=None)
    assert out == b"\xff"
    # A command that cannot run: an exception for the caller that handles it...
    with pytest.raises(FileNotFoundError, match="/nonexistent/x"):
        module.run_command(["/nonexistent/x"], handle_exceptions=False)
    # ...else the task fails as AnsibleModule fails it.
    with pytest.raises(_Exit):
        module.run_command(["/nonexistent/x", "--password", "p"])
    result, status = module.results[-1]
    assert status == 1
    assert result["msg"] == "Error executing command."
    assert result["cmd"] == "/nonexistent/x --password '********'"
    assert result["rc"] == 2


def test_run_command_does_not_wait_for_what_the_command_left_running(module: Any) -> None:
    # The shell exits at once; its background child keeps stdout open for 10 s. AnsibleModule
    # returns after a second of silence (communicate() would wait for the pipe to close).
    started = time.monotonic()
    rc, out, _err = module.run_command(["sh", "-c", "sleep 10 & echo started"])
    assert (rc, out) == (0, "started\n")
    assert time.monotonic() - started < 5


def test_get_bin_path_searches_as_ansible_does(
    module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ansible.module_utils.common.process import get_bin_path

    first, second = tmp_path / "opt", tmp_path / "path"
    for directory in (first, second):
        directory.mkdir()
        tool = directory / "tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o700 if directory is second else 0o644)
    (second / "dir").mkdir()
    monkeypatch.setenv("PATH", str(second))

    def theirs(name: str, opt_dirs: list[str] | None) -> str | None:
        try:
            return get_bin_path(name, opt_dirs)
        except ValueError:
            return None

    # opt_dirs come first, but only an executable file counts; then PATH, then the sbin dirs.
    cases = [("tool", [str(first)]), ("tool", None), ("sh", ["/bin"]), ("sh", None), ("dir", None)]
    if Path("/sbin/ldconfig").exists() or Path("/usr/sbin/ldconfig").exists():
        cases.append(("ldconfig", []))
    for name, opt_dirs in cases:
        assert module.get_bin_path(name, opt_dirs=opt_dirs) == theirs(name, opt_dirs), name
    assert module.get_bin_path("tool", opt_dirs=[str(first)]) == str(second / "tool")
    assert module.get_bin_path("dir") is None
    with pytest.raises(_Exit):
        module.get_bin_path("absent-tool-xyz", required=True)
    assert module.results[-1][0]["msg"].startswith(
        'Failed to find required executable "absent-tool-xyz" in paths: '
    )


def test_remove_values_as_ansible_does() -> None:
    from ansible.module_utils.common.parameters import remove_values

    data = {
        "a": "s3cret",
        "b": ["xs3cretx", 1, 2.5, True, None, {"c": "no"}],
        "n": 12345,
        "s3cret": "key kept",
    }
    for secrets in ({"s3cret"}, {"s3cret", "s3"}, {"234"}, set()):
        assert runtime.remove_values(data, secrets) == remove_values(data, secrets)


# --- end to end through Ansible: the same probe either way ------------------------------------


def _run(
    tmp_path: Path, module: str, args: Mapping[str, Any], *extra: str, direct: bool, **env: str
):
    """Run one of the role's modules with its action plugin, pipelining (the direct path) or
    not (AnsiballZ); (result, what -vvv printed)."""
    env = {
        "ANSIBLE_LIBRARY": str(LIBRARY),
        "ANSIBLE_MODULE_UTILS": str(MODULE_UTILS),
        "ANSIBLE_ACTION_PLUGINS": str(ACTIONS),
        "ANSIBLE_PIPELINING": "True" if direct else "False",
        **env,
    }
    return run_module_with_output(tmp_path, module, args, "-vvv", *extra, **env)


def _probe(tmp_path: Path, args: Mapping[str, Any], *extra: str, direct: bool, **env: str):
    return _run(tmp_path, "kvm_host_probe", args, *extra, direct=direct, **env)


def _leaves(data: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(data, dict) and data:
        return {k: v for key, item in data.items() for k, v in _leaves(item, (*path, key)).items()}
    return {path: data}


ALL_GATHER = {
    "gather": list(_spec_the_slow_way(LIBRARY / "kvm_host_probe.py")["gather"]["choices"]),
    "packages": ["bash", "kvmprep-no-such-package"],
    "paths": ["/etc/passwd", "/nonexistent"],
    "blocks": [{"path": "/etc/hosts", "marker": "# {mark} KVMPREP", "block": "x"}],
    "expect": {"kvm_host_oneadmin_uid": 9869},
}


@pytest.mark.ansible
def test_the_probe_is_the_same_either_way(tmp_path: Path) -> None:
    direct, said = _probe(tmp_path, ALL_GATHER, "--check", direct=True)
    assert DIRECT.format(LIBRARY / "kvm_host_probe.py") in said
    assert "AnsiballZ" not in said.replace("(without AnsiballZ)", "")
    zipped, said = _probe(tmp_path, ALL_GATHER, "--check", direct=False)
    assert "not run directly: no pipelining" in said
    assert "AnsiballZ_kvm_host_probe.py" in said
    again, _said = _probe(tmp_path, ALL_GATHER, "--check", direct=False)
    for result in (direct, zipped, again):
        assert result.get("failed") is not True, result
    assert set(direct["probe"]) == set(ALL_GATHER["gather"]) | {"errors"}
    # What two AnsiballZ runs agree on (not a listener's or a cache's state of the moment) is
    # what the direct run must say; the structure is the same throughout.
    assert _leaves(direct).keys() == _leaves(zipped).keys()
    stable = {k: v for k, v in _leaves(zipped).items() if _leaves(again).get(k) == v}
    assert len(stable) > 0.9 * len(_leaves(zipped))
    assert {k: _leaves(direct)[k] for k in stable} == stable
    assert direct["probe"]["paths"]["/etc/passwd"]["owner"] == "root"
    assert direct["expect"] == {"kvm_host_oneadmin_uid": 9869}


@pytest.mark.ansible
def test_the_secret_fingerprint_reaches_the_probe_and_nothing_else(tmp_path: Path) -> None:
    secret = "kvmprep-test-fingerprint-6f1d"
    db = tmp_path / "passwd.db"
    (tmp_path / "passwd.db.kvmprep").write_text(secret + "\n")
    args = {"gather": ["sasl"], "sasl_db": str(db), "sasl_fingerprint": secret}
    for direct in (True, False):
        result, said = _probe(tmp_path, args, direct=direct)
        # The module compared it (so it was sent) ...
        assert result["probe"]["sasl"]["fingerprint_matches"] is True, result
        # ... and it is neither in Ansible's -vvv output nor in the result.
        assert secret not in said
        assert secret not in json.dumps(result)
        assert result["invocation"]["module_args"]["sasl_fingerprint"] == (
            "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        )
        assert (DIRECT.format(LIBRARY / "kvm_host_probe.py") in said) is direct


@pytest.mark.ansible
def test_interpreter_discovery_is_ansibles_either_way(tmp_path: Path) -> None:
    # The last -e wins: no interpreter set, Ansible discovers it and returns it as a fact.
    discover = ("-e", "ansible_python_interpreter=auto_silent")
    args = {"gather": ["kvm"]}
    direct, said = _probe(tmp_path, args, *discover, direct=True)
    zipped, _said = _probe(tmp_path, args, *discover, direct=False)
    assert "directly (without AnsiballZ)" in said
    found = zipped["ansible_facts"]["discovered_interpreter_python"]
    assert Path(found).name.startswith("python")
    assert direct["ansible_facts"] == {"discovered_interpreter_python": found}
    assert f"EXEC /bin/sh -c '{found} && sleep 0'" in said  # the pipelined command


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"bogus": 1}, "Unsupported parameters for (kvm_host_probe) module: bogus. Supported"),
        ({"gather": ["kvm", "nope"]}, "value of gather must be one or more of: kvm, libvirt"),
        ({"blocks": [{"path": "/x"}]}, "missing required arguments: block, marker found in blocks"),
    ],
)
def test_invalid_arguments_fail_with_ansiblemodules_message(
    tmp_path: Path, args: dict[str, Any], expected: str
) -> None:
    direct, said = _probe(tmp_path, args, direct=True)
    fallback, _said = _probe(tmp_path, args, direct=False)
    # The module alone (no action plugin): AnsibleModule's own wording.
    module, _said = run_module_with_output(
        tmp_path,
        "kvm_host_probe",
        args,
        ANSIBLE_LIBRARY=str(LIBRARY),
        ANSIBLE_MODULE_UTILS=str(MODULE_UTILS),
    )
    assert module["failed"] is True
    assert expected in module["msg"]
    assert direct["failed"] is fallback["failed"] is True
    assert direct["msg"] == fallback["msg"] == module["msg"]
    assert "Using module file" not in said  # refused on the controller, no call to the host


def _probe_of(tmp_path: Path, body: str, *, direct: bool = True) -> tuple[dict[str, Any], str]:
    """Run a kvm_host_probe module of ``body`` from a library of its own (the action plugin
    runs for any module of that name), directly if it can or under AnsiballZ."""
    library = tmp_path / "library"
    library.mkdir(parents=True)
    spec = 'ARGUMENT_SPEC = {"name": {"type": "str", "default": "x"}}\n'
    (library / "kvm_host_probe.py").write_text(
        "#!/usr/bin/python\n" + MODULE_HEAD + body.replace("SPEC\n", spec, 1)
    )
    return _probe(tmp_path, {}, direct=direct, ANSIBLE_LIBRARY=str(library))


@pytest.mark.ansible
def test_a_module_util_that_is_not_found_means_ansiballz(tmp_path: Path) -> None:
    # Ansible's own module_utils are not sent: the module then runs under AnsiballZ, and works.
    result, said = _probe_of(
        tmp_path,
        "from ansible.module_utils.common.text.converters import to_text\nSPEC\n"
        "AnsibleModule(argument_spec=ARGUMENT_SPEC).exit_json(text=to_text(b'ok'))\n",
    )
    assert result.get("failed") is not True, result
    assert result["text"] == "ok"
    assert "not run directly: ansible.module_utils.common.text.converters is not a plain" in said
    assert "directly (without AnsiballZ)" not in said
    # One that exists nowhere: building the AnsiballZ payload (where the interpreter is found)
    # fails first, as it does without the action plugin.
    result, said = _probe_of(
        tmp_path / "absent",
        "from ansible.module_utils.kvmprep_absent import x\nSPEC\n"
        "AnsibleModule(argument_spec=ARGUMENT_SPEC).exit_json()\n",
    )
    assert "directly (without AnsiballZ)" not in said
    assert result["failed"] is True
    assert "Could not find imported module support code" in result["msg"]


@pytest.mark.ansible
def test_a_failing_module_is_a_failed_result(tmp_path: Path) -> None:
    result, said = _probe_of(
        tmp_path,
        "SPEC\nAnsibleModule(argument_spec=ARGUMENT_SPEC)\nraise OSError(5, 'disk gone')\n",
    )
    assert "directly (without AnsiballZ)" in said
    assert result["failed"] is True
    assert result["msg"] == "Module failed: OSError: [Errno 5] disk gone"


@pytest.mark.ansible
def test_warnings_reach_the_task_either_way(tmp_path: Path) -> None:
    body = "SPEC\nm = AnsibleModule(argument_spec=ARGUMENT_SPEC)\nm.warn('mind the gap')\n"
    body += "m.exit_json(changed=False)\n"
    direct, said = _probe_of(tmp_path / "direct", body)
    zipped, _said = _probe_of(tmp_path / "zipped", body, direct=False)
    assert "directly (without AnsiballZ)" in said
    assert direct["warnings"] == zipped["warnings"] == ["mind the gap"]


def test_a_path_option_means_ansiballz() -> None:
    # Validated on the controller, a path would be expanded there (~, $VAR), not on the host.
    for source in (
        'ARGUMENT_SPEC = {"dest": {"type": "path"}}\n',
        'ARGUMENT_SPEC = {"files": {"type": "list", "elements": "path"}}\n',
        'ARGUMENT_SPEC = {"x": {"type": "dict", "options": {"dest": {"type": "path"}}}}\n',
    ):
        with pytest.raises(plugin.NotDirect, match="of type path"):
            plugin.read_argument_spec(source)
    assert plugin.read_argument_spec('ARGUMENT_SPEC = {"dest": {"type": "str"}}\n')


@pytest.mark.ansible
def test_the_snapshot_is_taken_and_restored_the_same_either_way(tmp_path: Path) -> None:
    # kvm_host_snapshot's action plugin is kvm_host_probe's, loaded from its file.
    conf = tmp_path / "etc" / "a.conf"
    conf.parent.mkdir()
    results = {}
    for direct in (True, False):
        conf.write_text("before\n")
        dest = tmp_path / f"snap-{direct}"
        args = {"paths": [f"{tmp_path}/etc/*.conf"], "dest": str(dest)}
        saved, said = _run(tmp_path, "kvm_host_snapshot", args, direct=direct)
        running = "kvm_host_snapshot: running {} directly (without AnsiballZ)"
        assert (running.format(LIBRARY / "kvm_host_snapshot.py") in said) is direct
        conf.write_text("after\n")
        restored, _said = _run(
            tmp_path, "kvm_host_snapshot", {**args, "state": "restored"}, direct=direct
        )
        assert conf.read_text() == "before\n"
        results[direct] = (saved, restored)
    for saved, restored in results.values():
        assert saved["saved"] == [str(conf)]
        assert saved["changed"] is False
        assert restored["changed"] is True
        assert restored["saved"] == [str(conf)]  # what it put back
    assert results[True][0]["restart_pending"] == results[False][0]["restart_pending"]
