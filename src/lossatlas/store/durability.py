"""What keeps a store whole on disk, whatever happens to the process or the disk.

HDF5 has no journal: a flush that fails half-way leaves metadata pointing past the end of the
file, and a file two processes write at once is lost. So this layer takes POSIX locks beside the
file (HDF5's own locking is often off on clusters), refuses to start a write on a nearly full disk,
reserves the blocks a flush will add (Linux ``fallocate``), abandons a write the disk could not take
without letting HDF5 write more (``dup2`` onto /dev/null), and creates a store beside its path and
renames it, so a new store appears whole or not at all. It knows files, not what a store holds.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

import h5py

from ..errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: HDF5's own locking only
    fcntl = None

_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE
_FLUSH_SLACK = 64 << 10  # metadata HDF5 may still allocate while flushing
try:
    _fallocate = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except (OSError, AttributeError, TypeError):  # pragma: no cover - not Linux: the free-space check only
    _fallocate = None

class StoreLocked(StoreError):
    """Another process holds the store (a writer while this one reads, or any holder while this one
    writes): ``lossatlas inspect`` then reads it without locks (``Store(..., concurrent=True)``)."""


# HDF5's 1.8 file format (readable by any HDF5 since 2008) for what is written: HDF5 then checksums its own
# metadata (object headers, links), so a flipped byte there is an error rather than a result gone missing
LIBVER = ("v108", "latest")
_OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_OUT_OF_SPACE_TEXT = ("no space left", "file too large", "disk quota", "errno = 28", "errno = 27", "errno = 122")


# -- disk space ----------------------------------------------------------------------------------
def out_of_space(err: OSError) -> bool:
    text = str(err).lower()
    return err.errno in _OUT_OF_SPACE or any(mark in text for mark in _OUT_OF_SPACE_TEXT)


def min_free_bytes() -> int:
    return int(float(os.environ.get("LOSSATLAS_MIN_FREE_MB", "64")) * 2**20)


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_free_space(path: Path) -> None:
    """Refuse to start a write below LOSSATLAS_MIN_FREE_MB (default 64): a write that starts has
    room to finish, so it never fails half-way and damages the store."""
    free = free_bytes(path.parent)
    if free is not None and free < min_free_bytes():
        raise StoreError(
            f"The disk holding {path} is (nearly) full: {free / 2**20:.1f} MiB free. lossatlas stops before "
            f"writing below {min_free_bytes() / 2**20:g} MiB (LOSSATLAS_MIN_FREE_MB) so that a write never "
            "fails half-way and damages the store; everything finished so far is kept. Free space, then rerun "
            "the same command to resume.")


def reserve(file: h5py.File, extra: int = 0) -> None:
    """Allocate the disk blocks the next flush (and ``extra`` bytes of array data) will write past
    the end of the file, so that the write cannot run out of space half-way (Linux fallocate,
    keeping the file size): HDF5 does not survive a dataset whose close fails for lack of space."""
    if _fallocate is None:
        return
    fd = file.id.get_vfd_handle()
    end = os.fstat(fd).st_size
    needed = file.id.get_filesize() + _FLUSH_SLACK + extra - end
    if needed > 0 and _fallocate(fd, _KEEP_SIZE, end, needed) != 0:
        code = ctypes.get_errno()
        if code in _OUT_OF_SPACE:
            raise OSError(code, os.strerror(code))


def abandon(file: h5py.File) -> None:
    """Close the HDF5 file without letting it write anything more: its descriptor is pointed at
    /dev/null first, so the metadata it still holds for the failed write goes nowhere and the file
    on disk stays as the last finished write left it."""
    if file.driver == "sec2":  # the default on-disk driver, whose handle is a descriptor
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, file.id.get_vfd_handle())
        finally:
            os.close(null)
    try:
        file.close()
    except Exception:  # noqa: BLE001 -- HDF5 complains about the writes it could not do
        pass


# -- creating and opening ------------------------------------------------------------------------
def create_atomically(path: Path, initialize: Callable[[h5py.File], None]) -> None:
    """A new file appears at ``path`` whole or not at all: written beside it by ``initialize``, then
    renamed, so a kill while creating it never leaves a truncated file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w", libver=LIBVER) as file:
            initialize(file)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def open_hdf5(path: Path, mode: str, locking: bool = True) -> h5py.File:
    """``path`` opened read-only ("r") or for appending ("a"); what goes wrong is a StoreError that
    says why (permissions, another process's lock, a file that is not HDF5). ``locking=False`` (read
    only): without HDF5's file lock, so that a file another process writes can be read."""
    try:
        if not locking:
            return h5py.File(path, "r", locking=False)
        return h5py.File(path, mode) if mode == "r" else h5py.File(path, mode, libver=LIBVER)
    except (OSError, ValueError, RuntimeError) as err:
        text = str(err).lower()
        denied = getattr(err, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS)
        if mode != "r" and (denied or "permission denied" in text or "read-only file system" in text):
            raise StoreError(f"Cannot open the store {path} for writing: {err}. Make the file and its folder "
                             "writable, or copy the store somewhere writable; `lossatlas inspect` and `lossatlas "
                             "report` only read it.") from err
        if "unable to lock" in text:
            holder = "for writing" if mode == "r" else "(a writer, or a reader while you want to write)"
            raise StoreLocked(
                f"The store {path} is locked: another process has it open {holder}. "
                "Wait for it to finish, or open a copy."
            ) from err
        raise StoreError(
            f"{path} is not a readable HDF5 file (corrupt or truncated?): {err}. It was not modified."
        ) from err


