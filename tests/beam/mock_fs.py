"""A Beam filesystem ``mockfs://<local path>`` standing in for gs://, s3:// or hdfs:// in tests.

It stores files on the local disk but is reached through the scheme only, so code that
handles remote paths (``FileSystems``, :mod:`maivar_tf.data.remote`) is exercised the way a
bucket would exercise it: a local-path shortcut (``open()``, PyAV, ``tf.io``) on a
``mockfs://`` path fails. Defining the class registers it (Beam finds filesystems by subclass).
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "mockfs://"


def _local(path: str) -> str:
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


def _remote(path: str) -> str:
    return path if path.startswith(PREFIX) else PREFIX + path


class MockFileSystem(LocalFileSystem):
    """``mockfs://`` + an absolute local path."""

    @classmethod
    def scheme(cls):
        return "mockfs"

    def join(self, basepath, *paths):
        return _remote(super().join(_local(basepath), *paths))

    def split(self, path):
        head, tail = super().split(_local(path))
        return _remote(head), tail

    def mkdirs(self, path):
        return super().mkdirs(_local(path))

    def _list(self, dir_or_prefix):
        root = _local(dir_or_prefix)
        if not os.path.exists(root):
            return
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                yield FileMetadata(_remote(path), os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        return super().create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(_local(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        return super().copy([_local(p) for p in source_file_names],
                            [_local(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        return super().rename([_local(p) for p in source_file_names],
                              [_local(p) for p in destination_file_names])

    def exists(self, path):
        return super().exists(_local(path))

    def size(self, path):
        return super().size(_local(path))

    def last_updated(self, path):
        return super().last_updated(_local(path))

    def checksum(self, path):
        return super().checksum(_local(path))

    def metadata(self, path):
        m = super().metadata(_local(path))
        return FileMetadata(_remote(m.path), m.size_in_bytes, m.last_updated_in_seconds)

    def delete(self, paths):
        missing = {}
        for path in paths:
            local = _local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)
            else:
                missing[path] = OSError(f"No files found to delete under: {path}")
        if missing:
            raise BeamIOError("Delete operation failed", missing)
