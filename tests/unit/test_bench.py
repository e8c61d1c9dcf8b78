"""bench/run --assert-targets: what fails the run (the benchmark itself needs the lab)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from conftest import REPO_ROOT


def _bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kvmprep_bench_run", str(REPO_ROOT / "bench/run"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


bench = _bench()
ONE_TRIP = [
    {"command": "check", "hosts": 1, "ssh_commands_per_host": [1]},
    {"command": "apply", "hosts": 1, "ssh_commands_per_host": [6]},  # apply may take several
]


def _results(passed: bool = True) -> list[dict[str, object]]:
    return [{"target": t[0], "ratio": 1.0, "bound": t[4], "pass": passed} for t in bench.TARGETS]


def test_every_target_measured_and_met_passes() -> None:
    assert bench.missed_targets(_results(), ONE_TRIP) == []


def test_a_target_not_measured_is_missed_not_passed() -> None:
    first, *others = _results()
    assert bench.missed_targets(others, ONE_TRIP) == [f"not measured: {first['target']}"]


def test_a_missed_ratio_is_named() -> None:
    results = _results()
    results[0]["pass"] = False
    assert bench.missed_targets(results, ONE_TRIP) == [
        f"missed: {results[0]['target']} (ratio 1.0)"
    ]


def test_a_check_of_more_than_one_round_trip_per_host_is_missed() -> None:
    trips = [*ONE_TRIP, {"command": "check", "hosts": 16, "ssh_commands_per_host": [1, 2]}]
    assert bench.missed_targets(_results(), trips) == [
        "kvmprep check with 16 host(s): [1, 2] SSH commands per host, not one round trip"
    ]


def test_cpu_scaling_compares_each_added_host_with_the_floors() -> None:
    cpu = {("floor", "1"): 1.0, ("floor", "16"): 2.5, ("check", "1"): 2.0, ("check", "16"): 5.0}
    lines = bench.cpu_scaling(cpu)
    assert "| seconds per added host | 0.100 | 0.200 |" in lines
    assert "| 16 hosts / 1 host | 2.50 | 2.50 |" in lines
    # 2.0 s for one host, then the floor's 0.1 s for each of the 15 others: 3.5 / 2.0.
    assert lines[-1].endswith(": 1.75")
    del cpu[("floor", "16")]
    assert bench.cpu_scaling(cpu) == []
