"""Where a process's seconds go: one clock per process that the CLI, the train command and the
run assembly "lap" at the end of each phase (start-up, compose, imports, data, model, first
step, epochs, checkpoint wait, test, figures). ``facecls train`` writes the laps to
metrics.json under ``timing``, and scripts/bench.py --phases reads them back, so every
start-up or finish figure is measured inside a real run rather than guessed from outside.
Imports nothing third-party (the CLI laps it before torch is loaded)."""
from __future__ import annotations

import os
import time


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc, so the interpreter's own start-up
    counts; elsewhere 0, i.e. from the first use of this module)."""
    try:
        with open("/proc/self/stat") as f:
            # the name field may hold spaces: count the fields after its closing parenthesis
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class PhaseClock:
    """Consecutive phases of this process: ``lap(name)`` books the seconds since the previous lap
    (or the process start) to ``name``, wall-clock and CPU (all threads: on a busy machine the
    CPU seconds say what a phase costs, the wall what it took); ``take()`` hands the phases over
    and starts a new set (a sweep run in one process books its next job from there)."""

    def __init__(self) -> None:
        self.started = time.perf_counter() - process_age()
        self._last, self._last_cpu = self.started, 0.0  # process_time counts from the process start
        self.phases: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now, cpu = time.perf_counter(), time.process_time()
        self.phases[name] = self.phases.get(name, 0.0) + (now - self._last)
        self.cpu[name] = self.cpu.get(name, 0.0) + (cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu
        return now - self.started

    def since_start(self) -> float:
        return time.perf_counter() - self.started

    def take(self) -> dict:
        """The phases so far (wall seconds, in order), ``in_process``: seconds since the process
        started, and ``cpu``: the CPU seconds of each phase."""
        out = {name: round(seconds, 4) for name, seconds in self.phases.items()}
        out["in_process"] = round(self.since_start(), 4)
        out["cpu"] = {name: round(seconds, 4) for name, seconds in self.cpu.items()}
        self.phases, self.cpu = {}, {}
        return out


CLOCK = PhaseClock()
