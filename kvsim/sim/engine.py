"""A small, generic discrete-event loop. It knows nothing of LLMs.

The core follows SimPy (``simpy/core.py``: a heap of ``(time, priority, eid, event)``
with a per-environment counter ``eid``): events are inert frozen data, one handler
turns an event into follow-up events, and the heap key ``(time, priority, seq)`` is the
only ordering rule. ``seq`` is a per-instance insertion counter, so runs are
deterministic and two engines never share state (no globals, no class-level counters).

Example::

    @dataclass(frozen=True, slots=True)
    class Tick:
        n: int

    def handle(now, ev):
        return [(now + 1.0, Tick(ev.n + 1))] if ev.n < 3 else ()

    eng = Engine()
    eng.schedule(0.0, Tick(0))
    eng.run(handle)   # eng.now == 3.0, eng.events_processed == 4
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable  # noqa: F401  (Iterable: in the Handler annotation string)
from typing import Any

#: a follow-up event: ``(time_s, event)`` or ``(time_s, priority, event)``
FollowUp = tuple
Handler = Callable[[float, Any], "Iterable[FollowUp] | None"]


class Engine:
    """Heap of ``(time_s, priority, seq, event)``; ``run`` pops in key order.

    ``priority`` breaks ties at equal times (smaller first); events may define it as a
    class attribute ``priority`` (default 0). Time never goes backwards: scheduling an
    event before ``now`` raises ``ValueError``, and popping asserts monotonicity.
    """

    __slots__ = ("now", "_heap", "_seq", "events_processed")

    def __init__(self, start_s: float = 0.0) -> None:
        self.now = float(start_s)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.events_processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, time_s: float, event: Any, priority: int | None = None) -> None:
        """Queue ``event`` at ``time_s`` (seconds, >= now)."""
        if not time_s >= self.now or math.isnan(time_s):
            raise ValueError(f"cannot schedule an event at {time_s!r} s, before now ({self.now!r} s)")
        p = getattr(event, "priority", 0) if priority is None else priority
        heapq.heappush(self._heap, (time_s, p, self._seq, event))
        self._seq += 1

    def peek_time(self) -> float:
        """Time of the next event (``inf`` when none is queued)."""
        return self._heap[0][0] if self._heap else math.inf

    def run(self, handler: Handler, until_s: float = math.inf) -> float:
        """Process events in key order until none is left (or the next is after ``until_s``).

        ``handler(now_s, event)`` returns follow-ups ``(time_s, event)`` or
        ``(time_s, priority, event)``, or ``None``. Returns the final time.
        """
        heap, pop, push = self._heap, heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= until_s:
            t, _, _, ev = pop(heap)
            assert t >= self.now, f"time went backwards: {t} < {self.now}"
            self.now = t
            self.events_processed += 1
            follow = handler(t, ev)
            if follow:
                for f in follow:
                    if len(f) == 2:
                        ft, fev = f
                        fp = getattr(fev, "priority", 0)
                    else:
                        ft, fp, fev = f
                    if not ft >= t:
                        raise ValueError(f"handler scheduled an event at {ft!r} s, before now ({t!r} s)")
                    push(heap, (ft, fp, self._seq, fev))
                    self._seq += 1
        return self.now
