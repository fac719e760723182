"""How many CPU threads a run uses when the user does not say.

torch's default is one thread per core even when another process keeps a core
busy; its thread pool then spins on a core it does not get, and a 2-thread
step went from 0.48 s to 4.7 s beside one busy process. The default here is
the cores this process may run on minus the ones already busy (measured over
a quarter of a second when the run starts), split among the processes of a ``torchrun``, at
least one. Set ``train.threads`` (``--threads``) for a fixed count, and for
results that are bitwise identical between machines and loads.
"""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def busy_cores(window_s: float = 0.25) -> int:
    """Cores other work keeps busy now: measured over ``window_s`` from /proc/stat on Linux,
    else the 1-minute load average (which lags: a run that just ended still counts)."""
    try:
        first = _cpu_times()
        time.sleep(window_s)
        second = _cpu_times()
        total = sum(second) - sum(first)
        idle = (second[3] + second[4]) - (first[3] + first[4])
        return round((1 - idle / total) * (os.cpu_count() or 1)) if total > 0 else 0
    except (OSError, IndexError, ValueError):
        pass
    try:
        return round(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def _cpu_times() -> list[int]:
    """The machine's aggregate CPU times (user, nice, system, idle, iowait, ...) in ticks."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def default_threads() -> int:
    """The usable cores minus the busy ones, shared among the processes of a ``torchrun``
    on this machine, at least one each."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (usable_cores() - busy_cores()) // max(1, processes))


def resolve_threads(requested: int) -> int:
    """``requested`` when positive, else :func:`default_threads`."""
    return requested if requested > 0 else default_threads()
