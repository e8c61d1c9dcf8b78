"""kvm_host_probe, run on the controller: the module's source runs on the host without AnsiballZ.

Under AnsiballZ the host imports ansible.module_utils.basic from a zip on every call, and
zipimport cannot cache bytecode: about 0.3 s of the host's CPU per call, more than the probe's
own work (measured with ``python3 -X importtime``). So when the connection pipelines, the task
is not async and the interpreter is Python, this plugin validates and completes the arguments
here (the module's own ARGUMENT_SPEC, read from its file with ast, and Ansible's
ArgumentSpecValidator), and sends one program on the module's stdin: module_utils/
kvm_host_direct.py (a stand-in for AnsibleModule), the module's source, the sources of the
module_utils it imports and the validated arguments. The rest is ``_execute_module``'s own
(environment, become, the pipelined command, the parsing of the result, the discovered
interpreter's fact); only the payload it gets from ``_configure_module`` differs, and its
shebang is made as ``_configure_module`` makes it, interpreter discovery included.

Otherwise, and whenever the module needs something the stand-in cannot give (a module_util
that is not a plain file of a module_utils directory, another name from basic), the module
runs under AnsiballZ exactly as it would without this plugin. ``-vvv`` says which path a task
took and why.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ansible
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import module_utils_loader
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

RUNTIME = Path(__file__).resolve().parent.parent / "module_utils" / "kvm_host_direct.py"
#: What kvm_host_direct reads of the internal arguments _execute_module adds.
INTERNAL_ARGS = (
    "_ansible_check_mode",
    "_ansible_no_log",
    "_ansible_module_name",
    "_ansible_syslog_facility",
    "_ansible_target_log_info",
)
#: The only name the stand-in for ansible.module_utils.basic provides.
BASIC_NAMES = frozenset({"AnsibleModule"})

_SPEC_START = re.compile(r"^ARGUMENT_SPEC\s*=", re.MULTILINE)
_METADATA = re.compile(r"^METADATA\s*=", re.MULTILINE)
# The next top-level statement: a line that starts in column 0 and does not close a bracket.
_TOP_LEVEL = re.compile(r"^[^\s#)\]}]", re.MULTILINE)
_IMPORT = re.compile(
    r"^[ \t]*(?:"
    r"from[ \t]+(?P<from>\.+[\w.]*|ansible\.module_utils(?:\.[\w.]+)?)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n]*)"
    r"|import[ \t]+(?P<plain>ansible\.module_utils[^\n]*)"
    r")",
    re.MULTILINE,
)


class NotDirect(Exception):
    """Why the module cannot run without AnsiballZ (it then runs with it)."""


def read_argument_spec(source: str, path: str = "<module>") -> dict[str, Any]:
    """The module's ``ARGUMENT_SPEC = {...}``, a literal, without parsing the whole file."""
    start = _SPEC_START.search(source)
    if start is None:
        raise NotDirect(f"{path} has no module-level ARGUMENT_SPEC")
    end = _TOP_LEVEL.search(source, start.end())
    statement = source[start.start() : end.start() if end else len(source)]
    try:
        (node,) = ast.parse(statement).body
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            raise ValueError("not a plain assignment")
        spec = ast.literal_eval(node.value)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise NotDirect(f"{path}: ARGUMENT_SPEC is not a literal ({exc})") from exc
    if not isinstance(spec, dict):
        raise NotDirect(f"{path}: ARGUMENT_SPEC is not a dict")
    path_option = _path_option(spec)
    if path_option:
        # Validated here, a path would be expanded (~, $VAR) on the controller, not the host.
        raise NotDirect(f"{path}: option {path_option} is of type path")
    return spec


def _path_option(spec: Mapping[str, Any], prefix: str = "") -> str:
    for name, option in spec.items():
        if not isinstance(option, Mapping):
            continue
        if option.get("type") == "path" or option.get("elements") == "path":
            return prefix + name
        nested = _path_option(option.get("options") or {}, f"{prefix}{name}.")
        if nested:
            return nested
    return ""


def _imported_names(names: str) -> list[str]:
    names = re.sub(r"#[^\n]*", "", names).strip("()")
    return [part.split()[0] for part in names.replace("\n", " ").split(",") if part.strip()]


def module_util_imports(source: str) -> Iterator[tuple[str, list[str]]]:
    """(module under ansible.module_utils, names imported from it) for each import of one.

    Relative and nested imports (``ansible.module_utils.common.x``: Ansible's own) raise
    NotDirect: the stand-in provides only plain files of the module_utils directories.
    """
    for match in _IMPORT.finditer(source):
        if match["plain"]:
            for part in match["plain"].split("#")[0].split(","):
                yield _module_util(part.split()[0]), []
            continue
        origin = match["from"]
        if origin.startswith("."):
            raise NotDirect(f"relative import from {origin}")
        names = _imported_names(match["names"])
        if origin == "ansible.module_utils":
            for name in names:
                yield _module_util(f"{origin}.{name}"), []
        else:
            yield _module_util(origin), names


