"""Run a playbook through ansible-runner and turn its events into per-host results.

This is the only module that talks to ansible-runner, and it imports it inside
``run_playbook`` so that the data types below stay cheap to import (``kvmprep --help``
must not pay for Ansible).

How secrets are kept out of the artifacts (read from ansible-runner 2.4.3's source):

* Without ``suppress_env_files``, ``utils.dump_artifacts`` writes ``extravars``, ``envvars``,
  ``passwords``, ``settings``, ``ssh_key`` and ``cmdline`` as files under
  ``<private_data_dir>/env/``.
* With ``suppress_env_files=True`` nothing is written there, but a dict passed as
  ``extravars=`` is then rendered into the command itself (``-e {"key": value}``, see
  ``RunnerConfig.generate_ansible_command``): visible in ``ps`` and saved verbatim in
  ``<artifact_dir>/<ident>/command``.
* That ``command`` file also records the whole child environment, and for a non-container
  run ansible-runner seeds that environment from ``os.environ.copy()``: ``envvars=`` can add
  or change variables but never remove one (cloud tokens, passwords in the operator's shell).

So kvmprep (1) passes ``suppress_env_files=True``, (2) writes the extra vars itself into
``<private_data_dir>/env/extravars`` (mode 0600 in a 0700 temp dir, deleted after the run),
which ansible-runner turns into ``-e @<path>`` (a path, not the values), (3) builds the
runner with ``interface.init_runner`` (what ``ansible_runner.run`` does) so it can reduce the
prepared environment to an allow-list before the process starts and the ``command`` file is
written, and (4) keeps facts in memory (the default fact cache is a ``fact_cache/`` dir in
the artifacts, with each host's environment).

The ``command`` file still records every variable of the child's environment, and a become
password (``ANSIBLE_BECOME_PASS``) is one. So (5) the variables whose names say they hold a
secret are left out of that environment and handed over in a 0600 file of the private data
dir, which a small launcher reads before it execs ansible-playbook. And (6) what tasks
print (a module's facts include the environment of a local connection) is scrubbed of every
known secret value (those variables, the secret-named extra vars, $ONE_AUTH's content) in each
event before ansible-runner writes it, and in ``stdout`` after the run.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from kvmprep import content, processes, ptyclose
from kvmprep.exitcodes import ExitStatus, KvmprepError

# A failed task's message is the collection's wording (plugins/plugin_utils/task_result.py): the
# action plugin kvmprep.kvm.check says why a host was not evaluated with the same words.
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.task_result import failure_message

# Artifacts of this many runs are kept; older ones are removed by ansible-runner.
# Finished runs kept in the artifact dir. ansible-runner's own rotation deletes the oldest run
# directories even while another kvmprep run is still writing into one of them, so kvmprep
# prunes itself and leaves alone any run that was active in the last hour.
KEEP_ARTIFACTS = 20
ACTIVE_RUN_SECONDS = 3600

# ansible-runner only checks the cancel callback when its pexpect loop wakes up; the default
# (5 s) makes Ctrl-C feel ignored.
_PEXPECT_TIMEOUT_S = 0.5
# Seconds run_playbook waits after the run for its ``meanwhile`` work (pruning, imports).
WHILE_RUNNING_JOIN_S = 30.0

# Without counting hosts (which needs an inventory parse, i.e. another Ansible start-up),
# 20 is the fork count: Ansible never starts more workers than there are hosts anyway.
_DEFAULT_FORKS = "20"

# Defaults for ansible-playbook, each unless the operator set it (environment or ansible.cfg).
_DEFAULTS = {
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
    "ANSIBLE_FORKS": _DEFAULT_FORKS,
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    # ansible-runner sets False when the variable is unset (AWX's choice); kvmprep keeps
    # Ansible's own default, so an unknown or changed host key stops the run.
    "ANSIBLE_HOST_KEY_CHECKING": "True",
}
_DEFAULTS_IN_CFG = {
    "ANSIBLE_PIPELINING": (
        ("defaults", "pipelining"),
        ("connection", "pipelining"),
        ("ssh_connection", "pipelining"),
    ),
    "ANSIBLE_SSH_ARGS": (("ssh_connection", "ssh_args"),),
    "ANSIBLE_FORKS": (("defaults", "forks"),),
    "ANSIBLE_RETRY_FILES_ENABLED": (("defaults", "retry_files_enabled"),),
    "ANSIBLE_HOST_KEY_CHECKING": (("defaults", "host_key_checking"),),
    # collections_paths: the name before ansible-core 2.10, still read.
    "ANSIBLE_COLLECTIONS_PATH": (
        ("defaults", "collections_path"),
        ("defaults", "collections_paths"),
    ),
    "ANSIBLE_INVENTORY_PLUGINS": (("defaults", "inventory_plugins"),),
    "ANSIBLE_INVENTORY_ENABLED": (("inventory", "enable_plugins"),),
}

# Ansible's own [inventory] enable_plugins default (config/base.yml, INVENTORY_ENABLED): kept
# enabled after kvmprep's inventory plugins when the operator chose none.
_INVENTORY_ENABLED_DEFAULT = ("host_list", "script", "auto", "yaml", "ini", "toml")
# Ansible's COLLECTIONS_PATHS default, kept after kvmprep's own directory when the operator chose
# none: the collections installed with ansible-galaxy stay reachable.
_COLLECTIONS_PATH_DEFAULT = os.pathsep.join(
    ("~/.ansible/collections", "/usr/share/ansible/collections")
)

# Variables from the caller's environment that reach ansible-playbook besides ANSIBLE_*:
# what SSH (agent, Kerberos), Python (locale, temp dir) and the terminal need.
_PASSTHROUGH = frozenset(
    {
        "HOME",
        "PATH",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TMPDIR",
        "TZ",
        "SSH_AUTH_SOCK",
        "KRB5CCNAME",
        "NO_COLOR",
        # OpenNebula's CLI conventions: the API endpoint, and the file holding user:password.
        "ONE_XMLRPC",
        "ONE_AUTH",
    }
)

# Ansible's own notices about its working directory, given on the first contact with every
# new host ("Module remote_tmp /root/.ansible/tmp did not exist and was created with a mode of
# 0700..."): not something the roles found, and nothing for the operator to act on.
_NOT_OURS = ("Module remote_tmp ",)

# Environment variables holding a secret (ANSIBLE_BECOME_PASS, ANSIBLE_PRIVATE_KEY_PASSPHRASE...),
# not those naming a file, a prompt or a question (ANSIBLE_VAULT_PASSWORD_FILE, *_ASK_PASS).
# Matched on whole words of the name: not ANSIBLE_BYPASS_..., not kvm_host_libvirt_tcp_auth.
_SECRET_WORDS = r"(^|_)(PASS|PASSWD|PASSWORD|PASSPHRASE|SECRETS?|TOKENS?|CREDENTIALS?)($|_)"
_SECRET_ENV = re.compile(rf"{_SECRET_WORDS}|PRIVATE_KEY$", re.IGNORECASE)
_NOT_SECRET_ENV = re.compile(r"_ASK_|(_FILE|_PATH|_DIR|_PROMPT|_MECHANISM|_CHECKING)$")
# Extra vars whose values are secrets, by name (kvm_host_libvirt_sasl_password,
# one_frontend_auth, ansible_become_password...).
_SECRET_VAR = re.compile(rf"{_SECRET_WORDS}|private_key$|^one_frontend_auth$", re.IGNORECASE)
# Shorter values, and words a setting may well hold, are not scrubbed: replacing "x" or "true"
# everywhere would garble the output and hide nothing.
_MIN_SECRET_CHARS = 4
_NOT_SECRETS = frozenset({"true", "false", "yes", "no", "none", "null"})
REDACTED = "********"

# The result keys of a refused setting: kvmprep's own settings checks, and Ansible's argument
# spec validation (a role's automatic one, or the module).
_INVALID_SETTINGS_KEY = "kvmprep_invalid_settings"
#: The controller-side check of every host's settings (the first play of playbooks/apply.yml
#: and check.yml).
_CONTROLLER_ONLY_ACTIONS = frozenset(("kvm_host_settings",))
_ARGUMENT_SPEC_ACTIONS = frozenset(
    {"validate_argument_spec", "ansible.builtin.validate_argument_spec"}
)

# The change report (``HostState.changes``) by convention, rather than a case per task in
# Python: a task says what it changed in its result's ``kvmprep_changes`` (kvmprep's modules,
# in their own words). A built-in module cannot add a key to its result and mostly cannot say
# what it changed (the user module does not return the groups it added): a
# ``debug: var=kvmprep_changes`` task after it, in the same task file, gives the sentences (the
# judge's, check's words) and speaks for the changed tasks before it in that file. Taken from
# every ok result, changed or not: such a debug task changes nothing itself and is not counted
# as a change. A changed result without the key (a task of another role, a no_log one whose
# result is hidden) is reported by its task's name, so that no change goes unlisted, until a
# debug report of its task file replaces it; except the actions below, which change nothing on
# a host (a changed debug is a notice that notifies a handler).
CHANGES_KEY = "kvmprep_changes"
_NO_CHANGE_ACTIONS = frozenset(
    {
        "debug",
        "set_fact",
        "set_stats",
        "meta",
        "assert",
        "fail",
        "include_tasks",
        "import_tasks",
        "include_role",
        "import_role",
        "add_host",
        "group_by",
        "pause",
        "kvm_host_warn",
        *_CONTROLLER_ONLY_ACTIONS,
    }
)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class HostStatus(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "FAILED"
    UNREACHABLE = "UNREACHABLE"


@dataclass
class HostState:
    """What is known about one host: live counts during the run, Ansible's stats after it."""

    name: str
    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    failed_task: str | None = None
    message: str | None = None
    task_in_progress: str | None = None
    #: What the role warned about on this host (a pending oned restart...), each once, in order.
    warnings: list[str] = field(default_factory=list)
    #: Settings refused before any change (wrong type or value), one line each.
    invalid_settings: list[str] = field(default_factory=list)
    #: Tasks that ran on the controller for every host at once (the settings check, run_once):
    #: Ansible counts them for the first host of the play, which they did not reach.
    controller_ok: int = 0
    #: What the run changed (in check mode: would change) on this host, in order, each once.
    changes: list[Change] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Something ran on (or failed to reach) this host."""
        counts = (self.ok, self.changed, self.failures, self.unreachable, self.skipped)
        return any(counts) or bool(self.ignored or self.rescued or self.failed_task)

    @property
    def status(self) -> HostStatus:
        # Same precedence as ExitStatus.for_hosts: a failure is the more actionable signal.
        if self.failures:
            return HostStatus.FAILED
        if self.unreachable:
            return HostStatus.UNREACHABLE
        if self.changed:
            return HostStatus.CHANGED
        return HostStatus.OK


@dataclass(frozen=True)
class Change:
    """One line of the change report: what changed on a host, in the words of its concern."""

    #: The concern (config, accounts, units, kvm_device, files, restart...), or the action.
    concern: str
    text: str
    #: The task file of a line that is only a task's name: a debug report from that file
    #: replaces it (see CHANGES_KEY).
    named_in: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"concern": self.concern, "text": self.text}


class TaskOutcome(StrEnum):
    """How one task ended on one host, from the event that ended it there."""

    FAILED = "failed"
    UNREACHABLE = "unreachable"
    CHANGED = "changed"
    IGNORED = "failed (ignored)"  # failed, with ignore_errors: the host goes on
    OK = "ok"
    SKIPPED = "skipped"


@dataclass
class TaskRecord:
    """One task as it ran (a handler, an include_tasks and each task it included are tasks too):
    each host's outcome of this task alone, for a log written when the task ends."""

    number: int
    name: str
    handler: bool = False
    #: host -> outcome, from the runner_on_* event that ended the task on the host. A loop's
    #: runner_item_on_* events are not counted: the host's final event sums up its items.
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)
    #: Hosts the task started on and has not ended on yet.
    running: list[str] = field(default_factory=list)
    #: The next task, the next play or the end of the run has started: no more outcomes come.
    ended: bool = False

    def end(self, host: str, outcome: TaskOutcome) -> None:
        self.outcomes[host] = outcome
        if host in self.running:
            self.running.remove(host)


