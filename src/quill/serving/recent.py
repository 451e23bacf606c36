"""A thread-safe mapping that keeps only its most recently used items.

Serving remembers a little about recent requests in four places (answers by image, the
requests that gave up, the app's feedback tokens and the flags it stored): each must not grow
without bound over months of traffic, and each is read and written from several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class Recent(Generic[Key, Value]):
    """Up to ``size`` items; a new one pushes out the least recently used (read or written).

    >>> recent = Recent[str, int](2)
    >>> recent.put("a", 1); recent.put("b", 2)
    >>> recent.get("a"); recent.put("c", 3)
    1
    >>> "b" in recent, "a" in recent, len(recent)  # "b" was the least recently used
    (False, True, 2)
    >>> Recent[str, int](0).put("a", 1)  # size 0 keeps nothing
    """

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Key, Value] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: Key) -> Value | None:
        """The value kept for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Key, value: Value) -> None:
        """Keep ``value`` for ``key``, forgetting the least recently used beyond ``size``."""
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
