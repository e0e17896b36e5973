"""zfnet.cores: free cores from faked /proc readings, and the plan of threads and workers made from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runs import forget_option

from zfnet import cores
from zfnet.errors import ZFNetError


@pytest.fixture(autouse=True)
def _measured_afresh():
    """Each test measures its own machine, and leaves no measurement of a fake one to later tests."""
    cores.process_free_cores.cache_clear()
    yield
    cores.process_free_cores.cache_clear()


class FakeClock:
    """``time`` as zfnet.cores uses it: ``sleep(s)`` moves the wall clock; this process burns ``own`` s meanwhile."""

    def __init__(self, own_per_second: float = 0.0) -> None:
        self.now, self.cpu, self.own_per_second = 100.0, 5.0, own_per_second

    def monotonic(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.cpu

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.cpu += seconds * self.own_per_second


def stat_text(ticks: dict[int, tuple[int, int]]) -> str:
    """``/proc/stat`` with each CPU's (busy, idle) ticks: busy split over user and system, idle over idle and iowait."""
    lines = ["cpu  " + " ".join(["0"] * 10)]
    for cpu, (busy, idle) in sorted(ticks.items()):
        user, system = busy - busy // 3, busy // 3
        lines.append(f"cpu{cpu} {user} 0 {system} {idle - 1} 1 0 0 0 0 0")
    return "\n".join(lines + ["intr 1 2 3", "ctxt 4"]) + "\n"


def fake_machine(monkeypatch, cpus, stats=None, *, files=None, own_per_second=0.0, affinity=None):
    """A machine of CPUs ``cpus`` whose ``/proc/stat`` reads as ``stats`` in turn (None: unreadable).

    ``files`` holds any other file's text; a file not there cannot be read. Every CPU is its own core
    unless ``files`` says otherwise.
    """
    readings = iter(stats or [])
    files = {f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list": f"{c}\n" for c in cpus} | (files or {})

    def read(path: str) -> str | None:
        if path == "/proc/stat":
            return next(readings) if stats is not None else None
        return files.get(path)

    monkeypatch.setattr(cores, "_read_text", read)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(affinity if affinity is not None else cpus))
    monkeypatch.setattr(cores, "time", FakeClock(own_per_second))
    monkeypatch.setattr(os, "sysconf", lambda name: 100)  # clock ticks per second
    monkeypatch.setattr(cores, "_THREADS_AT_IMPORT", torch.get_num_threads())  # no count set by the program
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


# Over the 0.2 s window at 100 ticks/s each CPU spends 20 ticks: all busy, all idle, or between.
IDLE = (0, 20)
BUSY = (20, 0)


def window(before: dict[int, tuple[int, int]], during: dict[int, tuple[int, int]]) -> list[str]:
    after = {c: (before[c][0] + during[c][0], before[c][1] + during[c][1]) for c in before}
    return [stat_text(before), stat_text(after)]


START = {0: (5000, 9000), 1: (7000, 3000), 2: (100, 200), 3: (300, 400)}


def test_two_cores_one_busy_process_leave_one(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: BUSY, 1: IDLE}))
    assert cores.free_cores() == 1


def test_two_idle_cores_are_free(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: IDLE, 1: IDLE}) * 2)
    assert cores.busy_cores() == 0.0
    assert cores.free_cores() == 2


def test_a_load_spread_over_cores_counts_its_sum(monkeypatch):
    # two processes at half a core each, one per CPU: one core busy in all
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: (10, 10), 1: (10, 10)}))
    assert cores.busy_cores() == pytest.approx(1.0)


def test_this_process_is_not_counted_as_busy(monkeypatch):
    # a core busy over the window, all of it this process's own threads
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: BUSY, 1: IDLE}), own_per_second=1.0)
    assert cores.free_cores() == 2


