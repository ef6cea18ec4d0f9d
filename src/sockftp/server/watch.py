"""Account changes reach open sessions: a server reads again the accounts
of the users it has sessions of when the account store notifies a change
(PostgreSQL: LISTEN/NOTIFY, within a fraction of a second on every node),
and every ``ACCOUNT_POLL`` seconds in any case; every ``ACCOUNT_REFRESH``
seconds when the store cannot notify (SQLite) or its listener is down.

An admin's ``sockftp user set``, ``del`` or ``passwd``-less changes are
written to the account store, which several servers may share; a server
used to see them only at each user's next login. Now, on every server:

* a deleted or disabled account's sessions are refused every command
  (:meth:`sockftp.server.session.Session.require_login`);
* read-only on or off applies to the next write
  (:meth:`~sockftp.server.session.Session.require_write`);
* new limits apply to the next upload (in the store's reservations they
  apply at once: see :mod:`.leases`; this copies them into the ledger
  too, for the quota reply and the memory path).

The state lives on the user's :class:`~sockftp.server.quota.QuotaLedger`,
shared by all of that user's sessions on this server. One indexed read
per user with sessions open, per round.
"""

from __future__ import annotations

import logging
import threading
import time

from ..accounts import StoreError, UserStore

log = logging.getLogger("sockftp.auth")

#: Seconds between two reads of the logged-in users' accounts when the
#: store does not notify changes (or cannot now).
ACCOUNT_REFRESH = 2.0
#: Seconds between two reads when it does: a fallback, should a
#: notification be lost.
ACCOUNT_POLL = 30.0
#: Seconds a wait for a notification lasts at most, so that close() is quick.
_SLICE = 0.5


class AccountWatcher:
    def __init__(self, registry, users: UserStore, interval: float = ACCOUNT_REFRESH, poll: float = ACCOUNT_POLL):
        self.registry = registry  # a QuotaRegistry: the ledgers of users with sessions
        self.users = users
        self.interval = interval
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="accounts", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        listener = self.users.listen()
        try:
            if listener is None:
                while not self._stop.wait(self.interval):
                    self._round()
                return
            due = time.monotonic() + self.poll
            while not self._stop.is_set():
                try:
                    changed = listener.wait(max(0.0, min(_SLICE, due - time.monotonic())))
                except StoreError as exc:
                    log.debug("account changes not notified now (polled meanwhile): %s", exc)
                    if self._stop.wait(self.interval):
                        return
                    changed = True
                if changed or time.monotonic() >= due:
                    self._round()
                    due = time.monotonic() + self.poll
        finally:
            if listener is not None:
                listener.close()

    def _round(self) -> None:
        try:
            self.refresh()
        except StoreError as exc:
            log.debug("account changes not read this round: %s", exc)
        except Exception:  # noqa: BLE001 - the watcher must outlive any bug of one round
            log.exception("reading account changes failed")

    def refresh(self) -> None:
        """Read the accounts of the users with sessions here, once."""
        for ledger in self.registry.active():
            account = self.users.get(ledger.name)
            if account is None or account.disabled:
                if ledger.gone is None:
                    log.warning("%s: the account was %s; its sessions are refused", ledger.name, _why(account))
                ledger.gone = f"the account {ledger.name} was {_why(account)}"
                continue
            ledger.gone = None
            ledger.read_only = account.read_only
            ledger.quota_bytes = account.quota_bytes
            ledger.max_files = account.max_files


def _why(account) -> str:
    return "deleted" if account is None else "disabled"


__all__ = ["ACCOUNT_POLL", "ACCOUNT_REFRESH", "AccountWatcher"]
