"""One storage layer for the data root: a local directory or an S3 prefix.

Every artifact is reached through a `Location` (a store and a key under the
data root), which offers the small path-like interface the stages need
(``/``, ``exists``, ``read_bytes``, ``write_bytes``, ``iterdir``, ...), so no
stage branches on the scheme. Two stores sit behind it:

- `LocalStore`: files under a directory; writes go to a temporary sibling,
  are fsynced and renamed into place; conditional writes (compare-and-swap)
  hold an flock on the object's folder.
- `S3Store`: objects under ``s3://bucket/prefix`` through a boto3 client: the
  one dagster-aws's ``S3Resource`` builds (resources/storage.py) in every
  Dagster process; `plain_s3_client`, the same session, retries and ``AWS_*``
  settings, in code that does not import Dagster: torchrun workers, part
  workers, base-model downloads (resources/model_store.py, used by both), the
  `chunks` table's file record (retrieval/index.py, a pure module) and the
  serving gateway, which outlives every run. Every
  PUT carries its ``ChecksumSHA256``, which the server verifies; conditional
  PUTs use ``If-None-Match: *`` and ``If-Match: <etag>``. Connection failures
  are retried by botocore's standard mode (exponential backoff with full
  jitter); when the server stays down the call fails with `StorageUnavailable`,
  one sentence naming the endpoint.

S3 has no rename, so multi-object artifacts are published the way table
formats do it (base/shards.py for tables, `publish_tree` here for directory
trees such as checkpoints): the files go under a unique prefix, a manifest
that lists them with sizes and sha256 is written last with a conditional PUT,
readers trust only the manifest, and files no manifest references are
collected after `gc_grace_seconds`. A crash at any moment leaves the previous
version readable.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from llama_assets.base.atomic import atomic_open, fsync_dir, replace_dir, sha256_file, temp_prefix

GC_GRACE_SECONDS = 24 * 3600
"""Unreferenced parts younger than this are kept: a reader that read the
previous manifest may still be reading them (Delta and Iceberg keep days)."""

SINGLE_PUT_LIMIT = 4 * 2**30
"""Larger files go up as a multipart upload (a single PUT takes at most 5 GiB)."""

TREE_MANIFEST = "tree.json"
"""The manifest of a directory tree published to an object store."""


def gc_grace_seconds() -> float:
    return float(os.environ.get("LLAMA_GC_GRACE_SECONDS", GC_GRACE_SECONDS))


class PreconditionFailed(RuntimeError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class StorageUnavailable(RuntimeError):
    """The object store did not answer, after retries with backoff."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    """Relative to the store's root."""
    size: int
    etag: str
    mtime_ns: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


def _sha256_b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode()


