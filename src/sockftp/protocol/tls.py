"""TLS for sockftp: the contexts server and client use, and telling TLS from plaintext.

Both sides use the standard library's :mod:`ssl`, TLS 1.2 or later. The
framing inside TLS is exactly the plaintext one. The server builds its
context once at startup and wraps each connection in the session's own
thread (:func:`handshake`, under a deadline), never in the accept loop, so
a slow or silent client cannot hold up the others.

A TLS client opens with a handshake record, whose first byte is 0x16 and
second 0x03 (:func:`looks_like_tls`); a sockftp frame opens with a
little-endian length, which can start that way only for lengths the server
refuses anyway. So each side notices the other speaking the wrong
protocol at the first bytes, instead of both waiting for a timeout.

This module never reads or writes application data.
"""

from __future__ import annotations

import select
import ssl
import time

#: The first byte of a TLS handshake record (content type 22), and the
#: major version byte that follows it (3 for SSL 3.0 up to TLS 1.3).
HANDSHAKE_RECORD = 0x16
RECORD_VERSION_MAJOR = 0x03


class TlsSetupError(ValueError):
    """The certificate, key or CA file cannot be used."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's context: TLS 1.2 or later, with *cert* and its *key*.

    *cert* is a PEM file holding the certificate, optionally followed by
    the intermediate certificates of its chain; *key* the PEM private key.

    Raises:
        TlsSetupError: a file is missing or unreadable, not PEM, or the key
            does not belong to the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A connection whose read side ends without TLS's close_notify (a client
    # that just closes, or the server's own shutdown waking an idle
    # session) reads as a plain end of stream, and the session can still
    # send its goodbye frame. OpenSSL 3 would otherwise make that EOF a fatal
    # error. Truncation is no risk here: frames carry their lengths, and
    # uploads their checksums.
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    for path in (cert, key):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsSetupError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise TlsSetupError(f"TLS key {key} does not belong to certificate {cert}") from None
        raise TlsSetupError(f"cannot load TLS certificate {cert} with key {key}: {_describe(exc)}") from None
    except OSError as exc:
        raise TlsSetupError(f"cannot read TLS certificate {cert} or key {key}: {exc.strerror or exc}") from None
    return context


def client_context(ca: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The client's context: TLS 1.2 or later, verifying the server.

    By default the server's certificate must chain to a CA the system
    trusts and name the host connected to. *ca* (a PEM file) is trusted
    as well, for a private CA or a self-signed certificate. *insecure*
    accepts any certificate: the connection is encrypted but the server
    unauthenticated.

    Raises:
        TlsSetupError: *ca* is missing or holds no certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if ca is not None:
            try:
                context.load_verify_locations(cafile=ca)
            except ssl.SSLError as exc:
                raise TlsSetupError(f"cannot use CA file {ca}: {_describe(exc)}") from None
            except OSError as exc:
                raise TlsSetupError(f"cannot read CA file {ca}: {exc.strerror or exc}") from None
    return context


def looks_like_tls(opening: bytes) -> bool:
    """True if *opening*, the first byte or two a peer sent, start a TLS record."""
    if not opening or opening[0] != HANDSHAKE_RECORD:
        return False
    return len(opening) < 2 or opening[1] == RECORD_VERSION_MAJOR


def handshake(sock: ssl.SSLSocket, timeout: float) -> None:
    """Complete the handshake of *sock* (wrapped with
    ``do_handshake_on_connect=False``) within *timeout* seconds in all.

    A socket timeout bounds each wait, not their sum: a client trickling its
    handshake a byte at a time would hold the session for as long as it
    liked. Here the deadline is for the whole handshake. *sock* is left
    non-blocking; give it its timeout afterwards.

    Raises:
        TimeoutError: the deadline passed.
        ssl.SSLError, OSError: the handshake failed.
    """
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    poller = select.poll()
    fd = sock.fileno()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            events = select.POLLIN
        except ssl.SSLWantWriteError:
            events = select.POLLOUT
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"TLS handshake not complete within {timeout:g} s")
        poller.register(fd, events)
        try:
            ready = poller.poll(left * 1000)
        finally:
            poller.unregister(fd)
        if not ready:
            raise TimeoutError(f"TLS handshake not complete within {timeout:g} s")


def describe_error(exc: BaseException) -> str:
    """One line saying why a handshake failed, for a log or an error message."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or _describe(exc)
    if isinstance(exc, ssl.SSLError):
        return _describe(exc)
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def _describe(exc: ssl.SSLError) -> str:
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" reads
    # better as its reason, in lower case: "wrong version number".
    if exc.reason:
        return exc.reason.replace("_", " ").lower()
    return str(exc.args[1] if len(exc.args) > 1 else exc)
