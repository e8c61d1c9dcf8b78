"""Run an Ansible module's source on the target without AnsiballZ (kvm_host_probe's fast path).

Why this exists: under AnsiballZ every module call imports ansible.module_utils.basic from a
zip, and zipimport cannot cache bytecode, so about 120 files are compiled on every call: about
0.3 s of the host's CPU, more than kvm_host_probe's own work, paid once per host by every
`kvmprep check` and `kvmprep apply`. The kvm_host_probe action plugin (on the controller)
validates the task's arguments with the module's ARGUMENT_SPEC, then sends this file, the
module's source and the sources of the module_utils it imports as one program over a pipelined
connection (stdin, never a command line), ending in one call: ``main(<JSON text>)``.

What is here stands in for ansible.module_utils.basic: AnsibleModule with what kvm_host_probe
and kvm_host_oneadmin use (params, check_mode, run_command, get_bin_path, exit_json,
fail_json, warn), with AnsibleModule's semantics for those uses, read from ansible-core 2.19's
basic.py: the locale check, the invocation line in syslog, no_log values masked in the result,
``invocation.module_args``, exit codes 0 and 1. Anything else a module asks of it fails the
task with a message saying so, never silently.

Runs on the target's python3 (3.8 or later), standard library only. It writes nothing on the
host but AnsibleModule's "Invoked with" line to syslog (no temp dir, unlike AnsiballZ).
"""

import sys

# First, as AnsiballZ does: a program read from stdin has "" (the working directory, e.g. the
# SSH user's home when become is used) first on sys.path; nothing may be imported from there.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]

import json
import locale
import os
import re
import selectors
import shlex
import stat
import subprocess
import tempfile
import traceback
import types

try:
    import syslog
except ImportError:  # not every Python is built with it; AnsibleModule then logs nothing either
    syslog = None

# Set by main() from the controller's payload.
_PAYLOAD = {}
# A result's values equal to a no_log value become this, substrings become "********".
NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
PASSWD_ARG_RE = re.compile(r"^[-]{0,2}pass[-]?(word|wd)?")
SBIN_PATHS = ["/sbin", "/usr/sbin", "/usr/local/sbin"]
# Python's decoders take "surrogateescape" where Ansible's converters name a composed handler.
_COMPOSED_ERRORS = ("surrogate_or_strict", "surrogate_or_replace", "surrogate_then_replace")


def remove_values(value, no_log_strings):
    """ansible.module_utils.common.parameters.remove_values for JSON-like data: a string equal
    to a no_log value is replaced by the placeholder, one containing it has it starred out."""
    secrets = sorted((s for s in no_log_strings if s), key=len, reverse=True)
    if not secrets:
        return value

    def clean(item):
        if isinstance(item, str):
            if item in secrets:
                return NO_LOG_PLACEHOLDER
            for secret in secrets:
                item = item.replace(secret, "*" * 8)
            return item
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, (int, float)):
            text = str(item)
            return NO_LOG_PLACEHOLDER if any(s in text for s in secrets) else item
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        if isinstance(item, (list, tuple, set, frozenset)):
            return [clean(v) for v in item]
        raise TypeError("Value of unknown type: %s, %s" % (type(item), item))

    return clean(value)


def is_executable(path):
    # ansible.module_utils.common.file.is_executable: any execute bit, not os.access.
    return bool((stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) & os.stat(path).st_mode)


def get_bin_path(arg, opt_dirs=None):
    """ansible.module_utils.common.process.get_bin_path: opt_dirs (existing), then PATH, then
    the sbin directories not on PATH; ValueError when not found."""
    paths = [d for d in (opt_dirs or []) if d is not None and os.path.exists(d)]
    paths += os.environ.get("PATH", "").split(os.pathsep)
    paths += [p for p in SBIN_PATHS if p not in paths and os.path.exists(p)]
    for d in paths:
        if not d:
            continue
        path = os.path.join(d, arg)
        if os.path.exists(path) and not os.path.isdir(path) and is_executable(path):
            return path
    raise ValueError(
        'Failed to find required executable "%s" in paths: %s' % (arg, os.pathsep.join(paths))
    )


