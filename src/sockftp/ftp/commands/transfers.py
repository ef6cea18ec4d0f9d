"""File transfers over a data connection: REST, RETR, STOR and APPE.

Where a transfer starts (REST, and :func:`open_upload`'s choice between a
held partial and the stored file) and how an upload becomes visible: only
whole, at once, after the data connection ends well. An upload cut short
must never leave a visible file, only a hidden partial that REST + STOR
or APPE resumes.
"""

from __future__ import annotations

import contextlib

from ...protocol import checksum as checksums
from ...protocol.errors import NotFound, OffsetMismatch, QuotaExceeded, SockftpError
from ...protocol.limits import SMALL_FILE
from ...protocol.paths import RemotePath
from ...storage import Storage, Upload
from .. import parser
from ..data import TransferFailed
from ..replies import Reply
from .base import REQUIRED, Context, command
from .channels import _open_data

#: Seconds a plain STOR's data may take to arrive whole for the upload to
#: be stored at once (see _store_new). A client sends a small file it has
#: in well under this; one that dribbles gets a partial after it, and SIZE
#: and a concurrent STOR see its upload in progress as they see any other.
AT_ONCE_WITHIN = 0.2

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
    """Receive a file until the client closes the data connection, then
    make it visible at once. An upload cut short, or aborted, stays a
    hidden partial that REST + STOR or APPE continues."""
    target = ctx.resolve(argument, audit="put")
    ctx.session.refuse_home(target, "replaced")
    rest = ctx.state.take_rest()
    if not (append or rest):
        return _store_new(ctx, target)
    upload = open_upload(ctx.storage, target, rest, append)
    text = f"Ready to receive {ctx.display(target)}" + (f" from byte {upload.offset}" if upload.offset else "")
    return _receive(ctx, upload, b"", lambda: _open_data(ctx, text))


def _store_new(ctx: Context, target: RemotePath) -> Reply:
    """A plain STOR. A small file that arrives at once (all of it within
    ``AT_ONCE_WITHIN`` of the data connection opening, as a client sends
    a file it has) is stored with its size known: in one go, by
    ``open_upload(at_once=True)``, which needs no partial, lock or rename
    (nothing waits between its start and its commit). A small put spends
    most of its time there, and the partial's create holds its directory
    locked, so parallel uploads into one directory queued behind each other.

    Anything else gets its partial as soon as that is clear, and carries
    on as a plain upload; a small upload cut short in that time still
    becomes one, resumable. So the storage is opened after the 150 here:
    its refusals (450 busy, 550, 552) follow it, as a failed transfer's do.
    """
    head = bytearray()
    with _open_data(ctx, f"Ready to receive {ctx.display(target)}") as data:
        try:
            whole = data.receive_whole(head, SMALL_FILE, AT_ONCE_WITHIN)
        except TransferFailed:
            ctx.bytes = data.bytes
            _keep_head(ctx.storage, target, head)
            raise
        ctx.bytes = data.bytes  # what came, whatever the storage says next
        if not whole:
            upload = ctx.storage.open_upload(target, None)
            return _receive(ctx, upload, head, lambda: contextlib.nullcontext(data))
    hasher = checksums.Hasher()
    hasher.update(head)
    upload = ctx.storage.open_upload(target, len(head), at_once=True)
    try:
        upload.write(head)
        upload.commit(hasher.value())
    except BaseException:
        upload.discard()
        raise
    return Reply(226, f"Transfer complete: {ctx.display(target)} stored, {len(head)} bytes")


def _receive(ctx: Context, upload: Upload, head: bytes, open_data) -> Reply:
    """Write *head* (bytes that came already), then receive into *upload*
    from the data connection ``open_data()`` gives until the client closes
    it, then commit."""
    committed = False
    try:
        hasher = checksums.Hasher()
        upload.hash_existing(hasher)  # the checksum is kept with the file, as for a native put
        if head:
            hasher.update(head)
            upload.write(head)
        with open_data() as data:
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
    return Reply(226, f"Transfer complete: {ctx.display(upload.path)} stored, {upload.offset} bytes")


def _keep_head(storage: Storage, target: RemotePath, head: bytearray) -> None:
    """A small upload cut short before it had a partial: its bytes become
    one, resumable as any other. If that fails (another upload holds the
    partial, the quota, the disk), they are dropped: at most a small
    file, and the client is told the transfer failed anyway."""
    if not head:
        return
    try:
        upload = storage.open_upload(target, None)
    except SockftpError:
        return
    try:
        upload.write(head)
    except SockftpError:
        upload.discard()
        return
    except BaseException:
        upload.discard()
        raise
    upload.keep()


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