# -- locks ---------------------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # lock file -> [open handle, holders in this process, exclusive?]
_BUSY = {errno.EAGAIN, errno.EACCES}  # lockf's "another process holds it"; other errors: no locking there


def lock(path: Path, shared: bool) -> str | None:
    """Lock ``path`` through ``<path>.lock`` with POSIX record locks (exclusive for writers,
    shared for readers), independent of HDF5's own file locking, which clusters often disable
    (HDF5_USE_FILE_LOCKING=FALSE on network filesystems). Opens within this process share the
    lock, a writer upgrading a reader's (HDF5 itself arbitrates opens within a process). None
    where fcntl is missing, LOSSATLAS_FILE_LOCKING=0, the filesystem has no locks (a warning),
    or a reader cannot open the lock file."""
    if fcntl is None or os.environ.get("LOSSATLAS_FILE_LOCKING", "1") == "0":
        return None
    lock_path = path.with_name(path.name + ".lock")
    key = str(lock_path.resolve())
    if key in _HELD:
        handle, _, exclusive = _HELD[key]
        if not shared and not exclusive:
            _take(handle, path, shared=False)
            _HELD[key][2] = True
        _HELD[key][1] += 1
        return key
    handle = _lock_file(path, lock_path, shared)
    if handle is None:
        return None
    try:
        if not _take(handle, path, shared):
            handle.close()
            return None
    except BaseException:
        handle.close()
        raise
    _HELD[key] = [handle, 1, not shared]
    return key


def _lock_file(path: Path, lock_path: Path, shared: bool):
    """The lock file, created with the store's permission bits (a group-writable store stays
    writable by the group); a reader that cannot create it opens it read-only, or goes without."""
    mode = (path.stat().st_mode & 0o666) if path.exists() else 0o644
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, mode)
        return os.fdopen(descriptor, "r+")
    except OSError as err:
        if not shared:
            raise StoreError(f"Cannot write beside the store {path} (lock file {lock_path}: {err.strerror}); "
                             "is the folder writable?") from err
    try:
        return open(lock_path)
    except OSError:
        return None


def _take(handle, path: Path, shared: bool) -> bool:
    """Take the lock; False where the filesystem has no locks (then HDF5's own locking applies)."""
    try:
        fcntl.lockf(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in _BUSY:
            warnings.warn(f"{path}: file locks are not supported here ({err.strerror}); relying on HDF5's own "
                          "locking. Run one writer per store.", stacklevel=3)
            return False
        holder = "for writing" if shared else "(a writer, or a reader while you want to write)"
        raise StoreLocked(f"The store {path} is locked: another process has it open {holder}. "
                          "Wait for it to finish, or open a copy.") from err
    return True


def unlock(key: str | None) -> None:
    if key is None or key not in _HELD:
        return
    _HELD[key][1] -= 1
    if _HELD[key][1] == 0:
        _HELD.pop(key)[0].close()  # closing the handle releases the lock