def _to_bytes(value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _to_text(value, encoding="utf-8", errors="surrogate_or_strict"):
    if not isinstance(value, bytes):
        return str(value)
    return value.decode(encoding, "surrogateescape" if errors in _COMPOSED_ERRORS else errors)


class AnsibleModule(object):
    """The part of ansible.module_utils.basic.AnsibleModule the fast path's modules use."""

    def __init__(
        self,
        argument_spec,
        bypass_checks=False,
        no_log=False,
        mutually_exclusive=None,
        required_together=None,
        required_one_of=None,
        add_file_common_args=False,
        supports_check_mode=False,
        required_if=None,
        required_by=None,
    ):
        internal = _PAYLOAD.get("internal", {})
        self.argument_spec = argument_spec
        self.supports_check_mode = supports_check_mode
        self.no_log = bool(no_log or internal.get("_ansible_no_log"))
        self.check_mode = bool(internal.get("_ansible_check_mode"))
        self.run_command_environ_update = {}
        self._name = internal.get("_ansible_module_name") or "module"
        self._warnings = []
        self._clean = None
        self.no_log_values = set(_PAYLOAD.get("no_log_values", ()))
        self.params = dict(_PAYLOAD.get("params", {}))
        self._check_locale()
        unsupported = [
            name
            for name, value in (
                ("mutually_exclusive", mutually_exclusive),
                ("required_together", required_together),
                ("required_one_of", required_one_of),
                ("add_file_common_args", add_file_common_args),
                ("required_if", required_if),
                ("required_by", required_by),
            )
            if value
        ]
        if unsupported:
            self.fail_json(
                msg="the direct (no AnsiballZ) run does not implement AnsibleModule(%s=...)"
                % ", ".join(unsupported)
            )
        # The controller validated the arguments against the spec it read from the module's
        # file; a module built with another spec would get parameters nobody checked.
        if json.loads(json.dumps(argument_spec)) != _PAYLOAD.get("argument_spec"):
            self.fail_json(
                msg="the module's argument_spec is not its ARGUMENT_SPEC, which the controller "
                "validated the arguments with"
            )
        if self.check_mode and not supports_check_mode:
            self.exit_json(
                skipped=True, msg="remote module (%s) does not support check mode" % self._name
            )
        if not self.no_log:
            self._log_invocation()
        self._set_cwd()

    # --- what basic.py does on its own --------------------------------------------------------

    def _check_locale(self):
        # An invalid or unavailable locale in the environment is replaced by a known one, for
        # this process and the commands it runs.
        try:
            locale.setlocale(locale.LC_ALL, "")
        except locale.Error:
            best = self._best_parsable_locale()
            locale.setlocale(locale.LC_ALL, best)
            os.environ["LANG"] = best
            os.environ["LC_ALL"] = best
            os.environ["LC_MESSAGES"] = best

    def _best_parsable_locale(self):
        # ansible.module_utils.common.locale.get_best_parsable_locale
        preferences = ["C.utf8", "C.UTF-8", "en_US.utf8", "en_US.UTF-8", "C", "POSIX"]
        tool = self.get_bin_path("locale")
        if not tool:
            return "C"
        rc, out, _err = self.run_command([tool, "-a"])
        available = out.strip().splitlines() if rc == 0 and out else []
        return next((p for p in preferences if p in available), "C")

    def _log_invocation(self):
        internal = _PAYLOAD.get("internal", {})
        if syslog is None:
            return
        args = []
        for name, value in self.params.items():
            if self.argument_spec.get(name, {}).get("no_log"):
                value = "NOT_LOGGING_PARAMETER"
            args.append("%s=%s" % (name, value))
        msg = "Invoked with %s" % " ".join(args) if args else "Invoked"
        if internal.get("_ansible_target_log_info"):
            msg = "%s %s" % (internal["_ansible_target_log_info"], msg)
        facility = internal.get("_ansible_syslog_facility") or "LOG_USER"
        try:
            syslog.openlog("ansible-%s" % self._name, 0, getattr(syslog, facility, syslog.LOG_USER))
            syslog.syslog(syslog.LOG_INFO, remove_values(msg, self.no_log_values))
        except (TypeError, ValueError) as exc:
            self.fail_json(
                msg="Failed to log to syslog (%s). To proceed anyway, disable syslog logging by "
                "setting no_target_syslog to True in your Ansible config." % exc
            )

    def _set_cwd(self):
        # A working directory the become user cannot read (sudo from a private home): move to a
        # neutral one. Unlike AnsibleModule, no module tmpdir is created for it (nothing here
        # writes); $HOME and the system temp dir are tried as it tries them.
        try:
            if os.access(os.getcwd(), os.F_OK | os.R_OK):
                return
        except OSError:
            pass
        for cwd in (os.path.expandvars("$HOME"), tempfile.gettempdir()):
            try:
                if os.access(cwd, os.F_OK | os.R_OK):
                    os.chdir(cwd)
                    return
            except OSError:
                pass

    # --- the API the modules use ----------------------------------------------------------------

    def warn(self, warning):
        self._warnings.append(str(warning))

    def get_bin_path(self, arg, required=False, opt_dirs=None):
        try:
            return get_bin_path(arg, opt_dirs=opt_dirs)
        except ValueError as exc:
            if required:
                self.fail_json(msg=str(exc))
        return None

    def _clean_args(self, args):
        if self._clean is None:
            if isinstance(args, (str, bytes)):
                args = shlex.split(_to_text(args))
            clean = []
            is_passwd = False
            for arg in (_to_text(a) for a in args):
                if is_passwd:
                    is_passwd = False
                    clean.append("*" * 8)
                    continue
                if PASSWD_ARG_RE.match(arg):
                    sep = arg.find("=")
                    if sep > -1:
                        clean.append("%s=********" % arg[:sep])
                        continue
                    is_passwd = True
                clean.append(remove_values(arg, self.no_log_values))
            self._clean = " ".join(shlex.quote(arg) for arg in clean)
        return self._clean

    def run_command(
        self,
        args,
        check_rc=False,
        close_fds=True,
        data=None,
        binary_data=False,
        path_prefix=None,
        cwd=None,
        environ_update=None,
        encoding="utf-8",
        errors="surrogate_or_strict",
        expand_user_and_vars=True,
        ignore_invalid_cwd=True,
        handle_exceptions=True,
    ):
        """AnsibleModule.run_command without a shell (use_unsafe_shell, executable, umask,
        prompt_regex, pass_fds and callbacks are not implemented: a call with one is a
        TypeError, which fails the task)."""
        self._clean = None
        if not isinstance(args, (list, bytes, str)):
            self.fail_json(
                rc=257, cmd=args, msg="Argument 'args' to run_command must be list or string"
            )
        if isinstance(args, (bytes, str)):
            args = shlex.split(_to_text(args))
        if expand_user_and_vars:
            args = [
                os.path.expanduser(os.path.expandvars(_to_text(a))) for a in args if a is not None
            ]
        args = [_to_bytes(a) for a in args if a is not None]

        env = os.environ.copy()
        env.update(self.run_command_environ_update or {})
        env.update(environ_update or {})
        if path_prefix:
            env["PATH"] = "%s:%s" % (path_prefix, env["PATH"]) if env.get("PATH") else path_prefix
        kwargs = {
            "close_fds": close_fds,
            "stdin": subprocess.PIPE if data else None,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "env": env,
        }
        if cwd:
            cwd = os.path.abspath(os.path.expanduser(cwd))
            if os.path.isdir(cwd):
                kwargs["cwd"] = cwd
            elif not ignore_invalid_cwd:
                self.fail_json(msg="Provided cwd is not a valid directory: %s" % cwd)
        try:
            proc = subprocess.Popen(args, **kwargs)
            stdout, stderr = self._communicate(proc, data, binary_data)
            rc = proc.returncode
        except OSError as exc:
            if not handle_exceptions:
                raise
            self.fail_json(
                rc=exc.errno,
                stdout="",
                stderr="",
                msg="Error executing command.",
                cmd=self._clean_args(args),
                exception=exc,
            )
        except Exception as exc:
            if not handle_exceptions:
                raise
            self.fail_json(
                rc=257,
                stdout="",
                stderr="",
                msg="Error executing command.",
                cmd=self._clean_args(args),
                exception=exc,
            )
        if rc != 0 and check_rc:
            msg = remove_values(_to_text(stderr).rstrip(), self.no_log_values)
            self.fail_json(cmd=self._clean_args(args), rc=rc, stdout=stdout, stderr=stderr, msg=msg)
        if encoding is None:
            return rc, stdout, stderr
        return rc, _to_text(stdout, encoding, errors), _to_text(stderr, encoding, errors)

    @staticmethod
    def _communicate(proc, data, binary_data):
        # AnsibleModule's loop rather than communicate(): it stops once the command has exited
        # and its pipes are quiet, even if a process it started keeps them open.
        selector = (
            selectors.PollSelector()
            if hasattr(selectors, "PollSelector")
            else selectors.SelectSelector()
        )
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        if data:
            if not binary_data:
                data += "\n"
            proc.stdin.write(_to_bytes(data))
            proc.stdin.close()
        stdout, stderr = b"", b""
        while True:
            events = selector.select(1)
            for key, _event in events:
                chunk = key.fileobj.read(32768)
                if chunk is None:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj == proc.stdout:
                    stdout += chunk
                else:
                    stderr += chunk
            if (not events or not selector.get_map()) and proc.poll() is not None:
                break
            if not selector.get_map() and proc.poll() is None:
                proc.wait()
                break
        proc.stdout.close()
        proc.stderr.close()
        selector.close()
        return stdout, stderr

    def exit_json(self, **kwargs):
        self._return(kwargs, 0)

    def fail_json(self, msg, exception=None, **kwargs):
        kwargs.update(failed=True, msg=str(msg))
        if isinstance(exception, BaseException):
            kwargs["exception"] = "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            )
        elif isinstance(exception, str):
            kwargs["exception"] = exception
        self._return(kwargs, 1)

    def _return(self, result, status):
        result.setdefault("invocation", {"module_args": self.params})
        if self._warnings:
            result["warnings"] = list(self._warnings)
        # As AnsibleModule: booleans and None at the top are kept, the rest is masked.
        kept = {k: v for k, v in result.items() if v is None or isinstance(v, bool)}
        result = remove_values(result, self.no_log_values)
        result.update(kept)
        _emit(result, status)


def _emit(result, status):
    text = json.dumps(result)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    sys.exit(status)


def _install(module_utils):
    """ansible, ansible.module_utils, its basic (the stand-in) and the module_utils the module
    imports, as modules; the module_utils' sources run in the order given (dependencies
    first)."""
    package = types.ModuleType("ansible")
    package.__path__ = []
    utils = types.ModuleType("ansible.module_utils")
    utils.__path__ = []
    package.module_utils = utils
    basic = types.ModuleType("ansible.module_utils.basic")
    basic.AnsibleModule = AnsibleModule
    utils.basic = basic
    sys.modules.update(
        {"ansible": package, "ansible.module_utils": utils, "ansible.module_utils.basic": basic}
    )
    loaded = []
    for name, filename, source in module_utils:
        module = types.ModuleType("ansible.module_utils." + name)
        sys.modules[module.__name__] = module
        setattr(utils, name, module)
        loaded.append((module, filename, source))
    for module, filename, source in loaded:
        exec(compile(source, filename, "exec"), module.__dict__)


def main(payload_text):
    """Run the payload's module as __main__; print its one JSON result and exit 0 or 1."""
    try:
        os.getcwd()
    except OSError:
        try:
            os.chdir(os.path.expanduser("~"))
        except OSError:
            os.chdir("/")
    try:
        _PAYLOAD.update(json.loads(payload_text))
        _install(_PAYLOAD["module_utils"])
        module = types.ModuleType("__main__")
        # Keep this program's own __main__ alive while the module's replaces it.
        _PAYLOAD["runtime"] = sys.modules.get("__main__")
        sys.modules["__main__"] = module
        exec(compile(_PAYLOAD["source"], _PAYLOAD["filename"], "exec"), module.__dict__)
        raise RuntimeError("New-style module did not handle its own exit.")
    except Exception as exc:
        _emit(
            {
                "failed": True,
                "msg": "Module failed: %s: %s" % (type(exc).__name__, exc),
                "exception": traceback.format_exc(),
            },
            1,
        )