@dataclass
class RunState:
    """The ansible-runner event handler: folds events into per-host state, as ansible-navigator.

    ``playbook_on_stats`` is the final truth; the per-event counts before it only feed the
    progress display (a failure later rescued by a block is not a host failure).
    """

    observer: Callable[[RunState], None] | None = None
    #: Names of the tasks whose result (``res``) is kept per host, e.g. a facts probe.
    capture: frozenset[str] = frozenset()
    hosts: dict[str, HostState] = field(default_factory=dict)
    #: host -> task name -> the task's result, for the tasks named in ``capture``.
    results: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    task_number: int = 0
    task_name: str | None = None
    stats_seen: bool = False
    handler_error: BaseException | None = None
    #: Values replaced by ``REDACTED`` in every event, before ansible-runner writes it.
    secrets: tuple[str, ...] = ()
    #: Every task so far, in the order they started; only the last one may not have ended.
    tasks: list[TaskRecord] = field(default_factory=list)

    def __call__(self, event: MutableMapping[str, Any]) -> bool:
        # An exception escaping here would unwind ansible-runner's loop while ansible-playbook
        # keeps running; record it instead and let run_playbook raise it after the run.
        try:
            if self.secrets:
                for key, value in list(event.items()):
                    event[key] = scrub(value, self.secrets)
            self._handle(event)
            if self.observer is not None:
                self.observer(self)
        except Exception as exc:
            if self.handler_error is None:
                self.handler_error = exc
        return True  # keep every event in the artifact dir

    def host(self, name: str) -> HostState:
        return self.hosts.setdefault(name, HostState(name))

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self._end_task()
            # A meta task (flush_handlers...) acts on the play and reports no outcome per
            # host; the handlers it runs are tasks of their own.
            if _meta(data):
                return
            self.task_number += 1
            self.task_name = _task_name(data)
            # ansible-runner reports a handler's start as a task start with is_conditional.
            handler = kind == "playbook_on_handler_task_start" or bool(data.get("is_conditional"))
            self.tasks.append(TaskRecord(self.task_number, self.task_name, handler=handler))
        elif kind == "playbook_on_play_start":
            self._end_task()
        elif kind == "runner_on_start":
            self.host(data["host"]).task_in_progress = _task_name(data)
            if (task := self._task(data)) is not None and data["host"] not in task.running:
                task.running.append(data["host"])
        elif kind in ("runner_item_on_ok", "runner_item_on_failed"):
            self._warnings(data)
            if kind == "runner_item_on_ok":
                self._changes(data, event)
        elif kind == "runner_on_ok":
            host = self._finish(data)
            self._warnings(data)
            self._capture(data)
            self._changes(data, event)
            changed = bool((data.get("res") or {}).get("changed"))
            self._outcome(data, TaskOutcome.CHANGED if changed else TaskOutcome.OK)
            if _controller_only(data):
                host.controller_ok += 1
                return
            host.ok += 1
            if changed:
                host.changed += 1
        elif kind == "runner_on_failed":
            host = self._finish(data)
            self._warnings(data)
            if data.get("ignore_errors"):
                host.ignored += 1
                self._outcome(data, TaskOutcome.IGNORED)
            else:
                self._outcome(data, TaskOutcome.FAILED)
                host.failures += 1
                host.failed_task = _task_name(data)
                host.message = failure_message(data.get("res") or {})
                host.invalid_settings += invalid_settings(data)
        elif kind == "runner_on_skipped":
            self._finish(data).skipped += 1
            self._outcome(data, TaskOutcome.SKIPPED)
        elif kind == "runner_on_unreachable":
            host = self._finish(data)
            host.unreachable += 1
            self._outcome(data, TaskOutcome.UNREACHABLE)
            host.failed_task = _task_name(data)
            host.message = failure_message(data.get("res") or {})
        elif kind == "playbook_on_stats":
            self._end_task()
            self._apply_stats(data)

    def _task(self, data: Mapping[str, Any]) -> TaskRecord | None:
        """The task a host's event belongs to: the last one started (the linear strategy ends a
        task on every host before it starts the next), never a meta task's result."""
        if not self.tasks or self.tasks[-1].ended or _meta(data):
            return None
        return self.tasks[-1]

    def _outcome(self, data: Mapping[str, Any], outcome: TaskOutcome) -> None:
        if (task := self._task(data)) is not None:
            task.end(data["host"], outcome)

    def _end_task(self) -> None:
        if self.tasks:
            self.tasks[-1].ended = True

    def _warnings(self, data: Mapping[str, Any]) -> None:
        found = (data.get("res") or {}).get("warnings") or []
        if found and data.get("host"):
            seen = self.host(data["host"]).warnings
            seen.extend(
                str(w) for w in found if str(w) not in seen and not str(w).startswith(_NOT_OURS)
            )

    def _changes(self, data: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """Add a result's lines to its host's change report (see CHANGES_KEY)."""
        res = data.get("res") or {}
        if not data.get("host") or not isinstance(res, Mapping):
            return
        if isinstance(res.get("results"), list) and (
            data.get("event_loop") or str(res.get("msg") or "").startswith("All items")
        ):
            return  # a loop's summary: its items were reported one by one
        action = str(data.get("task_action") or "").rsplit(".", 1)[-1]
        # The task's file, without the line: "roles/kvm_host/tasks/oneadmin.yml".
        task_file = str(data.get("task_path") or "").rpartition(":")[0]
        host = self.host(data["host"])
        if CHANGES_KEY in res:
            found = change_lines(res[CHANGES_KEY], default_concern=action)
            if action == "debug":
                host.changes[:] = [c for c in host.changes if c.named_in != task_file]
        elif _changed(res, event) and action not in _NO_CHANGE_ACTIONS:
            # An item's label only when it is a plain name: a mapping may carry file contents.
            label = res.get("_ansible_item_label", res.get("item"))
            shown = isinstance(label, str | int) and not isinstance(label, bool)
            text = _task_name(data) + (f" ({_one_line(label)})" if shown else "")
            found = [Change(action or "task", text, named_in=task_file)]
        else:
            return
        host.changes.extend(c for c in dict.fromkeys(found) if c not in host.changes)

    def _capture(self, data: Mapping[str, Any]) -> None:
        name = _task_name(data)
        if name in self.capture:
            self.results.setdefault(data["host"], {})[name] = data.get("res") or {}

    def _finish(self, data: Mapping[str, Any]) -> HostState:
        host = self.host(data["host"])
        host.task_in_progress = None
        return host

    def _apply_stats(self, data: Mapping[str, Any]) -> None:
        self.stats_seen = True
        columns = {
            "ok": "ok",
            "changed": "changed",
            "failures": "failures",
            "dark": "unreachable",
            "skipped": "skipped",
            "rescued": "rescued",
            "ignored": "ignored",
        }
        names: set[str] = set(data.get("processed") or {})
        for key in columns:
            names.update(data.get(key) or {})
        for name in names:
            host = self.host(name)
            for key, attribute in columns.items():
                setattr(host, attribute, int((data.get(key) or {}).get(name, 0)))
            host.ok = max(0, host.ok - host.controller_ok)
            host.task_in_progress = None


@dataclass(frozen=True)
class RunResult:
    hosts: tuple[HostState, ...]
    artifact_dir: Path
    runner_status: str
    rc: int
    check_mode: bool = False
    interrupted: bool = False
    #: Set when the run produced no host result (syntax error, bad inventory, no host
    #: matched) or ended in an error Ansible did not attribute to a host.
    error: str | None = None
    #: host -> task name -> result of the tasks asked for with ``capture``.
    task_results: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    #: The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), when one did.
    signal_name: str | None = None
    #: Ansible's processes that ignored SIGTERM and were killed after the grace period.
    killed: tuple[int, ...] = ()

    def host(self, name: str) -> HostState:
        return next(h for h in self.hosts if h.name == name)

    @property
    def input_error(self) -> bool:
        """The run failed before any host ran: nothing was changed."""
        return self.error is not None and not self.hosts_processed

    @property
    def hosts_processed(self) -> bool:
        return any(h.ok or h.failures or h.unreachable or h.skipped for h in self.hosts)

    @property
    def partially_changed(self) -> list[str]:
        """Hosts an interruption may have left half-configured."""
        return [h.name for h in self.hosts if h.changed or h.task_in_progress]

    @property
    def invalid_settings(self) -> bool:
        """A setting was refused, and no host changed (so the refusal came before any change)."""
        return any(h.invalid_settings for h in self.hosts) and not any(
            h.changed for h in self.hosts
        )

    @property
    def exit_status(self) -> ExitStatus:
        if self.interrupted:
            return ExitStatus.INTERRUPTED
        if self.input_error or self.invalid_settings:
            return ExitStatus.USAGE
        status = ExitStatus.for_hosts(
            any_failed=any(h.failures for h in self.hosts),
            any_unreachable=any(h.unreachable for h in self.hosts),
        )
        if status is ExitStatus.OK and self.error is not None:
            return ExitStatus.FAILED
        return status


def run_playbook(
    playbook: Path,
    inventories: Sequence[Path],
    *,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    extravars: Mapping[str, Any] | None = None,
    verbosity: int = 0,
    output: TextIO | None = None,
    color: bool = False,
    observer: Callable[[RunState], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    environ: Mapping[str, str] | None = None,
    collections_path: Sequence[Path] | None = None,
    inventory_plugin_path: Sequence[Path] | None = None,
    capture: Sequence[str] = (),
    meanwhile: Callable[[], object] | None = None,
) -> RunResult:
    """Run ``playbook`` against ``inventories`` and return what happened to each host.

    ``output`` receives Ansible's own output (e.g. ``sys.stderr`` with ``-v``); ``None`` keeps
    it quiet (it is still saved in the artifact dir). ``color`` lets Ansible colour it.
    ``observer`` is called with the live ``RunState`` after each event; ``cancel`` is polled
    and, once true, ansible-runner kills ansible-playbook (the run is then ``interrupted``).
    ``collections_path`` is searched first for collections (default: the one holding
    kvmprep's own, ``content.collections_dir()``, whose content the playbooks name by FQCN,
    kvmprep.kvm.*: that copy wins over another kvmprep.kvm the operator installed); the
    results of the tasks named in ``capture`` are returned per host in ``task_results``.
    ``inventory_plugin_path`` (default: kvmprep's own, ``content.inventory_plugin_paths()``,
    for every playbook takes an inventory that may be one of them) holds inventory plugins that
    are enabled for the run. ``meanwhile`` is called in a thread once ansible-playbook starts
    (with the pruning of old artifacts): work the caller needs after the run only.
    """
    from ansible_runner.interface import init_runner

    environ = os.environ if environ is None else environ
    artifact_root = artifact_root_dir(environ)
    try:
        artifact_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KvmprepError(
            f"cannot create the artifact dir {artifact_root}: {exc.strerror}"
        ) from exc
    ident = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{playbook.stem}-{uuid.uuid4().hex[:8]}"
    cmdline = " ".join(flag for flag, wanted in (("--check", check), ("--diff", diff)) if wanted)
    cwd = Path.cwd()
    if inventory_plugin_path is None or collections_path is None:
        from kvmprep import content

        if inventory_plugin_path is None:
            inventory_plugin_path = content.inventory_plugin_paths()
        if collections_path is None:
            collections_path = [content.collections_dir()]
    env = ansible_environment(
        environ,
        collections_path=collections_path,
        inventory_plugin_path=inventory_plugin_path,
        color=color,
        cwd=cwd,
    )
    secret_env = {key: value for key, value in env.items() if is_secret_env(key)}
    env = {key: value for key, value in env.items() if key not in secret_env}
    state = RunState(
        observer=observer,
        capture=frozenset(capture),
        secrets=secret_values(secret_env, extravars or {}, environ.get("ONE_AUTH")),
    )
    stop = _Stop(cancel or (lambda: False))
    private_data_dir = Path(tempfile.mkdtemp(prefix="kvmprep-"))
    try:
        if extravars:
            _write_private(private_data_dir / "env" / "extravars", json.dumps(dict(extravars)))
        launcher = _launcher(private_data_dir, secret_env) if secret_env else None
        while_running = _WhileRunning(lambda: _meanwhile(artifact_root, meanwhile))
        runner = init_runner(
            private_data_dir=str(private_data_dir),
            # Run where the operator is, as ansible-playbook would: ./ansible.cfg and relative
            # paths in ANSIBLE_* variables keep working (the default is the temp dir).
            project_dir=str(cwd),
            artifact_dir=str(artifact_root),
            ident=ident,
            rotate_artifacts=0,
            playbook=str(playbook.resolve()),
            binary=launcher,
            inventory=[str(Path(i).resolve()) for i in inventories],
            limit=limit,
            cmdline=cmdline or None,
            verbosity=verbosity or None,
            quiet=output is None,
            suppress_env_files=True,
            envvars=env,
            settings={"pexpect_timeout": _PEXPECT_TIMEOUT_S},
            # ansible-runner's default "jsonfile" keeps every host's facts (its environment
            # included) in the artifacts; kvmprep needs none after the run.
            fact_cache_type="memory",
            event_handler=state,
            cancel_callback=stop,
            status_handler=while_running,
        )
        _restrict_environment(runner.config, allowed=env, secret=secret_env)
        if launcher:
            # ansible-runner appends the playbook only when it runs ansible-playbook itself.
            runner.config.command.append(str(playbook.resolve()))
        # ansible-runner prints Ansible's output on sys.stdout; stdout is for machine output.
        with (
            contextlib.redirect_stdout(output) if output else contextlib.nullcontext(),
            ptyclose.prompt_close(),
        ):
            runner_status, rc = runner.run()
        if while_running.thread is not None:
            # Done long before the run ends; not cut short by this process's exit.
            while_running.thread.join(WHILE_RUNNING_JOIN_S)
    finally:
        shutil.rmtree(private_data_dir, ignore_errors=True)
    artifact_dir = Path(runner.config.artifact_dir)
    for name in ("stdout", "stderr"):
        _scrub_file(artifact_dir / name, state.secrets)
    interrupted = bool(runner.canceled or runner_status == "canceled")
    # After an interruption (a closed terminal among them) the summary matters more than
    # a progress line that could not be drawn.
    if state.handler_error is not None and not interrupted:
        raise state.handler_error
    return RunResult(
        hosts=tuple(state.hosts.values()),
        artifact_dir=artifact_dir,
        runner_status=runner_status,
        rc=int(rc if rc is not None else -1),
        check_mode=check,
        interrupted=interrupted,
        error=_run_error(state, runner_status, artifact_dir),
        task_results=state.results,
        signal_name=_signal_name(cancel),
        killed=tuple(stop.killed),
    )


class _WhileRunning:
    """ansible-runner's status handler: ``work`` in a thread once the status is ``running``
    (ansible-playbook is being started). Work done before would delay the playbook's start; on
    two cores it overlaps with it."""

    def __init__(self, work: Callable[[], object]) -> None:
        self.work = work
        self.thread: threading.Thread | None = None

    def __call__(self, status: Mapping[str, Any], **_context: Any) -> None:
        if status.get("status") == "running" and self.thread is None:
            self.thread = threading.Thread(
                target=self.work, name="kvmprep-while-running", daemon=True
            )
            self.thread.start()


def _meanwhile(artifact_root: Path, also: Callable[[], object] | None) -> None:
    # A failure is not this run's: the next prune tries again, and what ``also`` imports is
    # imported again (raising where it can be reported) when it is needed.
    with contextlib.suppress(OSError):
        prune_artifacts(artifact_root)
    if also is not None:
        also()


class _Stop:
    """ansible-runner's cancel callback: once ``cancel`` is true, end ansible-playbook and every
    process it started (``processes.end_tree``) before ansible-runner's own SIGKILL, which
    reaches ansible-playbook's process group only."""

    def __init__(self, cancel: Callable[[], bool]) -> None:
        self.cancel = cancel
        self.done = False
        self.killed: list[int] = []

    def __call__(self) -> bool:
        if not self.cancel():
            return False
        if not self.done:
            self.done = True
            for pid in processes.children_named(os.getpid(), "ansible-playbook"):
                self.killed += processes.end_tree(pid)
        return True


def _signal_name(cancel: Callable[[], bool] | None) -> str | None:
    """The signal a ``CancelFlag.is_set`` was set by."""
    flag = getattr(cancel, "__self__", None)
    return getattr(flag, "signal_name", None)


def is_secret_env(name: str) -> bool:
    return bool(_SECRET_ENV.search(name)) and not _NOT_SECRET_ENV.search(name.upper())


def secret_values(
    secret_env: Mapping[str, str], extravars: Mapping[str, Any], one_auth: str | None = None
) -> tuple[str, ...]:
    """Every value to scrub from what the run writes, longest first (a secret may contain
    another)."""
    found = set(secret_env.values())
    found.update(_secret_leaves(extravars, secret=False))
    if one_auth:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found.add(Path(one_auth).expanduser().read_text(encoding="utf-8").strip())
    # user:password: a task may print the password alone.
    found.update(value.partition(":")[2] for value in list(found) if ":" in value)
    kept = (v for v in found if len(v) >= _MIN_SECRET_CHARS and v.lower() not in _NOT_SECRETS)
    return tuple(sorted(kept, key=len, reverse=True))


def _secret_leaves(data: Any, *, secret: bool) -> Iterator[str]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _secret_leaves(value, secret=secret or bool(_SECRET_VAR.search(str(key))))
    elif isinstance(data, list):
        for item in data:
            yield from _secret_leaves(item, secret=secret)
    elif secret and isinstance(data, str | int | float) and not isinstance(data, bool):
        yield str(data)


def scrub(data: Any, secrets: Iterable[str]) -> Any:
    """``data`` (JSON-like) with every occurrence of each secret replaced by ``REDACTED``."""
    secrets = tuple(secrets)
    if isinstance(data, str):
        for secret in secrets:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data
    if isinstance(data, Mapping):
        return {scrub(key, secrets): scrub(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [scrub(item, secrets) for item in data]
    return data


def _scrub_file(path: Path, secrets: Sequence[str]) -> None:
    if not secrets:
        return
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return
    cleaned = scrub(text, secrets)
    if cleaned != text:
        path.write_text(cleaned, encoding="utf-8", errors="surrogateescape")


def _launcher(private_data_dir: Path, secret_env: Mapping[str, str]) -> str:
    """An executable that puts ``secret_env`` into its environment and becomes ansible-playbook:
    ansible-runner records the launcher's environment, which then holds none of them."""
    secrets = private_data_dir / "env" / "secret-env"
    _write_private(secrets, json.dumps(dict(secret_env)))
    script = private_data_dir / "ansible-playbook-launcher"
    _write_private(
        script,
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(secrets)!r}, encoding='utf-8') as stream:\n"
        "    os.environ.update(json.load(stream))\n"
        "os.execvp('ansible-playbook', ['ansible-playbook', *sys.argv[1:]])\n",
    )
    script.chmod(0o700)
    return str(script)


def prune_artifacts(
    root: Path,
    *,
    keep: int = KEEP_ARTIFACTS,
    active_seconds: float = ACTIVE_RUN_SECONDS,
    now: float | None = None,
) -> list[Path]:
    """Remove run directories beyond the newest ``keep``, except runs that may still be going
    (anything in them written less than ``active_seconds`` ago). Returns what was removed."""
    now = time.time() if now is None else now

    def last_write(run: Path) -> float:
        stamps = [run.stat().st_mtime]
        stamps += [p.stat().st_mtime for p in run.iterdir()]
        events = run / "job_events"
        if events.is_dir():
            stamps.append(events.stat().st_mtime)
        return max(stamps)

    runs = []
    for run in root.iterdir() if root.is_dir() else ():
        try:
            if run.is_dir() and not run.is_symlink():
                runs.append((last_write(run), run))
        except OSError:  # removed by a concurrent prune
            continue
    runs.sort(reverse=True)
    removed = []
    for written, run in runs[keep:]:
        if now - written >= active_seconds:
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run)
    return removed


def artifact_root_dir(environ: Mapping[str, str]) -> Path:
    """Where run artifacts are kept: ``$KVMPREP_ARTIFACT_DIR`` or the XDG state dir."""
    if override := environ.get("KVMPREP_ARTIFACT_DIR"):
        return Path(override).expanduser()
    state_home = environ.get("XDG_STATE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if not Path(state_home).is_absolute():
        state_home = str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state_home) / "kvmprep" / "runs"


def ansible_environment(
    environ: Mapping[str, str],
    *,
    collections_path: Sequence[Path] = (),
    inventory_plugin_path: Sequence[Path] = (),
    color: bool = False,
    cwd: Path | None = None,
) -> dict[str, str]:
    """The environment of ansible-playbook: an allow-list of the caller's plus kvmprep's defaults.

    A default never overrides what the operator chose, in the environment or in the
    ansible.cfg Ansible will read (an environment variable would beat that file). The
    collections path is prepended so kvmprep's collection wins while the operator's collections
    stay reachable (Ansible's default places when nothing was chosen). The inventory
    plugins of ``inventory_plugin_path`` are enabled first, before the operator's choice of
    enabled plugins (or Ansible's default list), which stays in effect.
    """
    cwd = Path.cwd() if cwd is None else cwd
    env = {
        key: value
        for key, value in environ.items()
        if key.startswith(("ANSIBLE_", "LC_")) or key in _PASSTHROUGH
    }
    # Use the ansible-playbook installed next to this interpreter even when the venv is not
    # activated (pipx, /opt/kvmprep/bin/kvmprep).
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join(p for p in (scripts, env.get("PATH", os.defpath)) if p)
    # A value from ansible.cfg is repeated in the environment, where it is needed: an
    # ANSIBLE_* variable beats the file, and ansible-runner would otherwise force its own
    # ANSIBLE_HOST_KEY_CHECKING=False over it.
    chosen = _ansible_cfg_settings(_ansible_cfg_path(env, cwd))
    for key, value in _DEFAULTS.items():
        env.setdefault(key, chosen.get(key, value))
    # kvmprep prints its own log from ansible-runner's events, which ansible-runner takes from
    # what the stdout callback displays: one chosen for ansible-playbook (the environment's or
    # ansible.cfg's json prints nothing per task) left check with no facts for any host
    # ("the facts probe did not run", measured). Not the operator's to choose here.
    env["ANSIBLE_STDOUT_CALLBACK"] = "default"
    for key, ours, default in (
        ("ANSIBLE_COLLECTIONS_PATH", collections_path, _COLLECTIONS_PATH_DEFAULT),
        ("ANSIBLE_INVENTORY_PLUGINS", inventory_plugin_path, ""),
    ):
        if ours:
            theirs = env.get(key) or chosen.get(key) or default
            env[key] = os.pathsep.join(p for p in (*map(str, ours), theirs) if p)
    if names := inventory_plugin_names(inventory_plugin_path):
        # Inventory plugins are used only when enabled. Ours come first: a file named for one
        # of them is then parsed by it, whatever its plugin: key names (the collection's FQCN
        # included), and the auto plugin does not first try, and warn about, a collection
        # that is not installed. Other files are not theirs (verify_file), nothing changes.
        theirs = env.get("ANSIBLE_INVENTORY_ENABLED") or chosen.get("ANSIBLE_INVENTORY_ENABLED")
        enabled = (
            [n.strip() for n in theirs.split(",") if n.strip()]
            if theirs
            else list(_INVENTORY_ENABLED_DEFAULT)
        )
        env["ANSIBLE_INVENTORY_ENABLED"] = ",".join(
            [*names, *(n for n in enabled if n not in names)]
        )
    # ansible-playbook runs on a pty, so it would colour its output (and the saved stdout)
    # even when nobody sees it on a terminal.
    if not color or environ.get("NO_COLOR"):
        env.setdefault("ANSIBLE_NOCOLOR", "True")
    return env


def inventory_plugin_names(paths: Iterable[Path]) -> list[str]:
    """The inventory plugins of those directories, by the name Ansible gives a plugin found on
    ANSIBLE_INVENTORY_PLUGINS (its file name)."""
    names: list[str] = []
    for directory in paths:
        for path in sorted(Path(directory).glob("*.py")):
            if not path.name.startswith("_") and path.stem not in names:
                names.append(path.stem)
    return names


def _ansible_cfg_settings(path: Path | None) -> dict[str, str]:
    """The values an ansible.cfg gives to kvmprep's defaults."""
    if path is None:
        return {}
    # Parsed as Ansible parses it (inline comments after ';', no interpolation).
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, inline_comment_prefixes=(";",)
    )
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}  # Ansible reports a broken ansible.cfg itself
    found = {}
    for key, options in _DEFAULTS_IN_CFG.items():
        for section, option in options:
            if parser.has_option(section, option):
                found[key] = parser.get(section, option)
    for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_INVENTORY_PLUGINS"):
        if key in found:
            # Relative entries are relative to the file in ansible.cfg, not the environment.
            found[key] = os.pathsep.join(
                str(path.parent / Path(entry).expanduser())
                for entry in found[key].split(os.pathsep)
                if entry
            )
    return found