def _module_util(dotted: str) -> str:
    parts = dotted.split(".")
    if parts[:2] != ["ansible", "module_utils"] or len(parts) != 3:
        raise NotDirect(f"{dotted} is not a plain module_utils file")
    return parts[2]


def collect_module_utils(
    source: str, search_path: list[str], ansible_dir: Path
) -> list[tuple[str, str, str]]:
    """(name, file name, source) of every module_util the module imports, directly or not,
    dependencies first; found in ``search_path`` as Ansible's legacy locator finds them."""
    found: dict[str, tuple[str, str, str]] = {}
    visiting: set[str] = set()

    def visit(text: str) -> None:
        for name, names in module_util_imports(text):
            if name == "basic":
                if not set(names) <= BASIC_NAMES:
                    extra = ", ".join(sorted(set(names) - BASIC_NAMES))
                    raise NotDirect(f"imports {extra} from ansible.module_utils.basic")
                continue
            if name in found or name in visiting:
                continue
            visiting.add(name)
            path = _find_module_util(name, search_path, ansible_dir)
            util_source = path.read_text(encoding="utf-8")
            visit(util_source)
            found[name] = (name, f"ansible/module_utils/{name}.py", util_source)

    visit(source)
    return list(found.values())


def _find_module_util(name: str, search_path: list[str], ansible_dir: Path) -> Path:
    for directory in map(Path, search_path):
        if (directory / name).is_dir():
            raise NotDirect(f"ansible.module_utils.{name} is a package")
        path = directory / f"{name}.py"
        if path.is_file():
            # Ansible's own module_utils are not sent: only basic has a stand-in.
            if path.resolve().is_relative_to(ansible_dir):
                raise NotDirect(f"ansible.module_utils.{name} is Ansible's own")
            return path
    raise NotDirect(f"ansible.module_utils.{name} was not found in {':'.join(search_path)}")


def build_program(
    runtime: str,
    *,
    module_source: str,
    module_filename: str,
    module_utils: list[tuple[str, str, str]],
    argument_spec: Mapping[str, Any],
    params: Mapping[str, Any],
    no_log_values: set[str],
    internal: Mapping[str, Any],
    encoder: type[json.JSONEncoder] | None = None,
) -> bytes:
    """The program the host's Python reads on stdin: the runtime, then ``main(<JSON>)``."""
    payload = json.dumps(
        {
            "source": module_source,
            "filename": module_filename,
            "module_utils": module_utils,
            "argument_spec": argument_spec,
            "params": params,
            "no_log_values": sorted(no_log_values),
            "internal": internal,
        },
        cls=encoder,
    )
    return f"{runtime}\n\nmain({payload!r})\n".encode()


def _module_encoder() -> type[json.JSONEncoder]:
    # What AnsiballZ encodes a legacy-profile module's arguments with.
    try:
        from ansible.module_utils.common.json import Direction, get_module_encoder
    except ImportError:  # ansible-core < 2.19
        from ansible.module_utils.common.json import AnsibleJSONEncoder

        return AnsibleJSONEncoder
    return get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE)


def _is_python(shebang: str) -> bool:
    words = shebang.removeprefix("#!").split()
    return any(Path(word).name.startswith("python") for word in words)


