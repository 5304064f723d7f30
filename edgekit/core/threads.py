"""How many threads to compute with: the cores this process may use, less the ones other processes keep busy.

PyTorch's OpenMP threads spin while they wait for each other, so a thread per core collapses when another process
takes a core: on a 2-core machine beside one busy process, training ran at 0.3x of its quiet speed with 2 threads
and at 0.9x with 1 (docs/training.md, `python tools/bench_train.py --contended 1`). A `ThreadGovernor` looks at
the machine every few seconds and uses only the cores that are free.
"""

from __future__ import annotations

import contextlib
import os
import time

from edgekit.core.errors import EdgekitError

POLL_SECONDS = 2.0


def thread_budget() -> int:
    """The threads this process may use: OMP_NUM_THREADS where the user (or a parent that split the cores) set it,
    else the cores it may run on."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("OMP_NUM_THREADS", "")) > 0:
            return int(os.environ["OMP_NUM_THREADS"])
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), whatever OMP_NUM_THREADS says."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_times() -> tuple[float, float, float] | None:
    """(busy jiffies of the whole machine, all jiffies, this process's jiffies), or None where /proc is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8]), float(own[11]) + float(own[12])  # utime + stime


def deterministic_threads(requested: int | None, world: int = 1) -> int:
    """The fixed thread count of a reproducible run (`train --deterministic`): the same count whatever the load,
    since a different count changes the order of float reductions. Refused where it cannot hold."""
    if world > 1:
        raise EdgekitError(f"--deterministic with {world} data-parallel processes: their gradient reductions are "
                           "not ordered the same from run to run; train in one process (without torchrun), or drop "
                           "--deterministic.")
    budget = thread_budget()
    cores = usable_cores()
    if requested is not None and requested > cores:
        raise EdgekitError(f"--threads {requested} with --deterministic: this process may run on {cores} core(s); "
                           f"give --threads {cores} or fewer, and the same count wherever the run is repeated.")
    return requested or budget


class ThreadGovernor:
    """Sets torch's thread count and keeps it to the cores other processes leave free.

    `requested` (a --threads value) is used as given. Otherwise the count starts at the thread budget and is
    re-chosen every POLL_SECONDS from /proc: the cores busy with other processes are subtracted."""

    def __init__(self, requested: int | None = None, deterministic: bool = False) -> None:
        import torch

        self.before = torch.get_num_threads()  # restore() puts it back
        self.requested = requested
        self.deterministic = deterministic
        self.budget = requested or thread_budget()
        self.cores = os.cpu_count() or 1
        self.used: list[int] = []
        self._last = _cpu_times()
        self._checked = time.monotonic()
        self._set(self.budget)

    def _set(self, threads: int) -> None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if threads not in self.used:
            self.used.append(threads)
        self.threads = threads

    def poll(self) -> int:
        """Cheap between checks; every POLL_SECONDS, re-choose the thread count from what others use."""
        if self.requested is not None or time.monotonic() - self._checked < POLL_SECONDS:
            return self.threads
        now = _cpu_times()
        self._checked = time.monotonic()
        if now is None or self._last is None:
            return self.threads
        busy, total, own = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        if total <= 0:
            return self.threads
        others = max(0.0, (busy - own) / (total / self.cores))  # cores' worth of other processes' work
        self._set(max(1, min(self.budget, int(self.cores - others + 0.5))))
        return self.threads

    def restore(self) -> None:
        """Torch's thread count as it was before this governor: a library call leaves its caller's setting alone."""
        import torch

        torch.set_num_threads(self.before)

    def record(self) -> dict[str, object]:
        """For summary.json: what was asked, the budget, and every count used."""
        return {"requested": self.requested, "budget": self.budget, "used": sorted(self.used),
                "deterministic": self.deterministic}
