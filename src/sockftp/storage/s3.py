"""Storage in an S3-compatible object store (SeaweedFS, Ceph RGW, MinIO, AWS S3).

Keys mirror paths: the file ``users/alice/docs/a.txt`` is the object
``PREFIX/users/alice/docs/a.txt`` of the bucket, so any S3 tool sees the
same tree and the bucket alone is a full copy of the data. A directory is a
key prefix; ``mkdir`` puts a marker object (the prefix itself, ending in
``/``, empty) so that an empty directory exists. Names of the server's own
(``.sockftp...``) are hidden from listings, as on a local disk.

The endpoint, region and credentials come the standard AWS way:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` or the AWS config files (boto3 reads them).

Uploads are multipart uploads whose state lives in the account store (see
:mod:`sockftp.storage.s3_files` and :mod:`sockftp.accounts.multipart`), so
that one cut at any byte resumes through any node sharing that store. This
module never imports the account store: it is handed one (``state``) and
calls its multipart methods by name.

What differs from a local disk (docs/DEPLOY.md has the list): modification
times are the store's (the time of the upload; ``set_mtime`` is refused),
a download whose file is replaced meanwhile fails and is retried rather
than reading the old version on, and ``mv`` of a directory moves its
objects one by one (each atomically, none lost or duplicated) and is
refused past :data:`MAX_DIRECTORY_MOVE` objects.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from urllib.parse import quote

from ..protocol.entries import DIRECTORY, FILE, Entry
from ..protocol.errors import (
    Busy,
    Exists,
    IOFailure,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    OffsetMismatch,
    PathRefused,
    PermissionDenied,
    SockftpError,
)
from ..protocol.limits import RESERVED_PREFIX, SMALL_FILE
from ..protocol.paths import RemotePath
from .base import Download, Storage, Upload, Usage
from .local_files import PARTIAL_PREFIX, partial_name
from .s3_files import S3Download, S3Upload, new_owner

log = logging.getLogger("sockftp.storage")

#: Parts of a multipart upload: the size a part is sent at. S3 takes parts
#: of 5 MiB to 5 GiB (the last may be smaller), and at most 10,000 of them.
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
#: A file of unknown size (FTP's STOR) gets parts this many times larger,
#: so that it may reach 640 GiB.
UNKNOWN_SIZE_FACTOR = 8
#: ``mv`` of a directory moves each object in turn; past this many it is
#: refused rather than left half-moved for long.
MAX_DIRECTORY_MOVE = 1000


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` as (bucket, prefix without slashes at its ends)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}: expected s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def make_client(max_connections: int = 64):
    """A boto3 S3 client configured from the environment, the standard AWS
    way. Path-style addressing with a custom endpoint (SeaweedFS, MinIO and
    most self-hosted stores need it); retries in botocore's standard mode."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ImportError("s3:// storage needs boto3: pip install 'sockftp[s3]'") from None
    custom = bool(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"))
    # Retries as AWS_MAX_ATTEMPTS and AWS_RETRY_MODE say, else 3 attempts.
    retries = {} if os.environ.get("AWS_MAX_ATTEMPTS") else {"retries": {"max_attempts": 3, "mode": "standard"}}
    config = Config(
        s3={"addressing_style": "path"} if custom else {},
        **retries,
        max_pool_connections=max_connections,
        connect_timeout=5,
        read_timeout=60,
        # Only where the operation requires one: a CRC of every part costs
        # CPU, and each part is checked end to end by the file's checksum.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", config=config)


class S3Storage(Storage):
    """Files as objects under *prefix* in *bucket*.

    Args:
        state: the account store that keeps the uploads' state (any store
            with the methods of ``accounts.multipart.MultipartRecords``).
        client: a boto3 S3 client; None: one from the environment.
        part_size: bytes per part (at least 5 MiB).
        lease_time: seconds an upload's lease lasts unless renewed; another
            node may take the upload over after.
        spool_dir: where parts wait on local disk before they are sent.
    """

    keeps_checksums = False  # kept in metadata, which a listing does not show

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        state,
        client=None,
        part_size: int = PART_SIZE,
        lease_time: float = 60.0,
        spool_dir: str | None = None,
    ):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's smallest part)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.state = state
        self.client = client if client is not None else make_client()
        self.part_size = part_size
        self.lease_time = lease_time
        self.spool_dir = spool_dir
        if spool_dir:
            os.makedirs(spool_dir, exist_ok=True)
        self._botocore_errors = _botocore_errors()
        # SeaweedFS 4.48 answers an empty PUT sent with "Expect: 100-continue"
        # (a directory's marker) twice, and the stray answer is read as the
        # next request's on that connection, which then waits out its read
        # timeout (60 s). Parts are sent whole anyway: never ask.
        self.client.meta.events.register_first("before-sign.s3", _no_expect)
        #: Requests sent to the store so far, by operation (PutObject,
        #: UploadPart...), each retry counted: what an operation costs in
        #: S3 requests (bench/cluster_cost.py, docs/DEPLOY.md).
        self.requests: Counter[str] = Counter()
        self._counting = threading.Lock()
        self.client.meta.events.register("before-send.s3", self._count)
        #: Until the store (or an older botocore) says it has no RenameObject.
        self._can_rename = hasattr(self.client, "rename_object")

    def _count(self, event_name: str, **_) -> None:
        with self._counting:
            self.requests[event_name.rsplit(".", 1)[-1]] += 1

    # -- keys ---------------------------------------------------------------------------------

    def key(self, path: RemotePath) -> str:
        return "/".join((self.prefix, *path)) if self.prefix else "/".join(path)

    def directory_key(self, path: RemotePath) -> str:
        """The prefix of everything in directory *path* (its marker's key)."""
        key = self.key(path)
        return key + "/" if key else ""

    def partial_key(self, path: RemotePath) -> str:
        return self.directory_key(path[:-1]) + partial_name(path[-1])

    def state_key(self, path: RemotePath) -> str:
        return f"{self.bucket}/{self.key(path)}"

    def part_size_for(self, size: int | None) -> int:
        if size is None:
            return self.part_size * UNKNOWN_SIZE_FACTOR
        needed = -(-size // (MAX_PARTS - 100))  # room for the copies of a resume
        return max(self.part_size, -(-needed // (1 << 20)) << 20)

    # -- errors ----------------------------------------------------------------------------

    def error(self, exc: Exception, path: RemotePath) -> SockftpError:
        """The protocol error for a failed request about *path*."""
        if isinstance(exc, SockftpError):
            return exc
        client_error, unreachable = self._botocore_errors
        if isinstance(exc, client_error):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchUpload":
                return IOFailure("the object store has no upload of {path} any more; resume it again", path=path)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return NotFound("no such file or directory: {path}", path=path)
            if code == "PreconditionFailed" or status == 412:
                return IOFailure("{path} changed while it was used; try again", path=path)
            log.warning("object store error on %s: %s", "/".join(path), exc)
            return IOFailure(f"object store error on {{path}}: {code or status}", path=path)
        if isinstance(exc, unreachable):
            log.warning("object store unreachable (%s): %s", "/".join(path), exc)
            return IOFailure("the object store is unreachable; try again shortly")
        log.warning("object store failure on %s: %r", "/".join(path), exc)
        return IOFailure(f"object store failure on {{path}}: {type(exc).__name__}", path=path)

    def _call(self, path: RemotePath, operation: str, **kwargs):
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a protocol error
            raise self.error(exc, path) from None

    def _state(self, path: RemotePath, method: str, *args):
        try:
            return getattr(self.state, method)(*args)
        except SockftpError:
            raise
        except Exception as exc:  # noqa: BLE001 - the account store failed (unreachable, locked)
            log.warning("upload state of %s: %s", "/".join(path), exc)
            raise IOFailure("the server's upload records are unavailable; try again shortly") from None

    # -- objects ---------------------------------------------------------------------------

    def head(self, path: RemotePath, key: str) -> dict | None:
        try:
            return self._call(path, "head_object", Key=key)
        except NotFound:
            return None

    def _has_objects(self, path: RemotePath, prefix: str) -> bool:
        reply = self._call(path, "list_objects_v2", Prefix=prefix, MaxKeys=1)
        return reply.get("KeyCount", 0) > 0

    def _is_directory(self, path: RemotePath) -> bool:
        return not path or self._has_objects(path, self.directory_key(path))

    def refuse_directory(self, path: RemotePath) -> None:
        if self._is_directory(path):
            raise IsADirectory("is a directory: {path}", path=path)

    def _missing(self, path: RemotePath) -> SockftpError:
        """NotFound for *path*, or NotADirectory if a file is on its way."""
        for depth in range(1, len(path)):
            if self.head(path, self.key(path[:depth])) is not None:
                return NotADirectory("not a directory: {path}", path=path[:depth])
        return NotFound("no such file or directory: {path}", path=path)

    def _require_directory(self, path: RemotePath) -> None:
        if path and not self._is_directory(path):
            if self.head(path, self.key(path)) is not None:
                raise NotADirectory("not a directory: {path}", path=path)
            raise self._missing(path)

    def get_range(self, path: RemotePath, key: str, start: int, end: int, etag: str | None):
        """A streaming body of bytes *start* to *end* of *key*."""
        extra = {"IfMatch": etag} if etag else {}
        reply = self._call(path, "get_object", Key=key, Range=f"bytes={start}-{end - 1}", **extra)
        return reply["Body"]

    def put_file(self, path: RemotePath, key: str, body, length: int, metadata: dict) -> None:
        self._call(path, "put_object", Key=key, Body=body, ContentLength=length, Metadata=metadata)

    def delete(self, path: RemotePath, key: str) -> None:
        self._call(path, "delete_object", Key=key)

    def _move(self, path: RemotePath, source: str, target: str) -> None:
        """Move one object: the store's RenameObject (no data copied; SeaweedFS
        since 4.42), else a copy and a delete."""
        if self._can_rename:
            try:
                self.client.rename_object(Bucket=self.bucket, Key=target, RenameSource=quote(f"{self.bucket}/{source}"))
                return
            except Exception as exc:  # noqa: BLE001 - unsupported, or a real failure
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code not in ("NotImplemented", "MethodNotAllowed", "InvalidRequest", "InvalidArgument"):
                    raise self.error(exc, path) from None
                self._can_rename = False
                log.info("the object store has no RenameObject: moving by copy and delete")
        try:
            self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path) from None
        self.delete(path, source)

    def publish(self, path: RemotePath, partial: str, key: str, metadata: dict) -> None:
        """Give the completed *partial* its *metadata*, then move it to *key*."""
        if metadata:
            self._call(
                path,
                "copy_object",
                Key=partial,
                CopySource={"Bucket": self.bucket, "Key": partial},
                Metadata=metadata,
                MetadataDirective="REPLACE",
            )
        self._move(path, partial, key)

    # -- multipart uploads -------------------------------------------------------------------

    def create_multipart(self, path: RemotePath, key: str) -> str:
        return self._call(path, "create_multipart_upload", Key=key)["UploadId"]

    def upload_part(self, path: RemotePath, key: str, upload_id: str, number: int, body, length: int) -> str:
        reply = self._call(
            path, "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentLength=length
        )
        return reply["ETag"]

    def copy_part(self, path, key, upload_id, number, source, etag, position, count) -> str:
        extra = {"CopySourceIfMatch": etag} if etag else {}
        reply = self._call(
            path,
            "upload_part_copy",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": source},
            CopySourceRange=f"bytes={position}-{position + count - 1}",
            **extra,
        )
        return reply["CopyPartResult"]["ETag"]

    def complete(self, path: RemotePath, key: str, upload_id: str, parts) -> None:
        # From our own record of the parts, never from ListParts: SeaweedFS
        # lists a part sent twice twice.
        listed = [{"PartNumber": number, "ETag": etag} for number, etag in parts]
        self._call(path, "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed})

    def abort(self, path: RemotePath, key: str, upload_id: str) -> None:
        try:
            self._call(path, "abort_multipart_upload", Key=key, UploadId=upload_id)
        except (NotFound, IOFailure):
            pass  # gone already (completed, aborted, or expired by the store)

    # -- the uploads' state ---------------------------------------------------------------------

    def _until(self) -> float:
        return time.time() + self.lease_time

    def record_part(self, upload: S3Upload, number: int, size: int, etag: str, digest: str) -> bool:
        part = SimpleNamespace(number=number, size=size, etag=etag, hash=digest)
        return self._state(
            upload.path, "record_part", upload.state_key, upload.generation, part, self._until(), time.time()
        )

    def set_state(self, upload: S3Upload, state: dict, drop_parts: bool) -> None:
        if upload.generation is None:
            return
        if not self._state(
            upload.path, "set_upload", upload.state_key, upload.generation, state, time.time(), drop_parts
        ):
            raise Busy("the upload of {path} was taken over by another; resume it again", path=upload.path)

    def record_sealed(self, upload: S3Upload, base: int) -> None:
        state = {"upload_id": None, "size": upload.size, "base": base, "copied": 0}
        self.set_state(upload, state, drop_parts=True)

    def renew(self, upload: S3Upload) -> bool:
        return self._state(upload.path, "renew_upload", upload.state_key, upload.generation, self._until())

    def release(self, upload: S3Upload, quiet: bool = False) -> None:
        if upload.generation is None:
            return
        try:
            self._state(upload.path, "release_upload", upload.state_key, upload.generation)
        except SockftpError:
            if not quiet:
                raise  # else the lease simply runs out

    def forget(self, upload: S3Upload) -> None:
        self._state(upload.path, "forget_upload", upload.state_key, upload.generation)

    def _seal_recorded(self, path: RemotePath, record, generation: int):
        """After a crash: complete the open multipart upload from the parts
        recorded into the sealed partial (or abort it if its copies were
        not all made), so that nobody can add a part to it any more and
        its bytes can be read back. Returns the bytes the partial holds."""
        partial = self.partial_key(path)
        held = record.held
        if record.run and record.in_parts >= record.copied:
            try:
                self.complete(path, partial, record.upload_id, [(p.number, p.etag) for p in record.run])
            except IOFailure:
                # Completed already by a node that died before recording it?
                head = self.head(path, partial)
                if head is None or int(head["ContentLength"]) != held:
                    raise
        else:
            self.abort(path, partial, record.upload_id)
            held = record.base
        state = {"upload_id": None, "size": record.size, "base": held, "copied": 0}
        if not self._state(path, "set_upload", self.state_key(path), generation, state, time.time(), True):
            raise Busy("another upload of {path} is under way", path=path)
        return held

    # -- Storage: metadata ---------------------------------------------------------------------

    def stat(self, path: RemotePath) -> Entry:
        if not path:
            return Entry("/", DIRECTORY, 0, 0.0)
        head = self.head(path, self.key(path))
        if head is not None:
            return Entry(path[-1], FILE, int(head["ContentLength"]), head["LastModified"].timestamp())
        if self._is_directory(path):
            return Entry(path[-1], DIRECTORY, 0, 0.0)
        raise self._missing(path)

    def list(self, path: RemotePath) -> Iterator[Entry]:
        prefix = self.directory_key(path)
        seen = False
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", ()):
                    seen = True
                    name = common["Prefix"][len(prefix) : -1]
                    if name and not name.startswith(RESERVED_PREFIX):
                        yield Entry(name, DIRECTORY, 0, 0.0)
                for item in page.get("Contents", ()):
                    seen = True
                    name = item["Key"][len(prefix) :]
                    if name and not name.startswith(RESERVED_PREFIX):
                        yield Entry(name, FILE, int(item["Size"]), item["LastModified"].timestamp())
        except SockftpError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path) from None
        if not seen and path:
            self._require_directory(path)

    def checksum(self, path: RemotePath) -> str:
        with self.open_read(path) as download:
            return download.checksum()

    def usage(self, path: RemotePath) -> Usage:
        prefix = self.directory_key(path)
        total = files = 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    total += int(item["Size"])
                    name = item["Key"].rsplit("/", 1)[-1]
                    files += bool(name) and not name.startswith(RESERVED_PREFIX)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, path) from None
        total += self._state(path, "held_in_parts", f"{self.bucket}/{prefix}")
        return Usage(total, files)

    # -- Storage: directories ------------------------------------------------------------------

    def mkdir(self, path: RemotePath, parents: bool = False) -> None:
        if not path:
            if parents:
                return
            raise Exists("already exists: {path}", path=path)
        if self.head(path, self.key(path)) is not None:
            raise Exists("already exists: {path}", path=path)
        if self._is_directory(path):
            if parents:
                return
            raise Exists("already exists: {path}", path=path)
        if parents:
            missing = self._missing(path)
            if isinstance(missing, NotADirectory):
                raise missing
        else:
            self._require_directory(path[:-1])
        self._call(path, "put_object", Key=self.directory_key(path), Body=b"")

    def rmdir(self, path: RemotePath) -> int:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        prefix = self.directory_key(path)
        reply = self._call(path, "list_objects_v2", Prefix=prefix, Delimiter="/", MaxKeys=1000)
        keys = [item["Key"] for item in reply.get("Contents", ())]
        if not keys and not reply.get("CommonPrefixes"):
            if self.head(path, self.key(path)) is not None:
                raise NotADirectory("not a directory: {path}", path=path)
            raise self._missing(path)
        names = [key[len(prefix) :] for key in keys]
        if reply.get("CommonPrefixes") or reply.get("IsTruncated"):
            raise NotEmpty("directory not empty: {path}", path=path)
        if any(name and not name.startswith(PARTIAL_PREFIX) for name in names):
            raise NotEmpty("directory not empty: {path}", path=path)
        freed = self._drop_partials(path, prefix)
        if "" in names:
            self.delete(path, prefix)
        return freed

    def _drop_partials(self, path: RemotePath, prefix: str) -> int:
        """Drop the kept partials in a directory that shows nothing else:
        their objects, their open multipart uploads, their records. Busy if
        one is held by an upload under way."""
        freed = 0
        owner = new_owner()
        for key in self._state(path, "expired_uploads", f"{self.bucket}/{prefix}", float("inf"), time.time()):
            name = key[len(self.bucket) + 1 + len(prefix) :]
            if "/" in name:
                continue
            freed += self._drop_record(path, key, owner)
        if any("/" not in key[len(self.bucket) + 1 + len(prefix) :] for key in self._uploads_under(path, prefix)):
            raise Busy("an upload into {path} is under way", path=path)
        reply = self._call(path, "list_objects_v2", Prefix=prefix + PARTIAL_PREFIX)
        for item in reply.get("Contents", ()):  # sealed partials whose records are gone
            freed += int(item["Size"])
            self.delete(path, item["Key"])
        return freed

    def _uploads_under(self, path: RemotePath, prefix: str) -> list[str]:
        """The state keys of every upload kept or under way below *prefix*."""
        return self._state(path, "uploads_under", f"{self.bucket}/{prefix}")

    def _drop_record(self, path: RemotePath, state_key: str, owner: str) -> int:
        """Claim the record at *state_key* and drop its upload; the bytes it
        held in parts (its sealed partial object is left to the caller)."""
        object_key = state_key[len(self.bucket) + 1 :]
        directory, _, name = object_key.rpartition("/")
        record = self._state(path, "claim_upload", state_key, owner, self._until(), time.time())
        if record is None:
            raise Busy("an upload into {path} is under way", path=path)
        partial = f"{directory}/{partial_name(name)}" if directory else partial_name(name)
        if record.upload_id:
            self.abort(path, partial, record.upload_id)
        self._state(path, "forget_upload", state_key, record.generation)
        return record.in_parts

    # -- Storage: files --------------------------------------------------------------------

    def remove(self, path: RemotePath) -> None:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        if self.head(path, self.key(path)) is None:
            if self._is_directory(path):
                raise IsADirectory("is a directory (use rmdir): {path}", path=path)
            raise self._missing(path)
        self.delete(path, self.key(path))

    def rename(self, source: RemotePath, target: RemotePath) -> None:
        if not source or not target:
            raise PathRefused("the root cannot be renamed or replaced")
        if target[: len(source)] == source and target != source:
            raise PathRefused("cannot move {path} into itself", path=source)
        is_file = self.head(source, self.key(source)) is not None
        if not is_file and not self._is_directory(source):
            raise NotFound("no such file or directory: {path}", path=source)
        if source == target:
            return
        if self._is_directory(target):
            raise IsADirectory("target is a directory: {path}", path=target)
        self._require_directory(target[:-1])
        if is_file:
            self._move(source, self.key(source), self.key(target))
        else:
            self._move_directory(source, target)

    def _move_directory(self, source: RemotePath, target: RemotePath) -> None:
        """Move every object below *source*, each atomically. Refused past
        MAX_DIRECTORY_MOVE objects, or with an upload kept or under way
        inside (its records name the old path)."""
        if self.head(target, self.key(target)) is not None:
            raise NotADirectory("not a directory: {path}", path=target)
        prefix, new_prefix = self.directory_key(source), self.directory_key(target)
        if self._uploads_under(source, prefix):
            raise Busy("{path} holds an upload under way or kept for a resume; finish it first", path=source)
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", ()))
                if len(keys) > MAX_DIRECTORY_MOVE:
                    raise PermissionDenied(
                        f"{{path}} holds more than {MAX_DIRECTORY_MOVE} objects: on object storage a directory"
                        " that large is not moved (it would be half-moved for long); move its contents in parts",
                        path=source,
                    )
        except SockftpError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, source) from None
        # The marker last: until everything has moved, the source still shows.
        for key in sorted(keys, key=lambda k: k.endswith("/")):
            if key.endswith("/"):
                # A marker: SeaweedFS keeps it as a directory, which its
                # RenameObject refuses. It is empty: make the new one.
                self._call(target, "put_object", Key=new_prefix + key[len(prefix) :], Body=b"")
                self.delete(source, key)
            else:
                self._move(source, key, new_prefix + key[len(prefix) :])

    def open_read(self, path: RemotePath) -> Download:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        head = self.head(path, self.key(path))
        if head is None:
            if self._is_directory(path):
                raise IsADirectory("is a directory: {path}", path=path)
            raise self._missing(path)
        return S3Download(self, path, self.key(path), head)

    def partial_size(self, path: RemotePath, size: int | None) -> int:
        if not path:
            return 0
        record = self._state(path, "peek_upload", self.state_key(path))
        if record is None:
            return 0
        held = record.held
        if size is None:
            return held
        if held > size or record.size not in (None, size):
            return 0
        return held

    def open_upload(self, path: RemotePath, size: int | None, offset: int = 0, *, at_once: bool = False) -> Upload:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        self._require_directory(path[:-1])
        small = size is not None and size <= SMALL_FILE
        if not small:
            self.refuse_directory(path)
        if at_once and small and not offset and self._state(path, "peek_upload", self.state_key(path)) is None:
            # All in hand and no partial in the way: nothing to resume or to
            # lock (a concurrent one of the same name simply lands first).
            return S3Upload(self, path, size, 0, None)
        generation, held = self._claim(path, size, offset)
        upload = S3Upload(self, path, size, offset, generation, self.partial_key(path) if offset else None)
        upload.dropped = max(0, held - offset)
        return upload

    def _claim(self, path: RemotePath, size: int | None, offset: int) -> tuple[int, int]:
        """Take *path*'s upload for a start (*offset* 0: whatever was held is
        dropped) or a resume; its generation and the bytes held before."""
        state_key = self.state_key(path)
        record = self._state(path, "claim_upload", state_key, new_owner(), self._until(), time.time())
        if record is None:
            raise Busy("another upload of {path} is under way", path=path)
        generation = record.generation
        try:
            if not offset:
                if record.upload_id:
                    self.abort(path, self.partial_key(path), record.upload_id)
                if record.base or record.upload_id:
                    self.delete(path, self.partial_key(path))
                state = {"upload_id": None, "size": size, "base": 0, "copied": 0}
                if not self._state(path, "set_upload", state_key, generation, state, time.time(), True):
                    raise Busy("another upload of {path} is under way", path=path)
                return generation, record.held
            held = self._seal_recorded(path, record, generation) if record.upload_id else record.base
            if offset > held or (size is not None and record.size not in (None, size)):
                usable = held if record.size in (None, size) and (size is None or held <= size) else 0
                raise OffsetMismatch(
                    f"cannot resume {{path}} at {offset}: the server holds {usable} bytes", path=path, offset=usable
                )
            return generation, held
        except BaseException:
            try:
                if record.held == 0 and not record.upload_id:
                    self._state(path, "forget_upload", state_key, generation)
                else:
                    self._state(path, "release_upload", state_key, generation)
            except SockftpError:
                pass  # the lease runs out
            raise

    def open_append(self, path: RemotePath, offset: int | None = None) -> Upload:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        head = self.head(path, self.key(path))
        if head is None:
            if self._is_directory(path):
                raise IsADirectory("is a directory: {path}", path=path)
            raise self._missing(path)
        length = int(head["ContentLength"])
        keep = length if offset is None else offset
        if keep > length:
            raise OffsetMismatch(
                f"cannot resume {{path}} at {keep}: the file holds {length} bytes", path=path, offset=length
            )
        generation, held = self._claim(path, None, 0)
        upload = S3Upload(self, path, None, keep, generation, self.key(path) if keep else None, head.get("ETag"))
        upload.dropped = held
        return upload

    def expire_partials(self, path: RemotePath, untouched_since: float) -> Iterator[tuple[RemotePath, int]]:
        prefix = self.directory_key(path)
        root = len(self.bucket) + 1 + len(self.directory_key(()))
        owner = new_owner()
        for state_key in self._state(path, "expired_uploads", f"{self.bucket}/{prefix}", untouched_since, time.time()):
            where = tuple(state_key[root:].split("/"))
            try:
                freed = self._drop_record(where, state_key, owner)
                partial = self.head(where, self.partial_key(where))
                if partial is not None:
                    self.delete(where, self.partial_key(where))
                    freed += int(partial["ContentLength"])
            except Busy:
                continue  # resumed meanwhile
            except SockftpError as exc:
                log.warning("could not expire the partial of %s: %s", "/".join(where), exc)
                continue
            yield where[:-1], freed


def _no_expect(request, **_) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _botocore_errors():
    """botocore's ClientError, and the errors of a store out of reach."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    try:
        from urllib3.exceptions import HTTPError, ProtocolError
    except ImportError:  # pragma: no cover - botocore requires urllib3
        HTTPError = ProtocolError = ConnectionError  # noqa: N806
    unreachable = (
        EndpointConnectionError,
        ConnectionClosedError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ResponseStreamingError,
        ProtocolError,
        HTTPError,
        ConnectionError,
    )
    return ClientError, unreachable
