"""Logging in and protecting the control connection: USER, PASS, QUIT, AUTH, PBSZ, PROT.

The only commands that decide who a connection is and whether it is
encrypted, so RFC 2577's limits on failed logins and the rule "no
password in clear when TLS is required" live here together. Logins go
only through the session's authenticator (bans, failure delays, the
dummy hash), never around it; this module must never say whether a user
name exists.
"""

from __future__ import annotations

from ...accounts.tokens import PREFIX as TOKEN_PREFIX
from ...protocol.errors import AuthFailed, Banned
from ...server.session import ANONYMOUS
from ..replies import Reply
from .base import REQUIRED, Context, Refusal, command

#: Failed logins one control connection may make before it is closed
#: (RFC 2577 section 4). The ban list counts them per address as well.
MAX_LOGIN_FAILURES = 3


# -- logging in -------------------------------------------------------------------------------


@command("USER", needs_login=False, argument=REQUIRED, syntax="USER name")
def user(ctx: Context, argument: str) -> Reply:
    if ctx.settings.require_tls and not ctx.state.tls:
        raise Refusal(Reply(534, "This server requires TLS: send AUTH TLS first"), "tls_required")
    ctx.session.logout()  # USER starts a new login (RFC 959)
    ctx.state.user = argument
    # The same reply whatever the name (RFC 2577): it says nothing about
    # which names exist.
    return Reply(331, "Password required")


@command("PASS", needs_login=False, syntax="PASS password")
def pass_(ctx: Context, argument: str) -> Reply:
    name, ctx.state.user = ctx.state.user, None
    if name is None:
        raise Refusal(Reply(503, "Send USER first"))
    if name == ANONYMOUS and ctx.settings.anonymous:
        ctx.session.login(ctx.link.anonymous_identity())
        return Reply(230, "Anonymous access granted")
    # A re-login token works as a password: scripts need not hold the
    # password, and a login by token costs no argon2 check.
    credentials = {"token": argument} if argument.startswith(TOKEN_PREFIX) else {"password": argument}
    try:
        identity = ctx.session.authenticate(name, **credentials).identity
    except AuthFailed:
        # The authenticator has already waited its failure delay and counted
        # the failure against the address; here it counts against the connection.
        ctx.state.failed_logins += 1
        ctx.result = "auth_failed"
        if ctx.state.failed_logins >= MAX_LOGIN_FAILURES:
            ctx.close = True
            return Reply(421, "Too many failed logins; closing the connection")
        return Reply(530, "Login incorrect")
    except Banned as exc:
        ctx.close = True
        ctx.result = "banned"
        return Reply(421, exc.message)
    return Reply(230, f"User {identity.name} logged in")


@command("QUIT", needs_login=False, syntax="QUIT")
def quit_(ctx: Context, argument: str) -> Reply:
    ctx.close = True
    return Reply(221, "Goodbye")


# -- TLS (RFC 2228, RFC 4217) -------------------------------------------------------------------


@command("AUTH", needs_login=False, argument=REQUIRED, syntax="AUTH TLS")
def auth(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() not in ("TLS", "TLS-C", "SSL", "TLS-P"):
        raise Refusal(Reply(504, "AUTH takes TLS"))
    if not ctx.settings.tls_available:
        raise Refusal(Reply(502, "TLS is not configured on this server"), "unsupported")
    if ctx.state.tls:
        raise Refusal(Reply(503, "The control connection already uses TLS"))
    ctx.after = ctx.link.start_tls
    return Reply(234, "AUTH TLS successful")


@command("PBSZ", needs_login=False, argument=REQUIRED, syntax="PBSZ 0")
def pbsz(ctx: Context, argument: str) -> Reply:
    if not ctx.state.tls:
        raise Refusal(Reply(503, "PBSZ needs a TLS control connection: send AUTH TLS first"))
    ctx.state.pbsz = True
    return Reply(200, "PBSZ=0")


@command("PROT", needs_login=False, argument=REQUIRED, syntax="PROT P | PROT C")
def prot(ctx: Context, argument: str) -> Reply:
    level = argument.strip().upper()
    if not ctx.state.tls:
        raise Refusal(Reply(503, "PROT needs a TLS control connection: send AUTH TLS first"))
    if level == "P":
        if not ctx.state.pbsz:
            raise Refusal(Reply(503, "Send PBSZ 0 before PROT P"))
        ctx.state.protect = True
        return Reply(200, "Data connections will be protected (TLS)")
    if level == "C":
        if ctx.settings.require_tls:
            raise Refusal(Reply(534, "This server requires TLS on data connections: use PROT P"), "tls_required")
        ctx.state.protect = False
        return Reply(200, "Data connections will be clear")
    if level in ("S", "E"):
        raise Refusal(Reply(536, f"PROT {level} is not supported: use P"))
    raise Refusal(Reply(504, "PROT takes P or C"))
