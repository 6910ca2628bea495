"""Atomic writes: a file or a folder appears complete or not at all, with the modes the user's umask gives.

    write_file(path, text_or_bytes)             # a temp sibling, then os.replace
    replace_file(path, lambda tmp: fig.savefig(tmp))   # whatever writes a file at `tmp`
    write_folder(out, overwrite, lambda tmp: ...)      # a temp sibling folder, swapped into place (renameat2)
    recover(out)                                 # after a kill: undo a half-done folder swap, drop temp siblings
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

from minigptv2.errors import MiniGPTv2Error


def replace_file(path, write) -> Path:
    """`write(tmp)` writes a temp sibling of `path` (same folder, so the rename stays on one filesystem); it then
    replaces `path` in one step. A failure leaves `path` as it was and no temp file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_file(path, data: str | bytes) -> Path:
    """`path` holds `data` (text as UTF-8), replaced atomically."""
    return replace_file(path, lambda tmp: tmp.write_bytes(data) if isinstance(data, bytes)
                        else tmp.write_text(data, encoding="utf-8"))


def write_folder(out_dir, overwrite: bool, write) -> Path:
    """Whatever `write(tmp)` puts in a temp sibling, swapped into place atomically. Files get the user's umask."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MiniGPTv2Error(f"output folder {out} exists and is not empty")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    except PermissionError as e:
        raise MiniGPTv2Error(f"cannot write {out}: permission denied ({e.filename})") from None
    try:
        write(tmp)
        _apply_umask(tmp)
        _fsync_dir(tmp, files=True)
        if not out.exists():
            os.replace(tmp, out)
        elif _exchange(tmp, out):                     # atomic: `out` is the old folder, then the new one
            shutil.rmtree(tmp, ignore_errors=True)   # tmp now holds the old folder
        else:                                         # no renameat2: two renames; `recover` closes the gap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, PermissionError):
            raise MiniGPTv2Error(f"cannot write {out}: permission denied ({e.filename})") from None
        raise
    return out


def _apply_umask(d: Path) -> None:
    """mkdtemp makes 0700 folders: give the tree the modes a plain mkdir / open would have."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [d, *d.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def recover(out_dir) -> None:
    """Undo what a save killed half-way left next to `out_dir`: put back the old folder if the two-rename
    fallback was cut between its renames, and delete temporary siblings. Call it only while nothing else
    is saving to `out_dir`."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        return
    if not out.exists():
        olds = sorted((d / "x" for d in out.parent.glob(f".{out.name}.old*") if (d / "x").is_dir()),
                      key=lambda d: d.stat().st_mtime)
        if olds:
            os.replace(olds[-1], out)
    for d in [*out.parent.glob(f".{out.name}.tmp*"), *out.parent.glob(f".{out.name}.old*")]:
        shutil.rmtree(d, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where the OS / filesystem lacks it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(d: Path, files: bool = False) -> None:
    """Flush the files of `d` (if `files`) and the folder entry itself, so a rename never outlives the data."""
    if files:
        for f in d.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir():
                _fsync_dir(f)
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:          # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:          # some filesystems refuse fsync on a folder; the files themselves are synced
        pass
    finally:
        os.close(fd)
