"""How many CPU cores this process can really use, and how training spends them.

On a machine shared with other work, taking every core hurts: torch's intra-op threads (OpenMP) wait
for each other at the end of every parallel region, so one thread descheduled for another process's
sake stalls them all, and DataLoader workers decoding images compete for the same cores. The figures,
idle and beside a fixed load, are in ``docs/benchmarks.md`` ("Busy machine: threads and workers").

The policy, read once when training starts:

1. **Allowed**: the cores of this process's affinity mask (:func:`os.sched_getaffinity`; ``taskset``,
   a container's cpuset), at most its cgroup CPU quota rounded up (``docker --cpus``).
2. **Busy**: the cores other processes keep busy, from the CPU time spent on the allowed cores over a
   short window (:data:`WINDOW`, 0.2 s of ``/proc/stat``), less this process's own. ``/proc/loadavg``'s
   1-minute average lags by minutes and is not used; its count of running tasks, an instant, is the
   fallback where ``/proc/stat`` cannot be read; elsewhere (not Linux) nothing is taken as busy.
3. **Free**: allowed minus busy, shared equally by the ``LOCAL_WORLD_SIZE`` processes ``torchrun`` starts
   on this machine, rounded to the nearest core, at least 1 (:func:`free_cores`). A process measures
   once, for its first plan (:func:`process_free_cores`): every run of one process then computes alike,
   and later plans cost nothing.
4. **Plan** (:func:`plan_threads`): when the images are decoded during training (streamed, not kept in
   memory), the free cores are split: half, at most 8, go to DataLoader workers, the rest to torch's
   threads. When they are kept in memory the workers only fill the cache before training (one per free
   core, none with one core) and torch's threads take every free core. Threads never exceed the
   physical cores among the allowed ones (two hyperthreads of a core share its arithmetic units).
5. **The user wins**: an explicit thread count (an argument), else a count the program set with
   ``torch.set_num_threads`` (one that differs from torch's when this module was imported), else
   ``OMP_NUM_THREADS``, sets the threads; an explicit worker count sets the workers. ``torchrun`` sets
   ``OMP_NUM_THREADS=1`` for each of several local processes unless it is set already; that counts too.

The thread count changes the order in which torch sums (a convolution's gradient split over 2 threads
rounds differently from 1), so two runs compute bit for bit alike only on the same count: training
keeps a run's count when it resumes (``TrainConfig.threads``), and runs meant to be compared across
processes pin it (``OMP_NUM_THREADS``). The workers change nothing in the results.

:func:`apply` sets torch's thread count from a plan, once; nothing here runs in the background.

**Side by side.** A small model trained with small batches does not keep two threads busy: on the
2-core machine of the benchmarks two single-thread trainings of ``zfnet-cpu`` side by side take 1.28x
less time than one two-thread training after the other (``docs/benchmarks.md``). :func:`side_by_side`
runs independent calls (trainings) in processes of their own, the free cores shared among them.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import torch

from .errors import ZFNetError

__all__ = ["WINDOW", "MAX_WORKERS", "ThreadPlan", "allowed_cpus", "allowed_cores", "busy_cores", "busy_seconds",
           "free_cores", "process_free_cores", "local_processes", "physical_cores", "plan_threads", "apply",
           "side_by_side_width", "side_by_side"]

WINDOW = 0.2
"""Seconds over which other processes' load is measured: 20 clock ticks per core at Linux's 100 Hz."""
MAX_WORKERS = 8
"""The most DataLoader workers chosen by default (a user may ask for more)."""
_THREADS_AT_IMPORT = torch.get_num_threads()  # torch's own count, unless the program had set one already


def _read_text(path: str) -> str | None:
    """A small system file's text, or None where it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; all of them where there is none)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _quota_cores() -> int | None:
    """The cgroup's CPU quota in cores, rounded up (cgroup v2, then v1); None when there is none."""
    text = _read_text("/sys/fs/cgroup/cpu.max")
    if text is not None:
        parts = text.split()
        quota, period = (parts + ["", ""])[:2]
    else:
        quota = (_read_text("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or "").strip()
        period = (_read_text("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or "").strip()
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max", -1 or no such file: no quota
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def allowed_cores() -> int:
    """The cores this process may use: its affinity mask, at most its cgroup quota."""
    cores = len(allowed_cpus())
    quota = _quota_cores()
    return min(cores, quota) if quota is not None else cores


def physical_cores(cpus: set[int]) -> int | None:
    """Physical cores among ``cpus`` (hyperthreads of one core counted once); None where unknown."""
    cores = set()
    for cpu in cpus:
        siblings = _read_text(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        if siblings is None:
            return None
        cores.add(siblings.strip())
    return len(cores) or None


def busy_seconds(cpus: set[int] | None = None) -> float:
    """CPU-seconds all processes have spent on ``cpus`` (default: every CPU) since boot, busy (not idle or
    waiting for I/O), from ``/proc/stat``; NaN where it cannot be read. The difference of two readings
    over a stretch of time, divided by it, is the number of cores kept busy then."""
    ticks = _busy_ticks(cpus)
    return float("nan") if ticks is None else ticks / os.sysconf("SC_CLK_TCK")


def _busy_ticks(cpus: set[int] | None) -> int | None:
    """Clock ticks all processes have spent on ``cpus`` (None: every CPU) since boot (``/proc/stat``); None
    where unreadable."""
    text = _read_text("/proc/stat")
    if text is None:
        return None
    total, seen = 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and (cpus is None or int(name[3:]) in cpus)):
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already);
        # steal is time the hypervisor gave elsewhere: not free to this process
        ticks = [int(v) for v in rest.split()[:8]]
        total += sum(ticks) - ticks[3] - ticks[4]
        seen += 1
    return total if seen else None


def _running_others() -> float | None:
    """Other tasks running or runnable now, from ``/proc/loadavg``'s instant count (this one left out)."""
    text = _read_text("/proc/loadavg")
    try:
        running = int(text.split()[3].split("/")[0]) if text else None
    except (IndexError, ValueError):
        return None
    return None if running is None else max(0.0, running - 1.0)


def busy_cores(window: float = WINDOW, cpus: set[int] | None = None) -> float:
    """Cores of ``cpus`` (default: the allowed ones) that other processes keep busy, measured over ``window`` s.

    This process's own CPU time, all its threads, is left out; its DataLoader workers, being other
    processes, are not. Falls back to ``/proc/loadavg``'s count of running tasks, then to 0.
    """
    cpus = allowed_cpus() if cpus is None else cpus
    before = _busy_ticks(cpus)
    if before is None:
        others = _running_others()
        return min(float(len(cpus)), others) if others is not None else 0.0
    own, start = time.process_time(), time.monotonic()
    time.sleep(window)
    after = _busy_ticks(cpus)
    own, elapsed = time.process_time() - own, time.monotonic() - start
    if after is None or elapsed <= 0:
        return 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, ValueError):
        tick = 100
    others = (after - before) / tick - own
    return min(float(len(cpus)), max(0.0, others / elapsed))


def local_processes() -> int:
    """Processes sharing this machine's cores for one job: ``LOCAL_WORLD_SIZE`` under ``torchrun``, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def free_cores(window: float = WINDOW) -> int:
    """The cores this process can use now: allowed minus busy, its share among the local ranks, at least 1.

    Takes ``window`` seconds (it measures). See the module's docstring for the policy.
    """
    cpus = allowed_cpus()
    free = min(float(allowed_cores()), len(cpus) - busy_cores(window, cpus))
    return max(1, math.floor(free / local_processes() + 0.5))


@functools.cache
def process_free_cores() -> int:
    """:func:`free_cores`, measured the first time this process asks and then kept."""
    return free_cores()


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a count (its first entry), None when unset or not a positive number."""
    text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True)
class ThreadPlan:
    """How one process spends its cores.

    Attributes:
        threads: torch's intra-op threads.
        workers: DataLoader worker processes.
        free: the free cores the plan was made from (None: not measured, the user set both).
        threads_from: what set ``threads``: ``"asked for"``, ``"torch.set_num_threads"``,
            ``"OMP_NUM_THREADS"`` or ``"free cores"``.
    """

    threads: int
    workers: int
    free: int | None
    threads_from: str

    def __str__(self) -> str:
        free = "not measured" if self.free is None else f"{self.free} free core{'s' * (self.free != 1)}"
        return (f"{self.threads} thread{'s' * (self.threads != 1)} ({self.threads_from}), "
                f"{self.workers} data worker{'s' * (self.workers != 1)}, {free}")


def plan_threads(workers_wanted: int | None = None, *, threads: int | None = None, streaming: bool = True,
                 free: int | None = None) -> ThreadPlan:
    """Torch threads and DataLoader workers for the cores free now.

    Args:
        workers_wanted: the workers asked for (None: chosen from the free cores).
        threads: the threads asked for (None: a count the program set, else ``OMP_NUM_THREADS`` if
            set, else chosen).
        streaming: the images are decoded while the model computes (not kept in memory), so the
            workers' cores are not the threads'.
        free: the free cores, if already measured (None: :func:`process_free_cores`, which takes 0.2 s
            the first time, unless the threads and the workers are both given).

    Returns:
        A :class:`ThreadPlan`.

    Raises:
        ValueError: ``workers_wanted`` below 0, or ``threads`` or ``free`` below 1.

    Example:
        >>> plan_threads(streaming=True, free=4).workers
        2
    """
    if workers_wanted is not None and workers_wanted < 0:
        raise ValueError(f"workers_wanted must be 0 or more, got {workers_wanted}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be 1 or more, got {threads}")
    if free is not None and free < 1:
        raise ValueError(f"free must be 1 or more, got {free}")
    if threads is not None:
        source = "asked for"
    elif (current := torch.get_num_threads()) != _THREADS_AT_IMPORT:
        threads, source = current, "torch.set_num_threads"
    elif (threads := _env_threads()) is not None:
        source = "OMP_NUM_THREADS"
    if free is None and (workers_wanted is None or threads is None):  # measured only when it decides something
        free = process_free_cores()
    if workers_wanted is not None:
        workers = int(workers_wanted)
    elif streaming:
        workers = min(MAX_WORKERS, free // 2)
    else:
        workers = min(MAX_WORKERS, free) if free > 1 else 0
    if threads is not None:
        return ThreadPlan(int(threads), workers, free, source)
    threads = max(1, free - workers if streaming else free)
    physical = physical_cores(allowed_cpus())
    if physical is not None:
        threads = min(threads, physical)
    return ThreadPlan(threads, workers, free, "free cores")


def apply(plan: ThreadPlan) -> int:
    """Set torch's intra-op threads to the plan's.

    Returns:
        The thread count before, to restore when the work is done.
    """
    before = torch.get_num_threads()
    if plan.threads != before:
        torch.set_num_threads(plan.threads)
    return before


def side_by_side_width(calls: int) -> tuple[int, int]:
    """How many of ``calls`` independent calls :func:`side_by_side` runs at once, and torch's threads in each.

    At most one call per free core (:func:`process_free_cores`, measured only when there are two calls or
    more), the free cores shared evenly among those running.

    Returns:
        ``(width, threads)``: ``width`` calls at once with ``threads`` threads each; ``(1, 1)`` for fewer than
        two calls or a single free core (one after the other: the threads are then the caller's to plan).

    Example:
        >>> side_by_side_width(1)
        (1, 1)
    """
    if calls < 2:
        return 1, 1
    free = process_free_cores()
    width = max(1, min(free, calls))
    return width, max(1, free // width)


def side_by_side(fn: Callable[..., Any], calls: Sequence[tuple], *, threads: int,
                 poll: Callable[[], None] | None = None) -> list[Any]:
    """``[fn(*args) for args in calls]``, every call at once in a process of its own with ``threads`` threads.

    For independent work that keeps more processes busy than threads (small-batch training on a few
    cores). The processes are started fresh (``spawn``): ``fn`` must be a module-level function and its
    arguments and result must pickle. A process stops when this one dies (it checks every second), and
    the others are stopped when one fails.

    Args:
        fn: the work of one call.
        calls: the arguments of each call.
        threads: torch's intra-op threads in each process.
        poll: called about every second while the calls run (to update a progress bar).

    Returns:
        The calls' results, in order.

    Raises:
        ZFNetError: a call raised one (its message), or a process died without a result.
        RuntimeError: a call failed otherwise (the message holds its traceback).
    """
    ctx = multiprocessing.get_context("spawn")
    running = []
    try:
        for args in calls:
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_call_in_child, args=(fn, args, threads, os.getpid(), send))
            process.start()
            send.close()  # the child's end: its death closes the pipe
            running.append((process, receive))
        results: dict[int, Any] = {}
        while len(results) < len(running):
            ready = wait([r for i, (_, r) in enumerate(running) if i not in results], timeout=1.0)
            for i, (process, receive) in enumerate(running):
                if i in results or receive not in ready:
                    continue
                try:
                    status, value = receive.recv()
                except EOFError:
                    process.join()
                    raise ZFNetError(f"a process working side by side stopped without a result "
                                     f"(exit code {process.exitcode})") from None
                if status == "error":
                    raise ZFNetError(value)
                if status == "crash":
                    raise RuntimeError(f"a process working side by side failed:\n{value}")
                results[i] = value
            if poll is not None:
                poll()
        return [results[i] for i in range(len(running))]
    finally:
        for process, receive in running:
            if process.is_alive():
                process.terminate()
            process.join()
            receive.close()


def _call_in_child(fn: Callable[..., Any], args: tuple, threads: int, parent: int, send: Any) -> None:
    """One call of :func:`side_by_side`, in its process: the result, or the failure, goes back through ``send``."""
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    try:
        outcome = ("ok", fn(*args))
    except ZFNetError as err:
        outcome = ("error", str(err))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        outcome = ("crash", traceback.format_exc())
    send.send(outcome)
    send.close()


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)  # the parent is gone (killed): nobody wants the result
