"""Atomic file writes: a crash never leaves half a file, and the previous version stays until the new one
is complete.

One file: ``write_atomic`` (``atomic_path``) writes a temporary file beside the destination, named
``.<name>.XXXXXXXX.tmp`` (``TEMP``), fsyncs it and renames it over the destination.

Several files of one step: ``atomic_set`` (``write_all``) stages every file the block writes through
``atomic_path`` (``write_atomic``, ``write_json``, ``save_model`` ...) as its fsynced temporary file, and renames them
over their destinations only when the block has written all of them, in one burst. An exception in the block (a
bad input found late, a full disk while writing the last file, SIGTERM through the steps' CLI) removes every
temporary file and changes no destination. What it does not give: the renames are separate system calls, so a
SIGKILL or a power cut *between two renames* still leaves some files new and some old; the window for a mixed set
shrinks from "while computing and serialising" to "between renames" (microseconds; SIGTERM and SIGINT are held
back during the burst).

A whole folder joins a set through ``stage_folder``: a complete folder written elsewhere (a staging folder beside
the destination) replaces the destination folder in the same burst of renames as the set's files, the old folder
renamed aside first and deleted after the burst.

A SIGKILL skips every cleanup clause, so temporary files can outlive their process: ``atomic_path`` removes the
leftovers of the file it is about to write, and ``prepare_output`` (which each step calls before its work) those of
its whole output folder (under ``torchrun``, in the main process only: the one that writes the outputs); only names of
the ``TEMP`` pattern, never another file.

Errors: an ``OSError`` while writing (no space, read-only, no permission, a file where the folder should be) is
re-raised as an ``OutputError`` (an ``OSError``) naming the destination, what was expected and what was found.
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

UMASK = os.umask(0)  # the process's umask (read by setting it, then restored)
os.umask(UMASK)

# The temporary files of this module: ".<name>." + mkstemp's 8 random characters + ".tmp".
TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
# The errnos that mean "this folder cannot take the file": re-raised as OutputError from inside a write too.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
                errno.EEXIST, errno.EISDIR}



@dataclass
class _Set:
    """What the current ``atomic_set`` has staged: ``files`` (destination -> its complete temporary file) and
    ``folders`` (destination folder -> the complete folder that replaces it)."""

    files: dict[Path, Path] = field(default_factory=dict)
    folders: dict[Path, Path] = field(default_factory=dict)


_STAGED: contextvars.ContextVar[_Set | None] = contextvars.ContextVar("atomic_set", default=None)  # None: no set

# The temporary files this process has open or staged (any thread): never a leftover.
_LIVE: set[Path] = set()


class OutputError(OSError):
    """An output could not be written; the message names the file, the folder, what was expected and what was
    found. An ``OSError``, so code that handles write failures keeps working."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.errno = cause.errno if cause is not None else None
        self.strerror = cause.strerror if cause is not None else None

    def __str__(self) -> str:  # OSError's own would print "[Errno N] strerror" once errno is set
        return str(self.args[0])


def output_error(path: str | os.PathLike, err: OSError, *, what: str = "") -> OutputError:
    """``err`` (raised writing ``path``) as an ``OutputError`` naming ``path``, its folder, what was expected and what
    was found."""
    if isinstance(err, OutputError):
        return err
    target = Path(path)
    folder = target.parent
    what = what or target.name
    found = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        found += f" (free: {_free_mb(folder)})"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_in_the_way(folder)) is not None:
        found = f"a file at {blocker}, not a folder"
    elif err.errno == errno.EISDIR:
        found = f"a folder at {target}, not a file"
    return OutputError(f"{target}: expected a writable folder {folder} with room for {what}, found: {found}", err)