def test_only_the_allowed_cpus_count(monkeypatch):
    # CPUs 0 and 1 busy, but this process may only run on 2 and 3, which are idle
    stats = window(START, {0: BUSY, 1: BUSY, 2: IDLE, 3: IDLE})
    fake_machine(monkeypatch, {0, 1, 2, 3}, stats, affinity={2, 3})
    assert cores.free_cores() == 2


def test_more_busy_processes_than_cores_leave_one(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: BUSY, 1: BUSY}))
    assert cores.free_cores() == 1


def test_local_world_size_shares_the_free_cores(monkeypatch):
    fake_machine(monkeypatch, {0, 1, 2, 3}, window(START, {c: IDLE for c in START}))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cores.free_cores() == 2
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: IDLE, 1: IDLE}))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cores.free_cores() == 1


def test_a_cgroup_quota_bounds_the_cores(monkeypatch):
    stats = window(START, {c: IDLE for c in START})
    fake_machine(monkeypatch, {0, 1, 2, 3}, stats, files={"/sys/fs/cgroup/cpu.max": "150000 100000\n"})
    assert cores.allowed_cores() == 2  # 1.5 cores, rounded up
    assert cores.free_cores() == 2
    fake_machine(monkeypatch, {0, 1, 2, 3}, None, files={"/sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cores.allowed_cores() == 4
    fake_machine(monkeypatch, {0, 1, 2, 3}, None, files={"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000\n",
                                                          "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert cores.allowed_cores() == 1
    fake_machine(monkeypatch, {0, 1, 2, 3}, None, files={"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                                                          "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"})
    assert cores.allowed_cores() == 4


def test_without_proc_stat_the_running_count_is_used(monkeypatch):
    # 3 running tasks: this one and two others
    fake_machine(monkeypatch, {0, 1, 2, 3}, None, files={"/proc/loadavg": "3.90 2.10 1.00 3/412 9999\n"})
    assert cores.busy_cores() == 2.0
    assert cores.free_cores() == 2


def test_with_nothing_to_read_every_core_is_free(monkeypatch):
    fake_machine(monkeypatch, {0, 1, 2}, None)
    assert cores.busy_cores() == 0.0
    assert cores.free_cores() == 3


def test_plan_splits_free_cores_between_threads_and_workers_when_streaming(monkeypatch):
    fake_machine(monkeypatch, set(range(32)), None)
    assert cores.plan_threads(free=4, streaming=True) == cores.ThreadPlan(2, 2, 4, "free cores")
    assert cores.plan_threads(free=2, streaming=True) == cores.ThreadPlan(1, 1, 2, "free cores")
    assert cores.plan_threads(free=1, streaming=True) == cores.ThreadPlan(1, 0, 1, "free cores")
    assert cores.plan_threads(free=32, streaming=True) == cores.ThreadPlan(24, cores.MAX_WORKERS, 32, "free cores")
    # workers asked for take their cores from the threads, down to one thread
    assert cores.plan_threads(3, free=4, streaming=True) == cores.ThreadPlan(1, 3, 4, "free cores")
    assert cores.plan_threads(16, free=4, streaming=True) == cores.ThreadPlan(1, 16, 4, "free cores")


def test_plan_gives_threads_every_free_core_when_the_images_are_in_memory(monkeypatch):
    fake_machine(monkeypatch, set(range(32)), None)
    # the workers only fill the cache, before the model computes
    assert cores.plan_threads(free=4, streaming=False) == cores.ThreadPlan(4, 4, 4, "free cores")
    assert cores.plan_threads(free=1, streaming=False) == cores.ThreadPlan(1, 0, 1, "free cores")
    assert cores.plan_threads(0, free=3, streaming=False) == cores.ThreadPlan(3, 0, 3, "free cores")


def test_plan_measures_once_per_process(monkeypatch):
    # one window of readings: a second measurement would find none
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: BUSY, 1: IDLE}))
    assert cores.plan_threads(streaming=False) == cores.ThreadPlan(1, 0, 1, "free cores")
    assert cores.plan_threads(streaming=True) == cores.ThreadPlan(1, 0, 1, "free cores")
    assert cores.process_free_cores() == 1


def test_threads_stay_within_the_physical_cores(monkeypatch):
    # four CPUs, two cores of two hyperthreads each
    siblings = {f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list": ("0,2\n" if c % 2 == 0 else "1,3\n")
                for c in range(4)}
    fake_machine(monkeypatch, {0, 1, 2, 3}, None, files=siblings)
    assert cores.physical_cores({0, 1, 2, 3}) == 2
    assert cores.plan_threads(free=4, streaming=False).threads == 2


def test_omp_num_threads_wins_over_the_free_cores(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: BUSY, 1: IDLE}))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cores.plan_threads(streaming=False) == cores.ThreadPlan(3, 0, 1, "OMP_NUM_THREADS")


def test_a_count_the_program_set_wins_over_omp_num_threads(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(cores, "_THREADS_AT_IMPORT", torch.get_num_threads() + 1)  # torch.set_num_threads since
    plan = cores.plan_threads(free=2, streaming=False)
    assert plan == cores.ThreadPlan(torch.get_num_threads(), 2, 2, "torch.set_num_threads")


def test_an_explicit_thread_count_wins_over_everything(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, window({c: START[c] for c in (0, 1)}, {0: IDLE, 1: IDLE}))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(cores, "_THREADS_AT_IMPORT", torch.get_num_threads() + 1)
    assert cores.plan_threads(free=2, threads=5, streaming=False) == cores.ThreadPlan(5, 2, 2, "asked for")


def test_omp_num_threads_that_is_not_a_count_is_ignored(monkeypatch):
    fake_machine(monkeypatch, {0, 1}, None)
    for text in ("", "0", "-2", "four"):
        monkeypatch.setenv("OMP_NUM_THREADS", text)
        assert cores.plan_threads(free=2, streaming=False).threads_from == "free cores"
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested levels: the first is the intra-op count
    assert cores.plan_threads(free=2, streaming=False).threads == 4


def test_nothing_is_measured_when_the_user_chose_both(monkeypatch):
    def measured() -> int:
        raise AssertionError("measured the free cores")

    monkeypatch.setattr(cores, "free_cores", measured)
    monkeypatch.setattr(cores, "_THREADS_AT_IMPORT", torch.get_num_threads())
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cores.plan_threads(2, threads=1) == cores.ThreadPlan(1, 2, None, "asked for")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cores.plan_threads(0) == cores.ThreadPlan(2, 0, None, "OMP_NUM_THREADS")
    assert "not measured" in str(cores.plan_threads(0))


def test_apply_sets_torch_threads_and_returns_the_count_before():
    before = torch.get_num_threads()
    try:
        other = 1 if before != 1 else 2
        assert cores.apply(cores.ThreadPlan(other, 0, 2, "free cores")) == before
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kwargs", [{"workers_wanted": -1}, {"threads": 0}, {"free": 0}])
def test_plan_refuses_impossible_counts(kwargs):
    with pytest.raises(ValueError, match="must be"):
        cores.plan_threads(**{"free": 2, **kwargs})


def test_plan_text_names_its_numbers():
    assert str(cores.ThreadPlan(1, 2, 3, "free cores")) == "1 thread (free cores), 2 data workers, 3 free cores"


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc")
def test_on_this_machine(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert 1 <= cores.free_cores(window=0.05) <= cores.allowed_cores()
    assert 0.0 <= cores.busy_cores(window=0.05) <= len(cores.allowed_cpus())


# --------------------------------------------------------------------------- training plans its threads once
def _plans(monkeypatch, free: int) -> list[cores.ThreadPlan]:
    """The plans training applies from now on, on a machine of ``free`` free cores and no count set by anyone."""
    applied = []
    real = cores.apply

    def spy(plan):
        applied.append(plan)
        return real(plan)

    monkeypatch.setattr(cores, "apply", spy)
    monkeypatch.setattr(cores, "free_cores", lambda window=cores.WINDOW: free)
    monkeypatch.setattr(cores, "_THREADS_AT_IMPORT", torch.get_num_threads())
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores.process_free_cores.cache_clear()
    return applied


def _train(data, out, *, resume=False, **kw):
    from zfnet.train import TrainConfig, train

    config = dict(data=str(data), out=str(out), model="zfnet-tiny", epochs=1, batch_size=8, workers=0,
                  snapshots=(1,), lr_patience=5)
    return train(TrainConfig(**{**config, **kw}), resume=resume, show_progress=False)


def _saved_threads(run):
    return json.loads((run / "config.json").read_text()).get("threads")


def test_training_takes_the_free_cores_keeps_the_count_and_restores_the_callers(tiny_tree, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    applied = _plans(monkeypatch, free=1)
    _train(tiny_tree, tmp_path / "run")
    assert [p.threads for p in applied] == [1] and applied[0].threads_from == "free cores"
    assert _saved_threads(tmp_path / "run") == 1
    assert torch.get_num_threads() == before  # the caller's count, back


def test_a_resumed_run_keeps_its_thread_count_whatever_the_load(tiny_tree, tmp_path, monkeypatch):
    # the count changes how torch rounds its sums: the resumed epochs compute as the uninterrupted run's
    _plans(monkeypatch, free=1)
    _train(tiny_tree, tmp_path / "run")
    cores.process_free_cores.cache_clear()
    applied = _plans(monkeypatch, free=2)
    _train(tiny_tree, tmp_path / "run", epochs=2, resume=True)
    assert [(p.threads, p.threads_from) for p in applied] == [(1, "asked for")]
    assert _saved_threads(tmp_path / "run") == 1


def test_a_run_saved_before_threads_were_kept_resumes_on_torchs_count(tiny_tree, tmp_path, monkeypatch):
    _plans(monkeypatch, free=1)
    run = tmp_path / "run"
    _train(tiny_tree, run)
    forget_option(run, "threads")
    applied = _plans(monkeypatch, free=1)
    _train(tiny_tree, run, epochs=2, resume=True)
    assert [p.threads for p in applied] == [torch.get_num_threads()]  # what the run had before this option


def test_a_thread_count_in_the_configuration_wins(tiny_tree, tmp_path, monkeypatch):
    applied = _plans(monkeypatch, free=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _train(tiny_tree, tmp_path / "run", threads=2)
    assert [(p.threads, p.threads_from) for p in applied] == [(2, "asked for")]
    assert _saved_threads(tmp_path / "run") == 2


def test_busy_seconds_adds_the_cpus_asked_for_and_is_nan_where_unreadable(monkeypatch):
    ticks = {0: (150, 50), 1: (30, 170)}
    fake_machine(monkeypatch, [0, 1], [stat_text(ticks)] * 4)  # 100 ticks a second
    assert cores.busy_seconds() == pytest.approx(1.8)  # every CPU: 150 + 30 busy ticks
    assert cores.busy_seconds({1}) == pytest.approx(0.3)
    assert cores.busy_seconds({5}) != cores.busy_seconds({5})  # no such CPU: NaN
    fake_machine(monkeypatch, [0, 1], None)
    assert cores.busy_seconds() != cores.busy_seconds()


# -- side by side ------------------------------------------------------------------------------------
# The calls run in fresh processes: they are module-level functions of this file.

def threads_and_pid(tag: str) -> tuple[str, int, int]:
    return tag, torch.get_num_threads(), os.getpid()


def fail_as_user_error(message: str) -> None:
    from zfnet.errors import ZFNetError

    raise ZFNetError(message)


def crash() -> None:
    raise ValueError("a bug")


def sleep_then(seconds: float, marker: str) -> None:
    import time

    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def test_side_by_side_runs_each_call_in_its_own_process_with_the_threads_asked():
    polls = []
    got = cores.side_by_side(threads_and_pid, [("a",), ("b",)], threads=1, poll=lambda: polls.append(1))
    assert [tag for tag, _, _ in got] == ["a", "b"]  # the calls' order
    assert all(threads == 1 for _, threads, _ in got)
    pids = {pid for _, _, pid in got}
    assert len(pids) == 2 and os.getpid() not in pids and polls


def test_side_by_side_stops_the_others_when_one_fails(tmp_path):
    marker = tmp_path / "sleeper.pid"
    t0 = time.monotonic()
    with pytest.raises(ZFNetError, match="^the data is wrong$"):
        cores.side_by_side(lambda_free_call, [(fail_as_user_error, ("the data is wrong",)),
                                              (sleep_then, (120.0, str(marker)))], threads=1)
    assert time.monotonic() - t0 < 60  # the sleeper was stopped, not waited for
    if marker.exists():
        pid = int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="ValueError: a bug"):
        cores.side_by_side(crash, [()], threads=1)


def lambda_free_call(fn, args):
    return fn(*args)


def test_a_process_side_by_side_stops_when_its_parent_is_killed(tmp_path):
    marker = tmp_path / "child.pid"
    script = ("import sys; sys.path[:0] = sys.argv[1:3]\n"
              "from test_cores import sleep_then\n"
              "from zfnet import cores\n"
              f"cores.side_by_side(sleep_then, [(120.0, {str(marker)!r})], threads=1)\n")
    here = str(Path(__file__).parent)
    parent = subprocess.Popen([sys.executable, "-c", script, here, str(Path(here) / "helpers")])
    for _ in range(600):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.1)
    child = int(marker.read_text())
    parent.kill()
    parent.wait()
    for _ in range(100):  # it checks every second
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the orphaned process kept running")


def test_demo_trains_runs_side_by_side_as_it_would_one_after_the_other(tiny_tree, tmp_path, monkeypatch):
    from zfnet.experiments.demo import train_runs
    from zfnet.train import TrainConfig
    from zfnet.train.run import Run

    monkeypatch.setattr(cores, "process_free_cores", lambda: 2)
    base = dict(data=str(tiny_tree), model="zfnet-tiny", epochs=2, batch_size=8, workers=0, snapshots=(2,),
                lr_patience=5, threads=1)
    sequential = [TrainConfig(out=str(tmp_path / f"seq{i}"), seed=i, **base) for i in range(2)]
    train_runs(sequential, side_by_side=False, show_progress=False)
    parallel = [TrainConfig(out=str(tmp_path / f"par{i}"), seed=i, **{**base, "threads": None}) for i in range(2)]
    train_runs(parallel, show_progress=False)
    for i in range(2):
        a, b = Run.open(tmp_path / f"seq{i}"), Run.open(tmp_path / f"par{i}")
        assert a.finished_epochs == 2
        assert b.finished_epochs == 2 and _saved_threads(tmp_path / f"par{i}") == 1
        weights = zip(a.model().model.state_dict().items(), b.model().model.state_dict().items(), strict=True)
        for (name, x), (_, y) in weights:
            assert torch.equal(x, y), name  # one thread each: bit for bit the sequential runs


def test_side_by_side_width_runs_a_call_per_free_core_and_shares_the_cores(monkeypatch):
    monkeypatch.setattr(cores, "process_free_cores", lambda: 2)
    assert cores.side_by_side_width(5) == (2, 1)  # two at a time, a core each
    monkeypatch.setattr(cores, "process_free_cores", lambda: 5)
    assert cores.side_by_side_width(2) == (2, 2)  # both at once, two of the five cores each
    monkeypatch.setattr(cores, "process_free_cores", lambda: 1)
    assert cores.side_by_side_width(4) == (1, 1)  # one core: one after the other


def test_side_by_side_width_measures_no_cores_for_a_single_call(monkeypatch):
    def measured():
        raise AssertionError("measured the free cores for one call")

    monkeypatch.setattr(cores, "process_free_cores", measured)
    assert cores.side_by_side_width(1) == (1, 1)
    assert cores.side_by_side_width(0) == (1, 1)
