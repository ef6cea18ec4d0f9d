"""The records of the HTTP door's tus uploads, kept in the account store.

A tus upload's record (its target, length, metadata, checksum, expiry:
http/tus_store.py) must be readable by every node: behind a balancer, the
PATCH that resumes an upload may reach another node than its creation,
above all after that node died. Its bytes are the storage's partial, which
every node sharing the storage sees; the record lives here, beside the
multipart records, in the database every node shares. One writer at a
time is the storage upload's business (its lease, or its lock on a local
disk); a record is written whole, so two nodes touching it leave one or
the other, never a mix.

Both stores get these methods from :class:`TusRecords`, over the
statements in :mod:`sockftp.accounts.schema`. The HTTP door calls them by
name on the store it is given.
"""

from __future__ import annotations

from . import schema


class TusRecords:
    """Mixed into a store that has ``_transaction()`` and ``_sql()`` (as
    :class:`~sockftp.accounts.multipart.MultipartRecords` needs)."""

    def save_tus(self, upload_id: str, user: str, record: str, expires: float) -> None:
        """Write upload *upload_id*'s *record* (JSON text) whole."""
        params = {"id": upload_id, "user": user, "record": record, "expires": expires}
        with self._transaction() as db:
            db.execute(self._sql(schema.TUS_SAVE), params)

    def load_tus(self, upload_id: str) -> str | None:
        """Upload *upload_id*'s record; None if there is none."""
        with self._transaction() as db:
            row = db.execute(self._sql(schema.TUS_LOAD), {"id": upload_id}).fetchone()
        return None if row is None else row[0]

    def forget_tus(self, upload_id: str) -> None:
        with self._transaction() as db:
            db.execute(self._sql(schema.TUS_FORGET), {"id": upload_id})

    def expired_tus(self, now: float) -> list[str]:
        """The ids of the uploads expired at *now*."""
        with self._transaction() as db:
            return [row[0] for row in db.execute(self._sql(schema.TUS_EXPIRED), {"now": now}).fetchall()]