class Store(ABC):
    """Objects under a root, addressed by posix keys relative to it ("" is the root)."""

    scheme: str

    @abstractmethod
    def uri(self, key: str = "") -> str: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes (FileNotFoundError when there is none)."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write one object whole; returns its etag. With `if_none_match` it must not
        exist yet, with `if_match` its etag must still be that one
        (PreconditionFailed otherwise)."""

    @abstractmethod
    def upload(self, key: str, local: Path, sha256: str | None = None) -> None:
        """Move (local store) or upload (S3, checksum verified) the file `local`."""

    @abstractmethod
    def download(self, key: str, local: Path) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix/`` (all depths), sorted by key."""

    @abstractmethod
    def children(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        """(names of the sub-folders, objects) directly under ``prefix/``."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None: ...

    @abstractmethod
    def copy(self, src: str, dst: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """Where the object lives on this machine's disk (local store only)."""
        return None

    def scratch_dir(self, key: str) -> Path:
        """A folder for temporary files that `upload` will move to `key` cheaply."""
        return Path(tempfile.gettempdir())

    def storage_options(self) -> dict[str, str]:
        """Options for libraries that open the store themselves (LanceDB, polars)."""
        return {}

    def cache_dir(self) -> Path:
        """Where local copies of this store's objects are kept (S3 only)."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        self.delete(o.key for o in self.list(prefix))

    def has_objects(self, prefix: str) -> bool:
        """Whether any object lies under ``prefix/``."""
        return bool(self.list(prefix))


# --- local directory ---------------------------------------------------------------------------


_INTERNAL_SUFFIXES = (".tmp",)


def _is_internal(name: str) -> bool:
    """Temporary files of writes in progress (hidden, never listed)."""
    return name.startswith(".") and name.endswith(_INTERNAL_SUFFIXES)


class LocalStore(Store):
    scheme = "file"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and other.root == self.root

    def __hash__(self) -> int:
        return hash(("file", self.root))

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def uri(self, key: str = "") -> str:
        return str(self._path(key))

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def scratch_dir(self, key: str) -> Path:
        # Beside the destination, so that `upload` is one rename on one filesystem.
        folder = self._path(key).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _etag(st: os.stat_result) -> str:
        # Every write renames a new file into place: a new inode, whatever the content.
        return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if path.is_dir():
            raise FileNotFoundError(f"{path} is a folder")
        return path.read_bytes()

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        with open(path, "rb") as fh:
            return fh.read(), self._etag(os.fstat(fh.fileno()))

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(key)):
            return None
        return ObjectInfo(key, st.st_size, self._etag(st), st.st_mtime_ns)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        # flock on the folder itself: no lock file is left behind.
        folder = self._path(key).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        if not (if_none_match or if_match):
            with atomic_open(path, "wb") as fh:
                fh.write(data)
            return self._etag(path.stat())
        with self._lock(key):
            current = self.head(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{path} exists already")
            if if_match and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{path} changed since it was read")
            with atomic_open(path, "wb") as fh:
                fh.write(data)
            return self._etag(path.stat())

    def upload(self, key: str, local: Path, sha256: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.replace(local, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with atomic_open(path, "wb") as out, open(local, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            Path(local).unlink()
        fsync_dir(path.parent)

    def download(self, key: str, local: Path) -> None:
        shutil.copyfile(self._path(key), local)

    def _info(self, path: Path) -> ObjectInfo:
        st = path.stat()
        rel = path.relative_to(self.root).as_posix()
        return ObjectInfo(rel, st.st_size, self._etag(st), st.st_mtime_ns)

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        found = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not _is_internal(d)]
            found.extend(
                self._info(Path(folder) / name) for name in files if not _is_internal(name)
            )
        return sorted(found, key=lambda o: o.key)

    def children(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        base = self._path(prefix)
        if not base.is_dir():
            return [], []
        dirs, files = [], []
        for entry in sorted(base.iterdir()):
            if _is_internal(entry.name):
                continue
            if entry.is_dir():
                dirs.append(entry.name)
            elif entry.is_file():
                files.append(self._info(entry))
        return dirs, files

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)

    def copy(self, src: str, dst: str) -> None:
        with atomic_open(self._path(dst), "wb") as out, open(self._path(src), "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)


# --- S3 ----------------------------------------------------------------------------------------

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = ()


def _connection_errors() -> tuple[type[BaseException], ...]:
    global _CONNECTION_ERRORS
    if not _CONNECTION_ERRORS:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )
        from urllib3.exceptions import ProtocolError

        _CONNECTION_ERRORS = (
            EndpointConnectionError,
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
            ProtocolError,
        )
    return _CONNECTION_ERRORS


def s3_max_attempts() -> int:
    """Attempts per S3 call (botocore standard retries: exponential backoff, full jitter)."""
    return int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))


def plain_s3_client():
    """The client dagster-aws's ``S3Resource().get_client()`` builds, for processes
    that must not import Dagster (torchrun and part workers): same session,
    settings and retry configuration, credentials and endpoint from ``AWS_*``."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.resource(
        "s3", config=Config(retries={"max_attempts": s3_max_attempts(), "mode": "standard"})
    ).meta.client


def default_cache_root() -> Path:
    value = os.environ.get("LLAMA_CACHE_DIR", "").strip()
    return Path(value).expanduser() if value else Path(tempfile.gettempdir()) / "llama-cache"


