"""File transfers over a data connection: REST, RETR, STOR and APPE.

Where a transfer starts (REST, and :func:`open_upload`'s choice between a
held partial and the stored file) and how an upload becomes visible: only
whole, at once, after the data connection ends well. An upload cut short
must never leave a visible file, only a hidden partial that REST + STOR
or APPE resumes.
"""

from __future__ import annotations

from ...protocol import checksum as checksums
from ...protocol.errors import NotFound, OffsetMismatch, QuotaExceeded
from ...protocol.paths import RemotePath
from ...storage import Storage, Upload
from .. import parser
from ..replies import Reply
from .base import REQUIRED, Context, command
from .channels import _open_data

# -- transfers ---------------------------------------------------------------------------------------------------


@command("REST", argument=REQUIRED, syntax="REST offset")
def rest(ctx: Context, argument: str) -> Reply:
    ctx.state.rest = parser.parse_rest(argument)
    return Reply(350, f"Restarting at {ctx.state.rest}: send STOR, APPE or RETR")


@command("RETR", argument=REQUIRED, syntax="RETR path")
def retr(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument, audit="get")
    offset = ctx.state.take_rest()
    with ctx.storage.open_read(target) as download:
        if offset > download.size:
            raise OffsetMismatch(f"REST {offset} is past the end of {ctx.display(target)} ({download.size} bytes)")
        count = download.size - offset
        with _open_data(ctx, f"Opening data connection for {ctx.display(target)} ({count} bytes)") as data:
            try:
                fd = download.fileno()
                if fd is not None:
                    data.send_file(fd, offset, count)
                else:
                    data.send_from(download.readinto, offset, count)
            finally:
                ctx.bytes = data.bytes
    return Reply(226, "Transfer complete")


@command("STOR", writes=True, argument=REQUIRED, syntax="STOR path")
def stor(ctx: Context, argument: str) -> Reply:
    return _store(ctx, argument, append=False)


@command("APPE", writes=True, argument=REQUIRED, syntax="APPE path")
def appe(ctx: Context, argument: str) -> Reply:
    return _store(ctx, argument, append=True)


def _store(ctx: Context, argument: str, append: bool) -> Reply:
    """Receive a file into a hidden partial until the client closes the
    data connection, then make it visible at once. An upload cut short, or
    aborted, stays a partial that REST + STOR or APPE continues."""
    target = ctx.resolve(argument, audit="put")
    ctx.session.refuse_home(target, "replaced")
    upload = open_upload(ctx.storage, target, ctx.state.take_rest(), append)
    committed = False
    try:
        hasher = checksums.Hasher()
        upload.hash_existing(hasher)  # the checksum is kept with the file, as for a native put
        text = f"Ready to receive {ctx.display(target)}" + (f" from byte {upload.offset}" if upload.offset else "")
        with _open_data(ctx, text) as data:
            try:
                data.receive(upload.write, hasher)
            finally:
                ctx.bytes = data.bytes
        upload.commit(hasher.value())
        committed = True
    except QuotaExceeded:
        upload.discard()  # it can never fit: do not keep it counting against the quota
        raise
    finally:
        if not committed:
            if upload.offset:
                upload.keep()  # resumable (a no-op after discard)
            else:
                upload.discard()  # nothing arrived: leave no empty partial behind
    return Reply(226, f"Transfer complete: {ctx.display(target)} stored, {upload.offset} bytes")


def open_upload(storage: Storage, target: RemotePath, rest: int, append: bool) -> Upload:
    """The upload a STOR (after REST *rest*) or an APPE writes to.

    What a client continues is what SIZE told it: the interrupted upload
    of *target* if one is held, else the stored file. So APPE continues a
    held partial, or the file, or starts a new one; REST N + STOR continues
    a partial that holds at least N bytes, or the first N bytes of the
    file; a plain STOR starts over.
    """
    if not (append or rest):
        return storage.open_upload(target, None)
    held = storage.partial_size(target, None)
    if append:
        if held:
            return storage.open_upload(target, None, held)
        try:
            return storage.open_append(target)
        except NotFound:
            return storage.open_upload(target, None)
    if held >= rest:
        return storage.open_upload(target, None, rest)
    try:
        return storage.open_append(target, rest)
    except NotFound:
        raise OffsetMismatch(
            f"cannot resume {{path}} at {rest}: the server holds {held} bytes", path=target, offset=held
        ) from None
