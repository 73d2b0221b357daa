"""The Redis backend (``redis://``, ``rediss://``, ``unix://``): for many worker hosts.

See ``docs/redis.md`` for durability settings, the eviction check and Cluster.
"""

from __future__ import annotations

from .backend import RedisBackend

__all__ = ["RedisBackend"]
