"""
The delivery domain: the loop (`loop.py`), the exchange every platform call
passes through (`exchange.py`), status polling (`polling.py`), SMS codes
(`confirm.py`), the retry decisions (`retry.py`) and the shared limiter
(`limiter.py` and its Lua scripts).

This package's `__init__` imports nothing, so the pure decisions
(`retry.py`) load without the ledger or Redis.
"""
