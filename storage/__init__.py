"""The portable data layer: one small SQL interface over SQLite (default) and PostgreSQL."""

from .sql import (
    Conflict,
    Database,
    DatabaseError,
    Migration,
    Tx,
    open_database,
)

__all__ = ["Conflict", "Database", "DatabaseError", "Migration", "Tx", "open_database"]
