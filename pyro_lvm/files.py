"""Files pyro_lvm writes: atomically (temporary file, fsync, rename), so that a crash or an
interrupt while writing leaves the previous file intact and never a truncated one.

Checkpoints, reports and metrics all go through :func:`atomic_open`; a write that fails names
the file it was writing (a full disk too, which ``torch.save`` reports as a RuntimeError).
A command that writes into a directory holds its lock (:func:`directory_lock`) and checks
the free space first (:func:`check_free_space`). Importing this module loads neither torch
nor numpy, so that the command line can find a directory in use before it loads them
(:func:`check_not_in_use`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "MIN_FREE_BYTES", "DirectoryInUse", "atomic_open", "check_free_space",
           "check_not_in_use", "directory_lock", "is_write_failure", "jsonable", "versions",
           "write_json"]

#: The lock file a command holds in the directory it writes to (:func:`directory_lock`).
LOCK_NAME = ".pyro-lvm.lock"
#: Free space below which a command refuses to start writing (:func:`check_free_space`): a
#: run's files take a few MB (the 784-200-200-50 VAE's checkpoint is 2 MB).
MIN_FREE_BYTES = 20 * 2**20


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None) -> Iterator:
    """Open a temporary file next to ``path`` for writing; on success it is flushed, synced
    and renamed onto ``path`` (creating parent directories); on any error it is removed and
    ``path`` is left as it was.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> with atomic_open(p, "w", encoding="utf-8") as f:
    ...     _ = f.write("done")
    >>> p.read_text()
    'done'
    >>> try:
    ...     with atomic_open(p, "w", encoding="utf-8") as f:
    ...         _ = f.write("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> p.read_text(), sorted(q.name for q in p.parent.iterdir())
    ('done', ['b.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp, prefix = None, f".{path.name}.{os.getpid()}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        # the writer's pid in the name: a file left by a killed writer is found and removed
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and (  # named by the file, not its temporary copy
                exc.filename is None or os.path.basename(str(exc.filename)).startswith(prefix)):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        if is_write_failure(exc):
            raise OSError(errno.ENOSPC, f"write failed, is the disk full? ({_first_line(exc)})",
                          str(path)) from exc
        raise


def _umask() -> int:
    """The process's umask, read from /proc on Linux: setting it to read it (elsewhere) races
    with other threads creating files.

    >>> 0 <= _umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_orphans(path: Path) -> None:
    """Remove temporary files of ``path`` whose writer no longer runs (killed while writing:
    SIGKILL runs no cleanup). Another live writer's file is left alone.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / ".c.pt.999999999.abc.tmp").write_bytes(b"half")  # no such process
    4
    >>> _remove_orphans(d / "c.pt"); list(d.iterdir())
    []
    """
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # the writer is gone
            with contextlib.suppress(OSError):
                tmp.unlink()
        except (PermissionError, OverflowError, OSError):
            continue  # alive under another user, or not a pid


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is ``torch.save`` failing to write its file (a full disk, usually):
    torch reports that as a RuntimeError ("[enforce fail at inline_container.cc:...]
    unexpected pos ..." or "... file write failed"), not as an OSError.

    >>> is_write_failure(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
    ...                               "pos 1088 vs 1000")), is_write_failure(RuntimeError("x"))
    (True, False)
    """
    return isinstance(exc, RuntimeError) and any(
        words in str(exc) for words in ("unexpected pos", "file write failed"))


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(
        exc).__name__)


class DirectoryInUse(OSError):
    """Another process holds the directory's lock (:func:`directory_lock`)."""


def check_free_space(directory, minimum: int = MIN_FREE_BYTES) -> None:
    """Raise OSError (ENOSPC) if the disk of ``directory`` has less than ``minimum`` bytes
    free: better refused before training than failing at the first checkpoint or the report.

    >>> check_free_space(tempfile.gettempdir(), minimum=0)
    """
    free = shutil.disk_usage(directory).free
    if free < minimum:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.1f} MB free on its disk (pyro-lvm "
                      f"needs at least {minimum / 2**20:.0f} MB to write a run)", str(directory))


@contextlib.contextmanager
def directory_lock(directory, command: str) -> Iterator[Path]:
    """Hold ``directory/.pyro-lvm.lock`` while writing into ``directory`` (which must exist):
    a second process asking for it meanwhile gets :class:`DirectoryInUse` at once, naming
    the command and process that hold it. The file is removed on every exit that runs
    Python's cleanup (success, an error, Ctrl-C).

    The lock is an advisory ``flock`` on the file, which the operating system releases when
    its process ends however it ends: a lock file left behind by a killed process (SIGKILL,
    a power cut) is taken over by the next command, never blocks it. (Where ``flock`` does
    not exist, on Windows, an existing lock file is refused until someone removes it.)

    >>> d = tempfile.mkdtemp()
    >>> with directory_lock(d, "fit"):
    ...     try:
    ...         with directory_lock(d, "demo"):
    ...             pass
    ...     except DirectoryInUse as exc:
    ...         print(str(exc).split(": ", 1)[1])
    in use by `pyro-lvm fit` (process ...), which is still running; wait for it ... directory
    >>> os.listdir(d)
    []
    """
    directory = Path(directory)
    path = directory / LOCK_NAME
    holder = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    fd = _take_lock(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        yield path
    finally:
        try:
            with contextlib.suppress(OSError):
                os.unlink(path)  # before the lock is released: no one else holds this file
        finally:
            os.close(fd)


def check_not_in_use(directory) -> None:
    """Raise :class:`DirectoryInUse` if another process holds ``directory``'s lock now: a
    quick look, taken before the slow imports of a command, that fails a second command at
    once (:func:`directory_lock` takes the lock itself later). A directory without a lock
    file, or where locks are not supported, passes.

    >>> d = tempfile.mkdtemp()
    >>> check_not_in_use(d)
    >>> with directory_lock(d, "fit"):
    ...     try:
    ...         check_not_in_use(d)
    ...     except DirectoryInUse as exc:
    ...         print(str(exc).split(": ", 1)[1][:28])
    in use by `pyro-lvm fit` (pr
    """
    path = Path(directory) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # gone meanwhile, or unreadable: directory_lock will say
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while a holder has LOCK_EX
    except BlockingIOError:
        raise DirectoryInUse(_in_use(path)) from None
    except OSError:
        pass
    finally:
        os.close(fd)  # and with it the shared lock, if it was taken


def _open_lock_file(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags, 0o644)
    except FileExistsError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write there ({exc.strerror})",
                      str(path.parent)) from None


def _take_lock(path: Path) -> int:
    """An open descriptor of ``path`` that this process alone holds locked."""
    if fcntl is None:  # pragma: no cover - Windows: the file's existence is the lock
        try:
            return _open_lock_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            raise DirectoryInUse(_in_use(path, "; if no pyro-lvm command is running, remove "
                                               f"{path}")) from None
    while True:
        fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryInUse(_in_use(path)) from None
        except OSError:  # a file system without flock (some network mounts): run unlocked
            return fd
        try:  # the holder may have removed the file between our open and our lock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _in_use(path: Path, advice: str = "") -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        who = (f"`pyro-lvm {holder['command']}` (process {holder['pid']} on {holder['host']}, "
               f"since {holder['started']})")
    except (OSError, ValueError, KeyError, TypeError):
        who = "another pyro-lvm command"
    return (f"{path.parent}: in use by {who}, which is still running; wait for it to end or "
            f"write to another directory{advice}")


def jsonable(obj):
    """Plain JSON values: tensors and numpy scalars to numbers, NaN/inf to None, tuples to
    lists, keys to strings.

    >>> import torch
    >>> jsonable({1: (torch.tensor(0.5), float("inf"))})
    {'1': [0.5, None]}
    """
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def versions() -> dict[str, str]:
    """Versions of Python and of the packages pyro_lvm's numbers depend on, as recorded in the
    metrics, reports and saved models it writes.

    >>> sorted(versions())[:3]
    ['matplotlib', 'numpy', 'pyro-ppl']
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("pyro_lvm", "pyro-ppl", "torch", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return dict(sorted(out.items()))


def write_json(obj, path) -> Path:
    """Write ``obj`` as strict JSON (NaN and inf become null), indented, atomically; returns
    the path.

    >>> import tempfile
    >>> p = write_json({"a": float("nan"), "b": (1, 2)}, Path(tempfile.mkdtemp()) / "m.json")
    >>> p.read_text()
    '{\\n  "a": null,\\n  "b": [\\n    1,\\n    2\\n  ]\\n}\\n'
    """
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path
