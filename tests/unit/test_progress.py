"""The progress display outside a terminal: a log with one line per task when it ends."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from conftest import FIXTURES

from kvmprep.progress import NAMED_HOSTS, Progress
from kvmprep.runner import RunState

# Recorded from a real run of fixtures/events/drift_repair.yml (re-record with record.py there).
EVENTS = FIXTURES / "events" / "events.jsonl"


def _log(*runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Feed each run's events through one progress display on a pipe, as the CLI does."""
    stream = io.StringIO()
    progress = Progress.for_stream(stream, environ={})
    for events in runs:
        state = RunState(observer=progress)
        for event in events:
            state(dict(event))
        assert state.handler_error is None
    progress.close()
    out = stream.getvalue()
    # Not a terminal: no escape codes, no line rewritten in place.
    assert "\x1b" not in out
    assert "\r" not in out
    return out.splitlines()


def _task(name: str, *outcomes: tuple[str, str]) -> list[dict[str, Any]]:
    """The events of one task: (host, runner event kind) per host."""
    events: list[dict[str, Any]] = [
        {"event": "playbook_on_task_start", "event_data": {"task": name}}
    ]
    for host, _kind in outcomes:
        events.append({"event": "runner_on_start", "event_data": {"host": host, "task": name}})
    for host, kind in outcomes:
        res = {"changed": kind == "changed"}
        event = "runner_on_ok" if kind in ("ok", "changed") else f"runner_on_{kind}"
        events.append({"event": event, "event_data": {"host": host, "task": name, "res": res}})
    return events


_STATS: dict[str, Any] = {"event": "playbook_on_stats", "event_data": {}}


def test_recorded_drift_repair_logs_each_task_when_it_ends_with_its_own_outcome() -> None:
    events = [json.loads(line) for line in EVENTS.read_text(encoding="utf-8").splitlines()]
    assert _log(events) == [
        "[task 1] Reach every host  ·  unreachable: ceo-a3; ok: ceo-a1, ceo-a2",
        "[task 2] Change the first host only  ·  changed: ceo-a1; ok: ceo-a2",
        "(task 3 skipped on every host)",
        "[task 4] Read a file that is not there  ·  failed (ignored): ceo-a1, ceo-a2",
        # A loop of three items on two hosts: two outcomes, from each host's final event.
        "[task 5] Add oneadmin to the groups  ·  changed: ceo-a2; ok: ceo-a1",
        "[task 6] Include the extra steps  ·  ok: ceo-a1, ceo-a2",
        "[task 7] Report from the included file  ·  ok: ceo-a1, ceo-a2",
        # The meta task that flushed the handlers is not a task of the log; its handler is.
        "[task 8] Restart libvirt (handler)  ·  changed: ceo-a1",
        # The rollback that no host needed: skipped everywhere, never "changed".
        "(tasks 9-11 skipped on every host)",
        "[task 12] Fail the second host  ·  failed: ceo-a2; skipped: ceo-a1",
        "[task 13] Roll back the second host  ·  changed: ceo-a2",
        "(tasks 14-15 skipped on every host)",
        "[task 16] Report at the end  ·  ok: ceo-a1, ceo-a2",
    ]


def test_a_task_is_logged_when_the_next_one_starts_not_before() -> None:
    stream = io.StringIO()
    progress = Progress.for_stream(stream, environ={})
    progress.start("apply.yml")  # nothing on a non-terminal
    state = RunState(observer=progress)
    for event in _task("Install", ("a", "changed"), ("b", "ok")):
        state(event)
    assert stream.getvalue() == ""  # its outcome may still change: more hosts may answer
    state({"event": "playbook_on_task_start", "event_data": {"task": "Configure"}})
    assert stream.getvalue() == "[task 1] Install  ·  changed: a; ok: b\n"
    # The end of a play ends its last task, which no host ran: held back to be folded...
    state({"event": "playbook_on_play_start", "event_data": {"name": "Second play"}})
    assert state.tasks[-1].ended
    assert stream.getvalue().count("\n") == 1
    progress.close()  # ... with the next ones, or at the end
    assert stream.getvalue().splitlines()[1:] == ["(task 2 skipped on every host)"]


