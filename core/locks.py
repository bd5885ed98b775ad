"""Named transaction-scoped locks that serialise one kind of write."""

import zlib

from django.db import connection, transaction


def transaction_lock(name: str) -> None:
    """Hold a lock called `name` until the current transaction ends.

    PostgreSQL: a transaction-level advisory lock. SQLite: every write
    transaction already holds the database's single write lock (settings
    open them IMMEDIATE), so there is nothing more to take.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transaction_lock must be taken inside transaction.atomic()")
    if connection.vendor == "postgresql":
        key = zlib.crc32(name.encode()) - 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
