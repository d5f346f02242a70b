"""Counters that rules (rate limits, budgets) keep, behind one interface.

`CounterStore` is what a rule may ask of a store: add to a counter for the current window only
if the sum stays within a limit, in one atomic step, and read it back. Deciding from a read
and then writing would let concurrent requests (or several proxies) all pass the check, so the
interface has no separate "check" call at all. `MemoryCounterStore` serves one process and the
unit tests; shared stores (SQLite for workers on one machine, Redis for several proxies)
implement the same protocol.
"""

from llamakey.store.counters import Admission, CounterStore, MemoryCounterStore, Window

__all__ = ["Admission", "CounterStore", "MemoryCounterStore", "Window"]
