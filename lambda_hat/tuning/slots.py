"""A campaign's share of the cluster: every study runs at once, and ``TrialSlots`` caps the
trials in flight over all of them at the cluster's capacity, shared fairly.

Taking a slot never blocks (a driver that cannot take one waits on its own runs, or, with
none in flight, on ``wait``), so drivers that each hold slots cannot deadlock. Fair share:
while ``n`` studies are active, none takes more than ``ceil(capacity / n)`` slots, so a
study that asks often cannot crowd out one that asks rarely; a study that ends leaves its
share to the others.

>>> slots = TrialSlots(3)
>>> slots.join("a"); slots.join("b")
>>> [slots.take("a") for _ in range(3)]
[True, True, False]
>>> slots.take("b"), slots.take("b")
(True, False)
>>> slots.leave("a")   # its share goes to the others
>>> slots.take("b"), slots.take("b"), slots.take("b")
(True, True, False)
"""

from __future__ import annotations

import math
import threading


class TrialSlots:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._held: dict[str, int] = {}
        self._changed = threading.Condition()

    def join(self, key: str) -> None:
        with self._changed:
            self._held.setdefault(key, 0)

    def leave(self, key: str) -> None:
        """The study is done: its slots (if any were left held) and its share are free."""
        with self._changed:
            self._held.pop(key, None)
            self._changed.notify_all()

    def take(self, key: str) -> bool:
        with self._changed:
            self._held.setdefault(key, 0)
            share = math.ceil(self.capacity / len(self._held))
            if sum(self._held.values()) < self.capacity and self._held[key] < share:
                self._held[key] += 1
                return True
            return False

    def give(self, key: str) -> None:
        with self._changed:
            if self._held.get(key, 0) > 0:
                self._held[key] -= 1
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Until a slot is given back or a study leaves (or ``timeout``)."""
        with self._changed:
            self._changed.wait(timeout)

    def held(self, key: str) -> int:
        with self._changed:
            return self._held.get(key, 0)
