"""A simulated clock for writing history: services stamp records with the time the seed says.

Wavu's services read the time only through `wavu.core.clock.now()` (and `today()`, which calls it),
so the seed replaces that one function while it replays months of billing, and puts it back
afterwards. Only for single-threaded commands such as `seed-demo`; never in the web server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from wavu.core import clock


class SimulatedClock:
    def __init__(self, real_now):
        self._real_now = real_now
        self.at: dt.datetime | None = None

    def now(self) -> dt.datetime:
        return self.at if self.at is not None else self._real_now()

    def set(self, moment: dt.datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the simulated clock needs an aware datetime")
        self.at = moment


@contextmanager
def simulated_clock() -> Iterator[SimulatedClock]:
    """Within the block, `clock.now()` returns what `sim.set(...)` last set (the real time until then)."""
    original = clock.now
    sim = SimulatedClock(original)
    clock.now = sim.now
    try:
        yield sim
    finally:
        clock.now = original
