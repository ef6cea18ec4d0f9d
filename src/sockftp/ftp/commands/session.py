"""Commands about the session itself, answered on the control connection.

NOOP, SYST, CLNT, FEAT, OPTS, HELP, STAT, TYPE, MODE, STRU, ALLO, ACCT and
ABOR: what the server supports, the connection's settings and status.
None of them touches a file (STAT with a path lists through the listing
commands' helpers) or opens a data connection.
"""

from __future__ import annotations

from .. import listing, parser
from ..replies import Reply
from .base import COMMANDS, HASHES, NONE, REQUIRED, Context, Refusal, command
from .listings import _entries, _list_line

# -- the session ------------------------------------------------------------------------------------


@command("NOOP", needs_login=False, argument=NONE)
def noop(ctx: Context, argument: str) -> Reply:
    return Reply(200, "OK")


@command("SYST", needs_login=False, argument=NONE)
def syst(ctx: Context, argument: str) -> Reply:
    return Reply(215, "UNIX Type: L8")


@command("CLNT", needs_login=False)
def clnt(ctx: Context, argument: str) -> Reply:
    return Reply(200, "Noted")


@command("FEAT", needs_login=False, argument=NONE)
def feat(ctx: Context, argument: str) -> Reply:
    features = ["EPRT", "EPSV", "MDTM", "MFMT", "REST STREAM", "SIZE", "TVFS", "UTF8"]
    features.append(listing.feat_line(ctx.state.facts))
    features.append("HASH " + ";".join(name + ("*" if name == ctx.state.hash else "") for name in HASHES))
    if ctx.settings.tls_available:
        features += ["AUTH TLS", "PBSZ", "PROT"]
    return Reply(211, "Features:", *(" " + feature for feature in sorted(features)), "End")


@command("OPTS", needs_login=False, argument=REQUIRED, syntax="OPTS UTF8 ON | OPTS MLST facts | OPTS HASH [name]")
def opts(ctx: Context, argument: str) -> Reply:
    option, _, value = argument.strip().partition(" ")
    option = option.upper()
    if option == "UTF8":
        return Reply(200, "UTF-8 is always on")
    if option == "MLST":
        ctx.state.facts = listing.select_facts(value)
        return Reply(200, "MLST OPTS " + "".join(fact + ";" for fact in ctx.state.facts))
    if option == "HASH":
        if value.strip():
            name = value.strip().upper()
            if name not in HASHES:
                raise Refusal(Reply(501, "Unknown algorithm, current selection not changed"))
            ctx.state.hash = name
        return Reply(200, ctx.state.hash)
    raise Refusal(Reply(501, f"Unknown option {option[:16]}"))


@command("HELP", needs_login=False, syntax="HELP [command]")
def help_(ctx: Context, argument: str) -> Reply:
    name = argument.strip().upper()
    if name:
        verb = COMMANDS.get(name)
        if verb is None:
            raise Refusal(Reply(502, f"Unknown command {name[:16]}"))
        return Reply(214, f"Syntax: {verb.syntax}")
    names = sorted(COMMANDS)
    rows = [" ".join(f"{n:<5}" for n in names[i : i + 10]).rstrip() for i in range(0, len(names), 10)]
    return Reply(214, "The following commands are recognized:", *rows, "Help OK")


@command("STAT", syntax="STAT [path]")
def stat(ctx: Context, argument: str) -> Reply:
    if argument.strip():
        entries, _ = _entries(ctx, argument)
        lines = [_list_line(ctx, entry) for entry in entries]
        return Reply(213, f"Status of {argument}:", *lines, "End of status")
    identity = ctx.session.identity
    lines = [
        "sockftp FTP server status:",
        f"Connected to {ctx.link.peer}",
        f"Logged in as {identity.name}" + ("" if identity.can_write else " (read-only)"),
        f"TYPE: {'ASCII' if ctx.state.type == 'A' else 'BINARY'}, STRUcture: File, MODE: Stream",
        f"Control connection: {'TLS' if ctx.state.tls else 'clear'}; "
        f"data connections: {'TLS' if ctx.state.protect else 'clear'}",
    ]
    return Reply(211, *lines, "End of status")


@command("TYPE", argument=REQUIRED, syntax="TYPE A | TYPE I")
def type_(ctx: Context, argument: str) -> Reply:
    ctx.state.type = parser.parse_type(argument)
    return Reply(200, f"Type set to {ctx.state.type}")


@command("MODE", argument=REQUIRED, syntax="MODE S")
def mode(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() != "S":
        raise Refusal(Reply(504, "Only MODE S (stream) is supported"))
    return Reply(200, "Mode set to S")


@command("STRU", argument=REQUIRED, syntax="STRU F")
def stru(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() != "F":
        raise Refusal(Reply(504, "Only STRU F (file) is supported"))
    return Reply(200, "Structure set to F")


@command("ALLO", syntax="ALLO size [R record-size]")
def allo(ctx: Context, argument: str) -> Reply:
    # Nothing to allocate ahead, but a client that announces a size learns
    # now, not after the bytes, that the disk cannot take them (452).
    words = argument.split()
    if not words or not words[0].isdigit():
        return Reply(501, "ALLO needs a size in bytes")
    ctx.storage.check_space(int(words[0]))
    return Reply(202, "No storage allocation necessary; there is room")


@command("ACCT", needs_login=False, syntax="ACCT account")
def acct(ctx: Context, argument: str) -> Reply:
    return Reply(202, "No account necessary")


@command("ABOR", needs_login=False, argument=NONE)
def abor(ctx: Context, argument: str) -> Reply:
    # A transfer's ABOR is answered by the transfer (see ftp/data.py); this one
    # came between transfers.
    return Reply(225, "No transfer to abort")
