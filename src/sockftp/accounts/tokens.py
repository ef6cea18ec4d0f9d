"""Re-login tokens: random bearer secrets that log a user in without argon2.

A token is ``sockftp_`` followed by 43 url-safe base64 characters: 256
random bits from :mod:`secrets`. The prefix lets people and secret
scanners recognise a leaked one. Stores keep only :func:`token_hash`, the
SHA-256 of the token, in hex. SHA-256 is enough here, where a password
needs argon2: a token has 256 bits of entropy, so there is no dictionary
to try and no way to search for a preimage. A stolen database therefore
gives no usable token. Lookups go by hash (an index), so how long one takes
says nothing about how close a guess was.

:func:`token_id` is a short public name of a token (the start of its
hash), for the audit log and ``sockftp user tokens``: it identifies a
token without revealing it.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "sockftp_"
RANDOM_BYTES = 32  # 256 bits
ID_LENGTH = 12  # hex digits of the hash in token_id


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(RANDOM_BYTES)


def token_hash(token: str) -> str:
    """The hex SHA-256 of *token*, which is what stores keep and look up.
    Any string has one, even one holding lone surrogates (JSON allows
    them): it is simply no token's hash."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id(hashed: str) -> str:
    return hashed[:ID_LENGTH]


__all__ = ["PREFIX", "new_token", "token_hash", "token_id"]
