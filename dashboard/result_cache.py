"""The results kept for later visitors of the same settings: an LRU whose total pickled size stays within a byte
budget (``GDLAB_CACHE_MB``, default 256), and the process-wide torch settings a cached run must not have seen change.
No Streamlit here; ``dashboard/scheduler.py`` stores into it only what finished without interference."""
from __future__ import annotations

import pickle
import threading
from collections import OrderedDict

import torch


def result_bytes(value) -> int:
    """The size of a result as stored (its pickle), in bytes."""
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class ByteCache:
    """LRU of key -> value whose total size (``result_bytes``) stays within ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value, size: int | None = None) -> bool:
        """Store (evicting the least recently used); False if the value alone is above the budget."""
        size = result_bytes(value) if size is None else size
        if size > self.budget:
            return False
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            while self._items and self.bytes + size > self.budget:
                _, (_, s) = self._items.popitem(last=False)
                self.bytes -= s
            self._items[key] = (value, size)
            self.bytes += size
            return True

    def __len__(self) -> int:
        return len(self._items)


def global_state() -> tuple:
    """Process-wide torch settings a concurrent run must not see change."""
    return torch.get_default_dtype(), torch.get_num_threads()
