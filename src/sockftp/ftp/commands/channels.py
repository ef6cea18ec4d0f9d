"""How the next data connection is made: PASV, EPSV, PORT, EPRT, and opening it.

RFC 2577's checks on PORT and EPRT (the client's own host, no privileged
port) are taken here; the sockets are not: listening and connecting are
the :class:`~sockftp.ftp.commands.base.Link`'s, and moving bytes is
:mod:`sockftp.ftp.data`'s. :func:`_open_data` is what the listing and
transfer commands call to say 150 and get their data connection.
"""

from __future__ import annotations

import logging

from .. import parser
from ..data import DataConnection, DataError
from ..replies import Reply
from .base import NONE, REQUIRED, Context, Refusal, command

log = logging.getLogger("sockftp.ftp")


# -- data connections ------------------------------------------------------------------------------------------


@command("PASV", argument=NONE)
def pasv(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    host = ctx.settings.masquerade or ctx.link.local
    if ":" in host:
        raise Refusal(Reply(501, "PASV cannot announce an IPv6 address: use EPSV"))
    port = _listen(ctx)
    return Reply(227, parser.format_pasv(host, port))


@command("EPSV", syntax="EPSV [1 | 2 | ALL]")
def epsv(ctx: Context, argument: str) -> Reply:
    word = argument.strip().upper()
    if word == "ALL":
        ctx.state.epsv_all = True
        return Reply(200, "EPSV ALL: only EPSV from now on")
    if word:
        ours = 2 if ":" in ctx.link.local else 1
        if word not in ("1", "2"):
            raise Refusal(Reply(501, "EPSV takes 1, 2 or ALL"))
        if int(word) != ours:
            raise Refusal(Reply(522, f"Network protocol not supported, use ({ours})"))
    return Reply(229, parser.format_epsv(_listen(ctx)))


@command("PORT", argument=REQUIRED, syntax="PORT h1,h2,h3,h4,p1,p2")
def port(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    if ":" in ctx.link.local:
        raise Refusal(Reply(522, "Network protocol not supported, use (2)"))
    host, number = parser.parse_port(argument)
    _check_active_address(ctx, host, number)
    ctx.link.active(host, number)
    return Reply(200, "PORT command successful")


@command("EPRT", argument=REQUIRED, syntax="EPRT |protocol|address|port|")
def eprt(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    version, host, number = parser.parse_eprt(argument)
    ours = 6 if ":" in ctx.link.local else 4
    if version != ours:
        raise Refusal(Reply(522, f"Network protocol not supported, use ({2 if ours == 6 else 1})"))
    _check_active_address(ctx, host, number)
    ctx.link.active(host, number)
    return Reply(200, "EPRT command successful")


def _check_active_address(ctx: Context, host: str, number: int) -> None:
    """RFC 2577: data goes only to the client's own host, never to a
    privileged port (no bouncing to a third host, no faking a service)."""
    if not parser.same_host(host, ctx.link.peer):
        log.warning("%s asked for a data connection to %s; refused", ctx.link.peer, host)
        raise Refusal(Reply(501, "Data connections go only to your own address"), "permission_denied")
    if number < 1024:
        raise Refusal(Reply(501, "Data connections to privileged ports (below 1024) are refused"), "permission_denied")


def _refuse_after_epsv_all(ctx: Context) -> None:
    if ctx.state.epsv_all:
        raise Refusal(Reply(503, "After EPSV ALL only EPSV is accepted"))


def _listen(ctx: Context) -> int:
    try:
        return ctx.link.passive()
    except DataError as exc:
        raise Refusal(Reply(425, str(exc)), "connection_lost") from None


def _open_data(ctx: Context, text: str) -> DataConnection:
    """Say 150, then open the transfer's data connection."""
    if ctx.settings.require_tls and not ctx.state.protect:
        raise Refusal(Reply(534, "This server requires TLS on data connections: send PBSZ 0 and PROT P"))
    if not ctx.link.data_ready:
        raise Refusal(Reply(425, "Use PASV, EPSV, PORT or EPRT first"), "connection_lost")
    ctx.link.reply(Reply(150, text))
    try:
        return ctx.link.open_data(ctx.state.protect)
    except DataError as exc:
        raise Refusal(Reply(425, f"Cannot open the data connection: {exc}"), "connection_lost") from None
