"""Event counting in Redis without ever making a request wait for it (see facade.py).

The proxy uses ``Store`` and the event types; ``EmbeddedValkey`` is started by the main
process when no ``store.url`` is configured. Every Redis key is named in keys.py and listed
in KEYSPACE.md.
"""

from proxy.store.client import StoreUnavailable, translated
from proxy.store.embedded import EmbeddedStoreError, EmbeddedValkey
from proxy.store.events import Event, PageView, utc_day
from proxy.store.facade import DEGRADED, OK, Store, StoreStats
from proxy.store.keys import DEFAULT_PREFIX, Keyspace

__all__ = [
    "DEFAULT_PREFIX", "DEGRADED", "OK", "EmbeddedStoreError", "EmbeddedValkey", "Event",
    "Keyspace", "PageView", "Store", "StoreStats", "StoreUnavailable", "translated", "utc_day",
]
