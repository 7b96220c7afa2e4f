"""Videos on any filesystem Beam knows (``gs://``, ``s3://``, ``hdfs://``...), decoded locally.

PyAV (FFmpeg) opens local files only, so a video whose path has a scheme is copied through
Beam's ``FileSystems`` into a temporary local file for the time it is decoded
(:func:`local_media`); messages still name the original path. A file to write on such a
filesystem is written locally first and copied there when complete (:func:`local_output`;
TensorFlow's writers know only local and ``gs://`` files). Local paths (and ``file://``) are
used in place. The Beam job on a cluster can so read its ``data.video_root`` from a bucket and
publish into one, as docs/cluster.md describes.

Example:
    >>> with local_media("gs://bucket/videos/a.mp4") as path:      # doctest: +SKIP
    ...     clip = load_clip(path, cfg)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from maivar_tf.data.errors import MediaError

#: ``scheme://``: a path on another filesystem than the local one.
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
#: Bytes per read when copying a remote video.
CHUNK = 1 << 22


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file on a non-local filesystem (a scheme other than ``file``)."""
    m = _SCHEME.match(os.fspath(path))
    return bool(m) and m.group("scheme").lower() != "file"


def join_path(root: str, relative: str) -> str:
    """``relative`` below ``root``, local or remote (``gs://b/videos`` + ``a/x.mp4``)."""
    if is_remote(root):
        return f"{root.rstrip('/')}/{relative.lstrip('/')}"
    return os.path.join(root, relative)


def _local_name(path: str) -> str:
    return path[len("file://"):] if path.lower().startswith("file://") else path


@contextlib.contextmanager
def local_media(path: str | os.PathLike) -> Iterator[str]:
    """A local path holding ``path``'s bytes, for as long as the ``with`` block runs.

    Remote files are copied through ``apache_beam.io.filesystems.FileSystems`` into a
    temporary file (deleted afterwards); a :class:`MediaError` raised inside the block names
    ``path``, not the copy.

    Raises:
        MediaError: ``missing`` when a remote file does not exist, ``decode_error`` when it
            cannot be read.
    """
    path = os.fspath(path)
    if not is_remote(path):
        yield _local_name(path)
        return
    from apache_beam.io.filesystems import FileSystems

    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="maivar-media-", suffix=suffix)
    try:
        try:
            if not FileSystems.exists(path):
                raise MediaError("missing", f"{path}: no such file")
            with FileSystems.open(path) as src, os.fdopen(fd, "wb") as dst:
                fd = None
                shutil.copyfileobj(src, dst, CHUNK)
        except MediaError:
            raise
        except Exception as e:  # noqa: BLE001 - any filesystem failure names the file
            raise MediaError("decode_error", f"{path}: cannot read: {e}") from e
        try:
            yield tmp
        except MediaError as e:
            raise MediaError(e.reason, e.message.replace(tmp, path)) from e
    finally:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(tmp)


@contextlib.contextmanager
def local_output(path: str) -> Iterator[str]:
    """A local file to write ``path`` into: ``path`` itself when local, else a temporary file
    copied to ``path`` through Beam's ``FileSystems`` when the ``with`` block ends without an
    error (and deleted either way)."""
    if not is_remote(path):
        yield path
        return
    from apache_beam.io.filesystems import FileSystems

    fd, tmp = tempfile.mkstemp(prefix="maivar-output-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as src, FileSystems.create(path) as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    finally:
        os.remove(tmp)