class S3Store(Store):
    scheme = "s3"

    def __init__(
        self, bucket: str, prefix: str = "", client_factory: Callable[[], Any] | None = None
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._factory = client_factory
        self._client = None

    def __repr__(self) -> str:
        return f"S3Store({self.uri()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Store) and (other.bucket, other.prefix) == (
            self.bucket,
            self.prefix,
        )

    def __hash__(self) -> int:
        return hash(("s3", self.bucket, self.prefix))

    def __reduce__(self):
        # Worker processes rebuild a client from the same environment.
        return (S3Store, (self.bucket, self.prefix, None))

    @property
    def client(self):
        if self._client is None:
            self._client = (self._factory or plain_s3_client)()
        return self._client

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def uri(self, key: str = "") -> str:
        full = self._key(key)
        return f"s3://{self.bucket}/{full}" if full else f"s3://{self.bucket}"

    def cache_dir(self) -> Path:
        return default_cache_root() / "s3" / self.bucket / (self.prefix or "_")

    @contextlib.contextmanager
    def _call(self, what: str, key: str) -> Iterator[None]:
        from botocore.exceptions import ClientError

        try:
            yield
        except _connection_errors() as exc:
            raise StorageUnavailable(
                f"the object store at {self.endpoint} did not answer ({what} {self.uri(key)}, "
                f"{s3_max_attempts()} attempts with exponential backoff: {exc}): check that "
                "the server is up and reachable from here and that AWS_ENDPOINT_URL points "
                "at it, then run again; nothing published was lost"
            ) from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise FileNotFoundError(self.uri(key)) from exc
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                raise PreconditionFailed(f"{self.uri(key)}: {code}") from exc
            raise

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._call("GET", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._call("HEAD", key):
                r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, r["ContentLength"], r["ETag"], _ns(r["LastModified"]))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = if_match
        checksum = _sha256_b64(hashlib.sha256(data).hexdigest())
        try:
            with self._call("PUT", key):
                r = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ChecksumSHA256=checksum,
                    **extra,
                )
                return r["ETag"]
        except PreconditionFailed:
            # A retried PUT whose first attempt did land reads as a conflict: it is
            # ours when the object holds exactly these bytes (ETag = MD5 of one PUT).
            current = self.head(key)
            if current and current.etag.strip('"') == hashlib.md5(data).hexdigest():
                return current.etag
            raise

    def upload(self, key: str, local: Path, sha256: str | None = None) -> None:
        local = Path(local)
        size = local.stat().st_size
        with self._call("PUT", key):
            if size <= SINGLE_PUT_LIMIT:
                with open(local, "rb") as fh:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=self._key(key),
                        Body=fh,
                        ChecksumSHA256=_sha256_b64(sha256 or sha256_file(local)),
                    )
            else:
                # Multipart: every part carries its own SHA-256, verified by the server.
                self.client.upload_file(
                    str(local),
                    self.bucket,
                    self._key(key),
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                )

    def download(self, key: str, local: Path) -> None:
        with self._call("GET", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with open(local, "wb") as fh:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    fh.write(chunk)

    def _pages(self, prefix: str, **kwargs):
        full = self._key(prefix)
        with self._call("LIST", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            yield from paginator.paginate(
                Bucket=self.bucket, Prefix=f"{full}/" if full else "", **kwargs
            )

    def list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                found.append(
                    ObjectInfo(
                        self._rel(obj["Key"]),
                        obj["Size"],
                        obj["ETag"],
                        _ns(obj["LastModified"]),
                    )
                )
        return sorted(found, key=lambda o: o.key)

    def children(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        dirs, files = [], []
        for page in self._pages(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                # Some servers (SeaweedFS) keep a folder entry after its last
                # object is deleted: only folders with an object count.
                if self.has_objects(f"{prefix}/{name}" if prefix else name):
                    dirs.append(name)
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    files.append(
                        ObjectInfo(
                            self._rel(obj["Key"]),
                            obj["Size"],
                            obj["ETag"],
                            _ns(obj["LastModified"]),
                        )
                    )
        return sorted(dirs), sorted(files, key=lambda o: o.key)

    def has_objects(self, prefix: str) -> bool:
        for page in self._pages(prefix, MaxKeys=1):
            if page.get("Contents"):
                return True
            break
        return False

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            with self._call("DELETE", keys[i]):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )

    def copy(self, src: str, dst: str) -> None:
        with self._call("COPY", src):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(dst),
                CopySource={"Bucket": self.bucket, "Key": self._key(src)},
            )

    def storage_options(self) -> dict[str, str]:
        """LanceDB's (object_store's) option names, from the client's own settings."""
        credentials = self.client._request_signer._credentials
        options = {"aws_region": self.client.meta.region_name or "us-east-1"}
        endpoint = self.client.meta.endpoint_url
        if endpoint and not endpoint.startswith("https://s3.amazonaws.com"):
            options["aws_endpoint"] = endpoint
            if endpoint.startswith("http://"):
                options["allow_http"] = "true"
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options["aws_access_key_id"] = frozen.access_key
            options["aws_secret_access_key"] = frozen.secret_key
            if frozen.token:
                options["aws_session_token"] = frozen.token
        return options


def _ns(when) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, prefix.strip("/")


def open_root(uri: str | Path, client_factory: Callable[[], Any] | None = None) -> Location:
    """The Location of a data root: ``s3://bucket/prefix`` or a local directory."""
    text = str(uri)
    if text.startswith("s3://"):
        return Location(S3Store(*split_s3_uri(text), client_factory=client_factory), "")
    return Location(LocalStore(text), "")


# --- locations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A key under a store's root, with the path-like methods the stages use.

    Local locations are also path-like (``os.fspath``), so libraries that take
    paths keep working on the local store; an S3 location refuses, which is
    how code that still needs a local copy shows itself.
    """

    store: Store
    key: str = ""

    def __lt__(self, other: Location) -> bool:
        # Sorted by key, as paths sort (listings, `sorted(folder.glob(...))`).
        return self.key < other.key

    # names ------------------------------------------------------------------
    def __truediv__(self, part: str) -> Location:
        part = str(part).strip("/")
        return Location(self.store, f"{self.key}/{part}" if self.key else part)

    def joinpath(self, *parts: str) -> Location:
        out = self
        for part in parts:
            out = out / part
        return out

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(str(self)).parts

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def parent(self) -> Location:
        parent = str(PurePosixPath(self.key).parent)
        return Location(self.store, "" if parent == "." else parent)

    def with_suffix(self, suffix: str) -> Location:
        return Location(self.store, str(PurePosixPath(self.key).with_suffix(suffix)))

    def with_name(self, name: str) -> Location:
        return Location(self.store, str(PurePosixPath(self.key).with_name(name)))

    def relative_to(self, other: Location) -> str:
        return str(PurePosixPath(self.key).relative_to(other.key or "."))

    def __str__(self) -> str:
        return self.store.uri(self.key)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:
        path = self.store.local_path(self.key)
        if path is None:
            raise TypeError(f"{self} is not on the local disk: read it through its Location")
        return str(path)

    @property
    def local(self) -> Path | None:
        """The path on this machine's disk, for a local store; None on S3."""
        return self.store.local_path(self.key)

    @property
    def is_local(self) -> bool:
        return self.local is not None

    # reads ------------------------------------------------------------------
    def stat(self) -> ObjectInfo | None:
        return self.store.head(self.key)

    def is_file(self) -> bool:
        return self.store.head(self.key) is not None

    def is_dir(self) -> bool:
        local = self.local
        if local is not None:
            return local.is_dir()
        return self.store.has_objects(self.key)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def read_bytes(self) -> bytes:
        return self.store.get(self.key)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def iterdir(self) -> list[Location]:
        """Sub-folders and objects directly below, sorted by name."""
        dirs, files = self.store.children(self.key)
        names = sorted([*dirs, *(PurePosixPath(f.key).name for f in files)])
        return [self / name for name in names]

    def glob(self, pattern: str) -> list[Location]:
        """Objects below whose relative key matches `pattern` part by part (``*``
        within one name, as ``Path.glob`` without ``**``), sorted by key."""
        local = self.local
        if local is not None:
            return [self / p.relative_to(local).as_posix() for p in sorted(local.glob(pattern))]
        want = PurePosixPath(pattern)
        return [
            self / obj.key
            for obj in sorted(self.files(), key=lambda o: o.key)
            if len(PurePosixPath(obj.key).parts) == len(want.parts)
            and PurePosixPath(obj.key).match(pattern)
        ]

    def subdirs(self) -> list[Location]:
        return [self / name for name in self.store.children(self.key)[0]]

    def files(self) -> list[ObjectInfo]:
        """Every object below (all depths), keys relative to this location."""
        cut = len(self.key) + 1 if self.key else 0
        return [
            ObjectInfo(o.key[cut:], o.size, o.etag, o.mtime_ns) for o in self.store.list(self.key)
        ]

    def mtime(self) -> float:
        """Modification time: the folder's own (local) or its newest object's (S3)."""
        local = self.local
        if local is not None:
            return local.stat().st_mtime
        info = self.stat()
        if info is not None:
            return info.mtime
        return max((o.mtime for o in self.files()), default=0.0)

    @contextlib.contextmanager
    def open(self, mode: str = "r", **kwargs: Any) -> Iterator[IO]:
        """Read (the whole object, or the local file) or write (atomically: the
        object appears whole when the block completes, or not at all)."""
        local = self.local
        if "r" in mode:
            if local is not None:
                with open(local, mode, **kwargs) as fh:
                    yield fh
                return
            data = io.BytesIO(self.read_bytes())
            yield data if "b" in mode else io.TextIOWrapper(data, **kwargs)
            return
        if local is not None:
            with atomic_open(local, mode, **kwargs) as fh:
                yield fh
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "object"
            with open(path, mode, **kwargs) as fh:
                yield fh
            self.store.upload(self.key, path)

    # writes -----------------------------------------------------------------
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """A folder on the local store; nothing on S3, where folders are only prefixes."""
        if self.local is not None:
            self.local.mkdir(parents=parents, exist_ok=exist_ok)

    def write_bytes(self, data: bytes) -> str:
        return self.store.put(self.key, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> str:
        return self.write_bytes(text.encode(encoding))

    def write_json(self, obj: Any) -> str:
        return self.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def unlink(self, missing_ok: bool = True) -> None:
        if not missing_ok and not self.is_file():
            raise FileNotFoundError(str(self))
        self.store.delete([self.key])

    def rmtree(self) -> None:
        self.store.delete_prefix(self.key)

    def remove(self) -> None:
        """Delete whatever is here: an object or a whole folder."""
        if self.is_file():
            self.unlink()
        else:
            self.rmtree()


def as_location(value: Location | Path | str) -> Location:
    """A Location from a Location, a local path or a URI."""
    if isinstance(value, Location):
        return value
    text = str(value)
    if text.startswith("s3://"):
        return open_root(text)
    path = Path(text).expanduser().resolve()
    return Location(LocalStore(path.parent), path.name)


# --- local copies of folders -------------------------------------------------------------------


@contextlib.contextmanager
def local_copy(folder: Location) -> Iterator[Path]:
    """A local folder holding `folder`'s files: the folder itself on the local
    store, a temporary download (removed afterwards) on S3."""
    local = folder.local
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="llama-copy-") as tmp:
        for obj in folder.files():
            target = Path(tmp) / obj.key
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.store.download(f"{folder.key}/{obj.key}", target)
        yield Path(tmp)


def local_file(location: Location) -> Path:
    """`location`'s bytes on this machine's disk: the file itself on the local
    store; on S3 a fresh download into the cache (a path that does not exist when
    the object does not), for readers that take a path (TOML, JSON lines)."""
    local = location.local
    if local is not None:
        return local
    target = location.store.cache_dir() / "files" / location.key
    target.unlink(missing_ok=True)
    try:
        data = location.read_bytes()
    except FileNotFoundError:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def local_folder(location: Location) -> Path:
    """A folder's files on this machine's disk: the folder itself on the local
    store; on S3 a cached mirror, refreshed (`mirror_prefix`)."""
    local = location.local
    if local is not None:
        return local
    target = location.store.cache_dir() / "folders" / location.key
    mirror_prefix(location, target)
    return target


MIRROR_STATE = ".mirror.json"


def mirror_prefix(folder: Location, target: Path) -> int:
    """Make `target` hold exactly `folder`'s objects, downloading only those new
    or changed since the last call (by etag), and deleting local files the
    store no longer has; returns how many were downloaded. Meant for folders of
    immutable files written before the manifest that names them (a LanceDB
    table): a listing then never shows a version whose files are missing."""
    target.mkdir(parents=True, exist_ok=True)
    state_file = target / MIRROR_STATE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    listed = {obj.key: obj for obj in folder.files()}
    fetched = 0
    for key, obj in listed.items():
        path = target / key
        if state.get(key) == obj.etag and path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
        os.close(fd)
        try:
            folder.store.download(f"{folder.key}/{key}", Path(tmp))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        state[key] = obj.etag
        fetched += 1
    for key in set(state) - set(listed):
        (target / key).unlink(missing_ok=True)
        del state[key]
    state_file.write_text(json.dumps(state))
    return fetched


# --- directory trees (checkpoints, models) -----------------------------------------------------


class CorruptTreeError(RuntimeError):
    """A published tree has no manifest, or a file does not match it."""


def new_version_id() -> str:
    """A unique, time-ordered prefix for one write's files."""
    return f"v{time.time_ns():x}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def tree_writer(dest: Location) -> Iterator[Path]:
    """Yield an empty local folder; when the block completes its files become
    `dest` as a whole (a rename on the local store, `publish_tree` on S3), and
    when it fails nothing changes."""
    local = dest.local
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(
            tempfile.mkdtemp(dir=local.parent, prefix=temp_prefix(local.name), suffix=".tmp")
        )
        try:
            yield staged
            replace_dir(staged, local)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return
    with tempfile.TemporaryDirectory(prefix="llama-tree-") as tmp:
        yield Path(tmp)
        publish_tree(Path(tmp), dest)


def publish_tree(local: Path, dest: Location) -> dict:
    """Upload every file of `local` under ``dest/<version>/`` with its checksum,
    then ``dest/tree.json`` (relative path -> size, sha256) with a conditional
    PUT; files of earlier versions are collected after the grace period."""
    version = new_version_id()
    files = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        digest = sha256_file(path)
        files[rel] = {"size": path.stat().st_size, "sha256": digest}
        dest.store.upload(f"{(dest / version / rel).key}", path, digest)
    manifest = {"version": version, "files": files}
    publish_manifest(dest / TREE_MANIFEST, manifest)
    collect_garbage(dest, {f"{version}/{rel}" for rel in files} | {TREE_MANIFEST})
    return manifest


def publish_manifest(target: Location, manifest: dict, expected_etag: str | None = "read") -> str:
    """Write a manifest with a conditional PUT: ``If-None-Match: *`` when there is
    none yet, ``If-Match`` on the etag read before (`expected_etag`; "read" reads
    it now). PreconditionFailed means another writer published in between."""
    if expected_etag == "read":
        current = target.stat()
        expected_etag = current.etag if current else None
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    if expected_etag is None:
        return target.store.put(target.key, data, if_none_match=True)
    return target.store.put(target.key, data, if_match=expected_etag)


def collect_garbage(
    folder: Location, referenced: set[str], grace_seconds: float | None = None
) -> list[str]:
    """Delete the objects under `folder` that `referenced` (keys relative to it)
    does not name and that are older than the grace period; returns them."""
    grace = gc_grace_seconds() if grace_seconds is None else grace_seconds
    cutoff = time.time() - grace
    doomed = [o.key for o in folder.files() if o.key not in referenced and o.mtime <= cutoff]
    folder.store.delete(f"{folder.key}/{k}" if folder.key else k for k in doomed)
    if folder.local is not None:
        _remove_empty_dirs(folder.local)
    return doomed


def _remove_empty_dirs(root: Path) -> None:
    for folder, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
        if folder != str(root):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def read_tree_file(dest: Location, rel: str) -> bytes:
    """One file of a published tree, without fetching the rest (verified on S3)."""
    if dest.local is not None:
        return (dest / rel).read_bytes()
    manifest = (dest / TREE_MANIFEST).read_json()
    entry = manifest["files"].get(rel)
    if entry is None:
        raise FileNotFoundError(f"{dest}/{rel}")
    data = (dest / manifest["version"] / rel).read_bytes()
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptTreeError(f"{dest}: {rel} does not match {TREE_MANIFEST}")
    return data


def fetch_tree(dest: Location) -> Path:
    """A local folder with `dest`'s files, verified against its manifest: the
    folder itself on the local store; on S3 a cached copy, downloaded again
    only when the manifest changed. CorruptTreeError if it has no manifest or a
    file does not match."""
    local = dest.local
    if local is not None:
        return local
    try:
        raw = (dest / TREE_MANIFEST).read_bytes()
    except FileNotFoundError as exc:
        raise CorruptTreeError(
            f"{dest}: no {TREE_MANIFEST} (never published, or cut short)"
        ) from exc
    manifest = json.loads(raw)
    target = dest.store.cache_dir() / dest.key
    marker = target / f".{TREE_MANIFEST}"
    if marker.is_file() and marker.read_bytes() == raw:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=".tmp")
    )
    try:
        for rel, entry in manifest["files"].items():
            path = staged / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            dest.store.download((dest / manifest["version"] / rel).key, path)
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                raise CorruptTreeError(f"{dest}: {rel} does not match {TREE_MANIFEST}")
        (staged / f".{TREE_MANIFEST}").write_bytes(raw)
        replace_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return target