def _free_mb(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        try:
            return f"{shutil.disk_usage(candidate).free / 2**20:.0f} MB"
        except OSError:
            continue
    return "unknown"


def _file_in_the_way(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists and is not a folder."""
    for candidate in reversed([folder, *folder.parents]):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def remove_leftovers(folder: str | os.PathLike, names: set[str] | None = None) -> list[Path]:
    """Remove the temporary files (``TEMP``) that a killed write left in ``folder`` (not its subfolders): those of
    ``names``, or of every name when None. The temporary files this process is writing or has staged stay. Returns
    what was removed."""
    folder = Path(folder)
    live = set(_LIVE)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = TEMP.fullmatch(entry.name)
        if match is None or (names is not None and match["name"] not in names):
            continue
        path = folder / entry.name
        if path in live or not entry.is_file(follow_symlinks=False):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def prepare_output(folder: str | os.PathLike, *, step: str = "") -> Path:
    """Check, before a step's work, that ``folder`` is a writable folder (creating it and its parents if need be),
    and remove the temporary files a killed earlier run left in it. Raises ``OutputError`` naming the folder, what
    was expected and what was found (a file in its place, no permission, a read-only file system).

    Every process ``torchrun`` starts calls it; only the main one (``RANK`` 0 or unset), the one that writes the
    outputs, removes leftovers, so no process's clean-up removes a temporary file another is writing. Pids cannot
    tell a leftover from a live file there: the processes may run on several machines sharing the folder."""
    folder = Path(folder)
    whose = f"the {step} outputs" if step else "the outputs"
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise OutputError(f"{folder}: expected a folder for {whose}, found a file at {blocker}; move it away or "
                          f"remove it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # made, so the folder is writable; a clean-up elsewhere may have taken it
    except OSError as err:
        raise OutputError(f"{folder}: expected a writable folder for {whose}, found: {err.strerror or err}"
                          + (f" (free: {_free_mb(folder)})" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""),
                          err) from err
    if _main_process():
        remove_leftovers(folder)
    return folder


def _main_process() -> bool:
    """Whether this is the process that writes a step's outputs: ``torchrun``'s ``RANK`` 0, or a process alone."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path`` (inside an
    ``atomic_set``: staged, renamed when the set ends). Leftover temporary files of ``path`` are removed first; an
    ``OSError`` that means the folder cannot take the file becomes an ``OutputError``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target.parent, {target.name})
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        _LIVE.add(Path(tmp))
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    except OSError as err:
        raise output_error(target, err) from err
    staged = _STAGED.get()
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if staged is not None:
            earlier = staged.files.pop(target, None)
            if earlier is not None:
                earlier.unlink(missing_ok=True)  # written twice in the set: the last one wins
                _LIVE.discard(earlier)
            staged.files[target] = Path(tmp)  # stays in _LIVE until the set renames or removes it
            return
        os.replace(tmp, target)
        _LIVE.discard(Path(tmp))
        fsync_dir(target.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        _LIVE.discard(Path(tmp))
        if isinstance(err, OSError) and not isinstance(err, OutputError) and err.errno in WRITE_ERRNOS:
            raise output_error(target, err) from err
        raise


@contextmanager
def atomic_set() -> Iterator[None]:
    """Write several files as a set: every ``atomic_path`` in the block (``write_atomic``, ``write_json``,
    ``save_model`` ...) is staged as its complete, fsynced temporary file, and all are renamed over their destinations
    once the block ends without an exception, in one burst (``rename_all``), with the folders ``stage_folder`` named
    swapped in first. An exception in the block removes every staged temporary file; no destination changes. The
    renames are separate system calls: a SIGKILL or power cut between two of them still leaves a mixed set (see the
    module's docstring). A set inside a set joins it."""
    if _STAGED.get() is not None:
        yield
        return
    staged = _Set()
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp in staged.files.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _STAGED.reset(token)
    asides = {target: target.with_name(f".{target.name}.old") for target in staged.folders}
    for aside in asides.values():  # the old folder of a swap killed before it deleted it
        shutil.rmtree(aside, ignore_errors=True)
    swaps = [pair for target, new in staged.folders.items()
             for pair in ([(target, asides[target])] if target.exists() else []) + [(new, target)]]
    try:
        rename_all(swaps + [(tmp, target) for target, tmp in staged.files.items()])
    finally:
        _LIVE.difference_update(staged.files.values())
    for aside in asides.values():
        shutil.rmtree(aside, ignore_errors=True)


def stage_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Replace the folder ``target`` by the complete folder ``new`` (on the same file system, e.g. a staging folder
    beside it). Inside an ``atomic_set`` the swap joins the set's burst of renames: ``target`` is renamed aside to
    ``.<name>.old``, ``new`` renamed in, and the old folder deleted once every file of the set is renamed; if the
    block raises, nothing is renamed and ``new`` stays where it is, for the caller to keep or remove. Outside a set
    it happens at once."""
    staged = _STAGED.get()
    if staged is None:
        with atomic_set():
            stage_folder(new, target)
        return
    staged.folders[Path(target)] = Path(new)


def rename_all(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each ``(source, target)`` over its target, one after the other with SIGTERM and SIGINT held back
    (``signals_held``), then fsync the folders. A failed rename removes the sources not yet renamed and raises
    ``OutputError``; the targets already renamed stay renamed."""
    with signals_held():
        for done, (source, target) in enumerate(pairs):
            try:
                os.replace(source, target)
            except OSError as err:
                for rest, _ in pairs[done:]:
                    if not Path(rest).is_dir():  # a staged folder (or a folder to rename aside) is never deleted
                        Path(rest).unlink(missing_ok=True)
                raise output_error(target, err) from err
        for folder in dict.fromkeys(Path(target).parent for _, target in pairs):
            fsync_dir(folder)


@contextmanager
def signals_held(held: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Hold back the signals ``held`` while the block runs, then handle each that arrived, as its handler then is.
    Python runs its signal handlers in the main thread whichever thread the kernel hands the signal to, so the
    handlers are swapped for ones that only note the signal (a signal mask would hold back only the signals sent to
    the main thread, and a process with other threads, torch's or a loader's, may get them in another). In any other
    thread, or for a handler not set from Python, the block runs as it is."""
    swapped = {sig: signal.getsignal(sig) for sig in held} if threading.current_thread() is threading.main_thread() \
        else {}
    swapped = {sig: handler for sig, handler in swapped.items() if handler is not None}
    arrived: list[int] = []
    for sig in swapped:
        signal.signal(sig, lambda number, _frame: arrived.append(number))
    try:
        yield
    finally:
        for sig, handler in swapped.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)


def write_all(folder: str | os.PathLike, writers: Mapping[str, Callable[[IO[bytes]], Any]]) -> None:
    """Write the files ``writers`` names into ``folder`` as one ``atomic_set``: ``writers[name]`` fills the open binary
    temporary file of ``folder/name``; no file changes unless every writer returns."""
    with atomic_set():
        for name, write in writers.items():
            write_atomic(Path(folder) / name, write)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write`` fills an open binary temporary file beside it, which is fsynced and
    renamed over ``path`` once ``write`` returns (``atomic_path``); on an error ``path`` stays as it was."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, encoded as UTF-8."""
    write_atomic(path, lambda fh: fh.write(text.encode()))


def json_text(data: Any) -> str:
    """``data`` as the project writes JSON: indented by 2, keys sorted, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` to ``path`` atomically as JSON: indented by 2, keys sorted, a final newline."""
    write_text(path, json_text(data))


def fsync_dir(directory: str | os.PathLike) -> None:
    """Sync ``directory``'s entries (a rename or a new link in it) to disk."""
    fsync_file(directory)


def fsync_file(path: str | os.PathLike) -> None:
    """Sync ``path``'s contents (a file, or a folder's entries) to disk: what a copy needs before it is released."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
