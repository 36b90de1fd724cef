"""Reading user folders safely: only regular files inside the root, never a FIFO that blocks forever.

A FIFO, socket or device under a capture or ground-truth folder would hang `open()` or read
garbage; a symlink loop or a link out of the root would fail or read what the user never meant.
`problem(path, root)` says what is wrong with a path (None for a readable regular file inside
root), and `open_regular` opens without blocking and checks the file it actually got.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


class NotRegularFile(OSError):
    """A path that is not a readable regular file; the message names it and says what to do."""


def kind(mode: int) -> str | None:
    """What a stat mode is, when it is not a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def problem(path: str | Path, root: str | Path | None = None) -> str | None:
    """Why `path` cannot be read as data (ends with the fix), or None when it is a regular file inside root."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop; remove the link or point it at a file"
        if path.is_symlink():
            return "a broken symbolic link; remove it or point it at a file"
        return f"cannot be read ({exc.strerror}); check it exists and its permissions"
    found = kind(mode)
    if found is not None:
        return f"{found}, not a regular file; only regular files are read: move it out of the folder"
    if root is not None and path.is_symlink():
        base = Path(root).resolve()
        if not path.resolve().is_relative_to(base):
            return f"a link to {path.resolve()}, outside {base}; copy the file in instead of linking it"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied); fix its permissions"
    return None


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for binary reading without ever blocking on a FIFO; NotRegularFile otherwise."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise NotRegularFile(exc.errno, f"{path}: {problem(path) or exc.strerror}", str(path)) from None
    try:
        found = kind(os.fstat(descriptor).st_mode)
        if found is not None:
            raise NotRegularFile(errno.EINVAL, f"{path}: {found}, not a regular file; only regular files are read: "
                                 "move it out of the folder", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def walk_files(root: str | Path, suffix: str = "") -> Iterator[tuple[Path, str | None]]:
    """Every entry below root whose name ends with suffix, sorted, with its problem (None: readable).

    Folders are walked without following links (so a link loop cannot recurse); a folder whose name
    ends with the suffix is reported, not read.
    """
    root = Path(root)
    for folder, folders, files in os.walk(root, followlinks=False):
        folders.sort()
        here = Path(folder)
        entries = sorted(files + [name for name in folders if name.endswith(suffix)])
        for name in entries:
            if name.endswith(suffix):
                path = here / name
                yield path, problem(path, root)