def _ansible_cfg_path(env: Mapping[str, str], cwd: Path) -> Path | None:
    """The ansible.cfg Ansible will read: ANSIBLE_CONFIG, ./ansible.cfg, ~/.ansible.cfg, /etc."""
    candidates = []
    if configured := env.get("ANSIBLE_CONFIG"):
        path = cwd / Path(configured).expanduser()
        candidates.append(path / "ansible.cfg" if path.is_dir() else path)
    with contextlib.suppress(OSError):
        # Ansible ignores ./ansible.cfg in a world-writable directory.
        if not cwd.stat().st_mode & 0o002:
            candidates.append(cwd / "ansible.cfg")
    if home := env.get("HOME"):
        candidates.append(Path(home) / ".ansible.cfg")
    candidates.append(Path("/etc/ansible/ansible.cfg"))
    return next((c for c in candidates if c.is_file()), None)


class CancelFlag(threading.Event):
    """Set by a signal; remembers which one, for the summary."""

    signal_name: str | None = None

    def set_by(self, signum: int) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.set()


#: A closed terminal or SSH session (SIGHUP) is an interruption like Ctrl-C or SIGTERM.
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[CancelFlag]:
    """Turn SIGINT/SIGTERM/SIGHUP into a flag for ``run_playbook(cancel=flag.is_set)``.

    ansible-playbook runs in its own session on a pty, so Ctrl-C does not reach it (nor does
    the hang-up of the operator's terminal): without this it would carry on changing hosts
    after kvmprep died, and kvmprep's temporary files (the extra vars) would stay behind.
    """
    flag = CancelFlag()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in CANCEL_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, _frame: flag.set_by(signum))
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def change_lines(value: Any, *, default_concern: str) -> list[Change]:
    """A result's ``kvmprep_changes`` as report lines. Accepted: a list of sentences or of
    ``{concern, text}`` mappings, or a mapping of concern to its sentences (what a debug task
    can build in YAML)."""
    if isinstance(value, Mapping) and not ("text" in value and "concern" in value):
        return [
            change
            for concern, texts in value.items()
            for change in change_lines(texts, default_concern=str(concern))
        ]
    if isinstance(value, str | Mapping):
        value = [value]
    if not isinstance(value, list):
        return []
    found = []
    for item in value:
        if isinstance(item, Mapping) and item.get("text"):
            concern = str(item.get("concern") or default_concern)
            found.append(Change(concern, _one_line(item["text"])))
        elif isinstance(item, str) and item.strip():
            found.append(Change(default_concern, _one_line(item)))
    return found