class _Plan(NamedTuple):
    """What run() found for a direct run (consumed by _configure_module)."""

    source: str
    path: str
    argument_spec: dict[str, Any]
    params: dict[str, Any]
    no_log_values: set[str]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = True

    _direct: _Plan | None = None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = {} if task_vars is None else task_vars
        wrap_async = bool(self._task.async_val and not self._connection.has_native_async)
        module_args = None  # the task's own, when AnsiballZ runs the module
        try:
            source, path = self._module_source()
            spec = read_argument_spec(source, path)
        except NotDirect as exc:
            self._not_direct(exc)
        else:
            validated = self._validate(spec)
            if validated.get("failed"):
                return merge_hash(result, validated)
            if self._task.async_val:
                self._not_direct("the task is async")
            elif not self._is_pipelining_enabled("new"):
                self._not_direct("no pipelining")
            else:
                self._direct = _Plan(
                    source, path, spec, validated["params"], validated["no_log_values"]
                )
                module_args = dict(validated["params"])
        try:
            result = merge_hash(
                result,
                self._execute_module(
                    module_args=module_args, task_vars=task_vars, wrap_async=wrap_async
                ),
            )
        finally:
            self._direct = None
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _not_direct(self, why: object) -> None:
        display.vvv(f"{self._task.action}: not run directly: {why}", host=self._host_name())

    def _host_name(self) -> str | None:
        return getattr(self._play_context, "remote_addr", None)

    def _module_source(self) -> tuple[str, str]:
        """(source, path) of the module Ansible would run for this task (as _configure_module
        finds it)."""
        loader = self._shared_loader_obj.module_loader
        for suffix in self._connection.module_implementation_preferences:
            found = loader.find_plugin_with_context(
                self._task.action, suffix, collection_list=self._task.collections
            )
            if found.resolved and found.plugin_resolved_path:
                path = found.plugin_resolved_path
                return Path(path).read_text(encoding="utf-8"), path
        raise NotDirect("the module was not found")

    def _validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The task's arguments completed as AnsibleModule would; a failed result (its wording)
        when they are invalid."""
        args = dict(self._task.args)
        outcome = ArgumentSpecValidator(spec).validate(args)
        params = {**args, **outcome.validated_parameters}
        no_log_values = set(outcome._no_log_values)
        if outcome.errors.errors:
            msg = outcome.errors.msg
            if isinstance(outcome.errors.errors[0], UnsupportedError):
                msg = f"Unsupported parameters for ({self._task.action}) module: {msg}"
            return {
                "failed": True,
                "msg": msg,
                "invocation": {"module_args": remove_values(params, no_log_values)},
            }
        return {"params": params, "no_log_values": no_log_values}

    def _configure_module(self, module_name, module_args, task_vars):
        # _execute_module builds the payload here: with a plan, the direct program instead of
        # the module's AnsiballZ (whose first build in a run costs the controller ~0.4 s of CPU
        # while every other host's worker waits for it). The command line, become and the
        # parsing of the result stay _execute_module's.
        plan, self._direct = self._direct, None
        if plan is None:
            return super()._configure_module(module_name, module_args, task_vars)
        try:
            program = self._program(plan, module_args)
            shebang = self._shebang(plan.source, task_vars)
            if not _is_python(shebang):
                raise NotDirect(f"the interpreter is not Python ({shebang})")
        except NotDirect as exc:
            self._not_direct(exc)
            return super()._configure_module(module_name, module_args, task_vars)
        display.vvv(
            f"{module_name}: running {plan.path} directly (without AnsiballZ)",
            host=self._host_name(),
        )
        try:
            from ansible.executor.module_common import _BuiltModule
        except ImportError:  # ansible-core < 2.19: (style, shebang, data, path)
            return "new", shebang, program, plan.path
        built = _BuiltModule(
            b_module_data=program,
            module_style="new",
            shebang=shebang,
            serialization_profile="legacy",
        )
        return built, plan.path

    def _shebang(self, source: str, task_vars: dict[str, Any]) -> str:
        """The module's shebang line as modify_module makes it, with interpreter discovery
        handled as _configure_module handles it (the fact is then returned with the result by
        _execute_module)."""
        try:
            from ansible.executor.interpreter_discovery import (
                InterpreterDiscoveryRequiredError,
                discover_interpreter,
            )
            from ansible.executor.module_common import _extract_interpreter, _get_shebang
        except ImportError as exc:
            raise NotDirect(f"this Ansible has no {exc.name}") from exc
        interpreter, args = _extract_interpreter(source.encode())
        delegate = self._task.delegate_to
        use_vars = task_vars["ansible_delegated_vars"][delegate] if delegate else task_vars
        remote_is_local = bool(getattr(self._connection, "_remote_is_local", False))
        for _attempt in (1, 2):
            try:
                shebang, _interpreter = _get_shebang(
                    interpreter or "/usr/bin/python",
                    use_vars,
                    self._templar,
                    args,
                    remote_is_local=remote_is_local,
                )
                return shebang
            except InterpreterDiscoveryRequiredError as idre:
                discovered = discover_interpreter(
                    action=self,
                    interpreter_name=idre.interpreter_name,
                    discovery_mode=idre.discovery_mode,
                    task_vars=use_vars,
                )
                self._discovered_interpreter = discovered
                key = f"discovered_interpreter_{idre.interpreter_name}"
                use_vars["ansible_facts"][key] = discovered
                if not delegate or self._task.delegate_facts:
                    task_vars["ansible_facts"][key] = discovered
                    self._discovered_interpreter_key = key
                else:
                    task_vars["ansible_delegated_vars"][delegate]["ansible_facts"][key] = discovered
        raise NotDirect("interpreter discovery did not settle")

    def _program(self, plan: _Plan, module_args: Mapping[str, Any]) -> bytes:
        if _METADATA.search(plan.source):
            raise NotDirect("the module declares METADATA (its own serialization profile)")
        # Ansible's test for a new-style Python module, the only kind the stand-in runs.
        if "basic" not in (name for name, _names in module_util_imports(plan.source)):
            raise NotDirect("the module does not import ansible.module_utils.basic")
        # The directories Ansible's legacy module_utils locator searches (module_common).
        search_path = [p for p in module_utils_loader._get_paths(subdirs=False) if Path(p).is_dir()]
        ansible_dir = Path(ansible.__file__).resolve().parent
        module_utils = collect_module_utils(plan.source, search_path, ansible_dir)
        return build_program(
            RUNTIME.read_text(encoding="utf-8"),
            module_source=plan.source,
            module_filename=Path(plan.path).name,
            module_utils=module_utils,
            argument_spec=json.loads(json.dumps(plan.argument_spec)),
            params=plan.params,
            no_log_values=plan.no_log_values,
            internal={k: module_args.get(k) for k in INTERNAL_ARGS},
            encoder=_module_encoder(),
        )
