"""What the dispatch and console features need of the hub's store.

The schema lives in ``hub/store.py`` (its ordered ``MIGRATIONS``); each feature keeps
the SQL for its own tables next to its service and reaches SQLite through this
protocol, so nothing here imports ``hub`` (which sits above, as the composition root).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol


class Database(Protocol):
    """``hub.store.Store`` as the features see it."""

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[sqlite3.Row]:
        """The rows of one read statement."""
        ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it."""
        ...
