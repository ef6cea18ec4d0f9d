"""The state of an object store's resumable uploads, kept in the account store.

An object store (``storage/s3.py``) cannot lock an upload or read back the
parts of an unfinished one, and the next attempt of an upload may land on
another node. So what an upload holds lives here, in the database every
node shares: its multipart upload id, each part recorded only once the
store has it, and a lease with a generation number so that exactly one
writer holds it. Both stores (SQLite on one node, PostgreSQL across nodes)
get these methods from :class:`MultipartRecords`, over the statements in
:mod:`sockftp.accounts.schema`.

The storage calls these methods by name on whatever store it is handed;
it never imports this package (see tests/test_layout.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import schema


@dataclass(frozen=True)
class PartRecord:
    number: int
    size: int
    etag: str
    hash: str


@dataclass(frozen=True)
class UploadRecord:
    """One object key's upload, as a claim or a look found it."""

    generation: int
    upload_id: str | None  # the open multipart upload; None: none
    size: int | None  # announced; None: unknown
    base: int  # bytes of the sealed partial object
    copied: int  # bytes of it that the open upload's first parts copy
    lease_until: float
    touched: float
    parts: list[PartRecord] = field(default_factory=list)

    @property
    def run(self) -> list[PartRecord]:
        """The parts from part 1 with no gap: what a resume counts on.
        Several parts travel at once, so a crash may leave a later part
        recorded and an earlier one not."""
        run: list[PartRecord] = []
        for part in self.parts:  # in order of number
            if part.number != len(run) + 1:
                break
            run.append(part)
        return run

    @property
    def in_parts(self) -> int:
        return sum(part.size for part in self.run)

    @property
    def held(self) -> int:
        """Bytes a resume may count on. The open upload's parts hold them
        once they hold all they copy of the sealed partial (they are
        recorded in order: the copies first); before that, that partial."""
        in_parts = self.in_parts
        return in_parts if in_parts and in_parts >= self.copied else self.base


class MultipartRecords:
    """Mixed into a store that has ``_transaction()`` and ``_connection()``
    context managers yielding a DB-API connection; ``_sql`` gives a shared
    statement in that database's placeholders."""

    def _sql(self, statement: str) -> str:
        return statement

    def _record(self, db, key: str, row) -> UploadRecord:
        parts = [PartRecord(*p) for p in db.execute(self._sql(schema.MP_PARTS), {"key": key}).fetchall()]
        return UploadRecord(*row, parts)

    def claim_upload(self, key: str, owner: str, until: float, now: float) -> UploadRecord | None:
        """Take the lease of *key*'s upload (a row is made if there is
        none) until *until*, as *owner*: its record under the new
        generation, or None if another holds a live lease."""
        with self._transaction() as db:
            db.execute(self._sql(schema.MP_INSERT), {"key": key, "owner": owner, "now": now})
            row = db.execute(
                self._sql(schema.MP_CLAIM), {"key": key, "owner": owner, "until": until, "now": now}
            ).fetchone()
            return None if row is None else self._record(db, key, row)

    def peek_upload(self, key: str) -> UploadRecord | None:
        """*key*'s upload as it is, without claiming it; None if none."""
        with self._transaction() as db:
            row = db.execute(self._sql(schema.MP_SELECT), {"key": key}).fetchone()
            return None if row is None else self._record(db, key, row)

    def record_part(self, key: str, generation: int, part: PartRecord, until: float, now: float) -> bool:
        """Record a part the store holds now, and renew the lease; False
        (nothing recorded) if *generation* lost the lease meanwhile."""
        with self._transaction() as db:
            params = {"key": key, "generation": generation, "until": until, "now": now}
            if db.execute(self._sql(schema.MP_TOUCH), params).rowcount != 1:
                return False
            values = {"key": key, "number": part.number, "size": part.size, "etag": part.etag, "hash": part.hash}
            db.execute(self._sql(schema.MP_RECORD_PART), values)
            return True

    def set_upload(self, key: str, generation: int, state: dict, now: float, drop_parts: bool) -> bool:
        """Set what *key*'s upload holds (*state*: ``upload_id``, ``size``,
        ``base``, ``copied``), dropping its part records with *drop_parts*;
        False if *generation* lost the lease."""
        with self._transaction() as db:
            params = {"key": key, "generation": generation, **state}
            if db.execute(self._sql(schema.MP_SET), {**params, "now": now}).rowcount != 1:
                return False
            if drop_parts:
                db.execute(self._sql(schema.MP_DROP_PARTS), {"key": key})
            return True

    def renew_upload(self, key: str, generation: int, until: float) -> bool:
        with self._transaction() as db:
            params = {"key": key, "generation": generation, "until": until}
            return db.execute(self._sql(schema.MP_RENEW), params).rowcount == 1

    def release_upload(self, key: str, generation: int) -> bool:
        """Let the lease go (the partial stays for a resume)."""
        with self._transaction() as db:
            params = {"key": key, "generation": generation}
            return db.execute(self._sql(schema.MP_RELEASE), params).rowcount == 1

    def forget_upload(self, key: str, generation: int) -> bool:
        """Drop *key*'s record and its parts (committed, or discarded)."""
        with self._transaction() as db:
            params = {"key": key, "generation": generation}
            if db.execute(self._sql(schema.MP_FORGET), params).rowcount != 1:
                return False
            db.execute(self._sql(schema.MP_DROP_PARTS), {"key": key})
            return True

    def expired_uploads(self, prefix: str, cutoff: float, now: float) -> list[str]:
        """Keys under *prefix* whose lease is free and that nothing touched since *cutoff*."""
        with self._transaction() as db:
            params = {"prefix": prefix, "length": len(prefix), "cutoff": cutoff, "now": now}
            return [row[0] for row in db.execute(self._sql(schema.MP_EXPIRED), params).fetchall()]

    def held_in_parts(self, prefix: str) -> int:
        """Bytes of the recorded parts of every upload under *prefix*."""
        with self._transaction() as db:
            params = {"prefix": prefix, "length": len(prefix)}
            return int(db.execute(self._sql(schema.MP_HELD), params).fetchone()[0])

    def uploads_under(self, prefix: str) -> list[str]:
        """Keys under *prefix* with an upload kept or under way."""
        with self._transaction() as db:
            params = {"prefix": prefix, "length": len(prefix)}
            return [row[0] for row in db.execute(self._sql(schema.MP_UNDER), params).fetchall()]