def _changed(res: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether a result is a change. A no_log result is only ``censored``, without its
    ``changed``: Ansible's own line for it ("changed: [host]") still says."""
    if "censored" in res and "changed" not in res:
        return _ANSI_ESCAPE.sub("", str(event.get("stdout") or "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _controller_only(data: Mapping[str, Any]) -> bool:
    """A task that judged every host's settings on the controller, not this host."""
    return str(data.get("task_action") or "").rsplit(".", 1)[-1] in _CONTROLLER_ONLY_ACTIONS


def _meta(data: Mapping[str, Any]) -> bool:
    return str(data.get("task_action") or "").rsplit(".", 1)[-1] == "meta"


def invalid_settings(data: Mapping[str, Any]) -> list[str]:
    """The one-line messages of a failed task that refused settings, else []."""
    res = data.get("res") or {}
    listed = res.get(_INVALID_SETTINGS_KEY)
    if isinstance(listed, list) and listed:
        return [" ".join(str(line).split()) for line in listed]
    action = str(data.get("task_action") or "")
    if action in _ARGUMENT_SPEC_ACTIONS or "argument_errors" in res:
        errors = res.get("argument_errors")
        lines = errors if isinstance(errors, list) and errors else [failure_message(res)]
        return [" ".join(str(line).split()) for line in lines]
    return []


def _task_name(data: Mapping[str, Any]) -> str:
    return str(data.get("task") or data.get("name") or data.get("task_action") or "?").strip()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)


def _restrict_environment(
    config: Any, *, allowed: Mapping[str, str], secret: Mapping[str, str] | None = None
) -> None:
    """Drop from the prepared child environment what ansible-runner copied from ours.

    Keeps what it added or changed itself (its callback plugin, AWX_ISOLATED_DATA_DIR, ...),
    never a secret (the launcher sets those).
    """
    config.env = {
        key: value
        for key, value in config.env.items()
        if key not in (secret or {}) and (key in allowed or os.environ.get(key) != value)
    }


def _run_error(state: RunState, runner_status: str, artifact_dir: Path) -> str | None:
    """Explain a run that ended without an answer per host, from Ansible's own output."""
    if runner_status == "canceled":
        return None
    lines = _output_lines(artifact_dir / "stdout")
    if not state.stats_seen:
        return _error_excerpt(lines) or f"ansible-playbook ended with status {runner_status}"
    if not any(h.ok or h.failures or h.unreachable or h.skipped for h in state.hosts.values()):
        warnings = [line for line in lines if line.startswith("[WARNING]")]
        return "\n".join(["no host matched the play (check the inventory and --limit)", *warnings])
    if runner_status != "successful" and not any(
        h.failures or h.unreachable for h in state.hosts.values()
    ):
        return _error_excerpt(lines) or f"ansible-playbook ended with status {runner_status}"
    return None


def _output_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in _ANSI_ESCAPE.sub("", text).splitlines() if line.strip()]


def _error_excerpt(lines: Sequence[str], limit: int = 12) -> str:
    """The last error Ansible printed and what follows it, or the tail of the output."""
    # Ansible's own traceback (an "Unexpected Exception") is noise for the operator: the error
    # line above it says what went wrong, the artifacts keep the rest.
    lines = _output_without_tracebacks(lines)
    starts = [i for i, line in enumerate(lines) if line.startswith(("[ERROR]", "ERROR!"))]
    excerpt = lines[starts[-1] :] if starts else lines[-6:]
    return "\n".join(excerpt[:limit])


def _output_without_tracebacks(lines: Sequence[str]) -> list[str]:
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            skipping = True
        elif skipping and not line.startswith((" ", "\t")):
            # The exception's own line ends the traceback; the next [ERROR] starts real output.
            skipping = not line.startswith(("[ERROR]", "ERROR!", "[WARNING]"))
            continue
        if not skipping:
            kept.append(line)
    return kept
