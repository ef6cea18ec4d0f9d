"""Password hashing: argon2id, with its parameters stored in each hash.

The encoded hash (``$argon2id$v=19$m=65536,t=3,p=4$salt$hash``) carries its
own parameters, so they can be raised later: :func:`needs_rehash` tells
when a stored hash is weaker than today's, and the server re-hashes it at
the next successful login.

Verifying costs about 0.1 s and 64 MiB here. At most
``CONCURRENT_VERIFICATIONS`` run at once, so a burst of logins queues
instead of taking gigabytes of memory.
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CONCURRENT_VERIFICATIONS = 4

_hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters
_slots = threading.BoundedSemaphore(CONCURRENT_VERIFICATIONS)

#: Verified against when the user does not exist, so that a wrong user name
#: costs the same time as a wrong password and the two cannot be told apart.
#: A constant, made once by ``_hasher.hash("sockftp: no such user")``: hashing
#: it at import cost every command-line start 0.1-0.8 s of argon2, client
#: commands included. Its parameters must stay those of ``_hasher`` (a test
#: checks), so that verifying against it costs what a real hash costs.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$QN/wnpuQLYzFNlEOPUsbcA$INAoeDjDApYtyIOLYzoukQa5iRYl0XkztFxUGkMFW4c"


def _utf8(password: str) -> bytes:
    # A password may hold lone surrogates: JSON can carry them, and an FTP
    # line that is not UTF-8 is decoded with surrogateescape. argon2 would
    # encode strictly and raise; this encodes every string, the same way
    # for hashing and for checking, so such a password is merely wrong.
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    with _slots:
        return _hasher.hash(_utf8(password))


def verify_password(encoded: str | None, password: str) -> bool:
    """True if *password* matches *encoded*. Always does the full work, in
    constant time, even when *encoded* is None (no such user)."""
    with _slots:
        try:
            _hasher.verify(encoded or _DUMMY_HASH, _utf8(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    return encoded is not None


def needs_rehash(encoded: str) -> bool:
    try:
        return _hasher.check_needs_rehash(encoded)
    except InvalidHashError:
        return True