def test_a_failure_path_task_is_never_changed_unless_it_ran_and_changed() -> None:
    hosts = ("ceo-a1", "ceo-a2")
    lines = _log(
        [
            *_task("Configure qemu", *((h, "changed") for h in hosts)),
            # Before: printed with the run's count of changed hosts, as if these had changed both.
            *_task("Put back libvirt's configuration", *((h, "skipped") for h in hosts)),
            *_task("Start libvirt with its previous configuration", ("ceo-a1", "skipped")),
            *_task("Put back the remotes", ("ceo-a1", "skipped"), ("ceo-a2", "changed")),
            *_task("Fail the host when libvirt did not come back", ("ceo-a2", "failed")),
            _STATS,
        ]
    )
    assert lines == [
        "[task 1] Configure qemu  ·  changed: ceo-a1, ceo-a2",
        "(tasks 2-3 skipped on every host)",
        "[task 4] Put back the remotes  ·  changed: ceo-a2; skipped: ceo-a1",
        "[task 5] Fail the host when libvirt did not come back  ·  failed: ceo-a2",
    ]


def test_skipped_tasks_fold_into_one_line_per_run_of_them() -> None:
    lines = _log(
        [
            *_task("Install with dnf", ("a", "skipped"), ("b", "skipped")),
            *_task("Install with apt", ("a", "ok"), ("b", "changed")),
            *_task("Enable SELinux booleans", ("a", "skipped"), ("b", "skipped")),
            *_task("Relabel", ("a", "skipped")),
            # A task no host reported on (all of its hosts had failed before) is folded too.
            *_task("Tell nobody"),
            _STATS,
        ],
        # check runs a second playbook through the same display: its tasks count from 1.
        [*_task("Probe", ("a", "skipped")), *_task("Judge", ("a", "ok")), _STATS],
    )
    assert lines == [
        "(task 1 skipped on every host)",
        "[task 2] Install with apt  ·  changed: b; ok: a",
        "(tasks 3-5 skipped on every host)",
        "(task 1 skipped on every host)",
        "[task 2] Judge  ·  ok: a",
    ]


def test_a_loop_counts_hosts_not_items() -> None:
    events = _task("Add oneadmin to groups")
    for host in ("a", "b"):
        for item, changed in (("kvm", host == "a"), ("disk", False)):
            res = {"item": item, "changed": changed}
            events.append({"event": "runner_item_on_ok", "event_data": {"host": host, "res": res}})
        res = {"changed": host == "a", "results": []}
        events.append({"event": "runner_on_ok", "event_data": {"host": host, "res": res}})
    events.append({"event": "runner_item_on_skipped", "event_data": {"host": "c", "res": {}}})
    events.append({"event": "runner_on_skipped", "event_data": {"host": "c"}})
    assert _log([*events, _STATS]) == [
        "[task 1] Add oneadmin to groups  ·  changed: a; ok: b; skipped: c"
    ]


def test_many_hosts_are_counted_few_are_named() -> None:
    many = [f"h{n:02}" for n in range(NAMED_HOSTS + 1)]
    few = [f"x{n}" for n in range(NAMED_HOSTS)]
    lines = _log(
        [*_task("Configure", *((h, "changed") for h in many), *((h, "ok") for h in few)), _STATS]
    )
    assert lines == [f"[task 1] Configure  ·  changed {len(many)}; ok: {', '.join(few)}"]


def test_unreachable_and_worst_outcome_first() -> None:
    events = _task("Install", ("a", "ok"), ("b", "failed"), ("c", "changed"))
    events.append({"event": "runner_on_unreachable", "event_data": {"host": "d", "res": {}}})
    ignored = {"host": "e", "ignore_errors": True, "res": {}}
    events.append({"event": "runner_on_failed", "event_data": ignored})
    assert _log([*events, _STATS]) == [
        "[task 1] Install  ·  failed: b; unreachable: d; changed: c; failed (ignored): e; ok: a"
    ]


def test_an_interrupted_task_is_logged_at_close_with_its_unfinished_hosts() -> None:
    events = [
        *_task("Report a change", ("a", "changed"), ("b", "changed")),
        {"event": "playbook_on_task_start", "event_data": {"task": "Wait a long time"}},
        {"event": "runner_on_start", "event_data": {"host": "a", "task": "Wait a long time"}},
        {"event": "runner_on_start", "event_data": {"host": "b", "task": "Wait a long time"}},
        {"event": "runner_on_ok", "event_data": {"host": "a", "res": {"changed": False}}},
    ]
    assert _log(events) == [
        "[task 1] Report a change  ·  changed: a, b",
        "[task 2] Wait a long time  ·  ok: a; unfinished: b",
    ]
    assert _log(events[:-3]) == [
        "[task 1] Report a change  ·  changed: a, b",
        "[task 2] Wait a long time  ·  unfinished",
    ]
