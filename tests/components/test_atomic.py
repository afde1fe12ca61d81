"""components.common.atomic: one file, a set of files, the leftovers of a killed write, the errors that name the
file and folder, and the steps' SIGTERM handling (components.common.config.exit_on_sigterm)."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from components.common import atomic
from components.common.atomic import (
    OutputError,
    atomic_path,
    atomic_set,
    prepare_output,
    remove_leftovers,
    stage_folder,
    write_all,
    write_atomic,
    write_json,
    write_text,
)
from components.common.config import exit_on_sigterm

ROOT = Path(__file__).resolve().parents[2]


def no_space(_fh) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.TEMP.fullmatch(p.name))


def test_a_failure_in_the_last_file_of_a_set_leaves_every_file_as_it_was(tmp_path):
    for name in ("a.bin", "b.json", "c.txt"):
        (tmp_path / name).write_text(f"old {name}")
    with pytest.raises(OutputError, match=r"with room for c\.txt"):
        write_all(tmp_path, {"a.bin": lambda fh: fh.write(b"new"), "b.json": lambda fh: fh.write(b"{}"),
                             "c.txt": no_space})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"old {n}" for n in ("a.bin", "b.json", "c.txt")}


def test_a_set_stages_every_atomic_write_and_renames_them_at_its_end(tmp_path):
    (tmp_path / "a.json").write_text("old")
    with atomic_set():
        write_json(tmp_path / "a.json", {"new": 1})
        write_text(tmp_path / "sub" / "b.txt", "new")
        with atomic_set():  # a set inside a set joins it
            write_text(tmp_path / "c.txt", "first")
            write_text(tmp_path / "c.txt", "second")  # written twice: the last one wins
        assert (tmp_path / "a.json").read_text() == "old"  # nothing renamed before the end
        assert not (tmp_path / "c.txt").exists()
    assert (tmp_path / "a.json").read_text() == '{\n  "new": 1\n}\n'
    assert (tmp_path / "sub" / "b.txt").read_text() == "new"
    assert (tmp_path / "c.txt").read_text() == "second"
    assert temps(tmp_path) == [] and temps(tmp_path / "sub") == []


def test_any_exception_in_a_set_removes_the_staged_files(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(SystemExit), atomic_set():
        write_text(tmp_path / "a.txt", "new")
        write_text(tmp_path / "b.txt", "new")
        raise SystemExit(143)  # what SIGTERM raises through the steps' CLI
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_a_staged_folder_is_swapped_in_with_the_sets_files_and_stays_aside_if_the_set_fails(tmp_path):
    """``stage_folder``: a whole folder joins a set (ingest's shards with their manifest, a step's curves with its
    metrics). A failure later in the set leaves the old folder and file, and the new folder where it was."""
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "old.txt").write_text("old")
    (tmp_path / "metrics.json").write_text("old")
    new = tmp_path / "live.partial"
    new.mkdir()
    (new / "new.txt").write_text("new")
    with pytest.raises(OutputError, match=r"with room for metrics\.json"), atomic_set():
        stage_folder(new, tmp_path / "live")
        write_atomic(tmp_path / "metrics.json", no_space)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "live.partial", "metrics.json"]
    assert [p.name for p in (tmp_path / "live").iterdir()] == ["old.txt"] and (new / "new.txt").exists()
    (tmp_path / ".live.old").mkdir()  # a killed earlier swap's old folder
    (tmp_path / ".live.old" / "older.txt").write_text("older")  # not empty: a rename onto it would fail
    with atomic_set():
        stage_folder(new, tmp_path / "live")
        write_text(tmp_path / "metrics.json", "new")
        assert (tmp_path / "live" / "old.txt").exists()  # nothing renamed before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "metrics.json"]
    assert [p.name for p in (tmp_path / "live").iterdir()] == ["new.txt"]
    stage_folder(tmp_path / "live", tmp_path / "first")  # outside a set: at once, onto no folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "metrics.json"]


def test_a_folder_swap_that_fails_leaves_the_sets_files_and_keeps_the_new_folder(tmp_path):
    """The folders are swapped in first: a swap that fails (here its destination's folder is missing) renames no
    file of the set, removes their temporary files and leaves the new folder where it was."""
    (tmp_path / "metrics.json").write_text("old")
    new = tmp_path / "live.partial"
    new.mkdir()
    (new / "new.txt").write_text("new")
    with pytest.raises(OutputError), atomic_set():
        stage_folder(new, tmp_path / "missing" / "live")
        write_text(tmp_path / "metrics.json", "new")
    assert (tmp_path / "metrics.json").read_text() == "old" and temps(tmp_path) == []
    assert (new / "new.txt").read_text() == "new"


def test_sigterm_and_sigint_wait_until_the_burst_of_renames_is_done(tmp_path, monkeypatch):
    """A SIGTERM that arrives between two renames of a set is held back until the last one is done."""
    events = []
    replace = os.replace

    def replace_and_signal(source, target):
        replace(source, target)
        events.append(("renamed", Path(target).name))
        if len(events) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_and_signal)
    previous = signal.signal(signal.SIGTERM, lambda *_args: events.append(("SIGTERM",)))
    try:
        with atomic_set():
            write_text(tmp_path / "a.txt", "a")
            write_text(tmp_path / "b.txt", "b")
        assert events == [("renamed", "a.txt"), ("renamed", "b.txt"), ("SIGTERM",)]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("held", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_the_kernel_hands_to_another_thread_waits_for_the_burst_too(tmp_path, monkeypatch, held):
    """A process with other threads (torch's, a loader's) may get SIGTERM or SIGINT in one of them; Python still runs
    the handler in the main thread, between two renames unless it is held back there too."""
    events, idle = [], threading.Event()
    other = threading.Thread(target=idle.wait)
    other.start()
    replace = os.replace

    def replace_and_signal(source, target):
        replace(source, target)
        events.append(("renamed", Path(target).name))
        if len(events) == 1:
            signal.pthread_kill(other.ident, held)
            time.sleep(0.05)  # the main thread's handler, if it is not held back, runs here

    monkeypatch.setattr(os, "replace", replace_and_signal)
    def mine(*_args):
        events.append(("signal",))

    previous = signal.signal(held, mine)
    try:
        with atomic_set():
            write_text(tmp_path / "a.txt", "a")
            write_text(tmp_path / "b.txt", "b")
        assert events == [("renamed", "a.txt"), ("renamed", "b.txt"), ("signal",)]
        assert signal.getsignal(held) is mine  # the caller's handler is back
    finally:
        signal.signal(held, previous)
        idle.set()
        other.join()


def test_an_exception_while_writing_removes_that_files_temporary_file(tmp_path):
    """SIGTERM raises SystemExit through the steps' CLI, also in the middle of a file's write: the half-written
    temporary file goes, alone or in a set."""
    def interrupted(fh):
        fh.write(b"half")
        raise SystemExit(143)

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(SystemExit):
        write_atomic(tmp_path / "a.txt", interrupted)
    with pytest.raises(SystemExit), atomic_set():
        write_text(tmp_path / "b.txt", "new")
        write_atomic(tmp_path / "a.txt", interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_text_is_utf8_and_json_is_indented_with_sorted_keys(tmp_path):
    write_text(tmp_path / "a.txt", "café ✓")
    assert (tmp_path / "a.txt").read_bytes() == "café ✓".encode()
    write_json(tmp_path / "b.json", {"b": 1, "a": {"d": 2, "c": "é"}})
    assert (tmp_path / "b.json").read_text(encoding="utf-8") == (
        '{\n  "a": {\n    "c": "\\u00e9",\n    "d": 2\n  },\n  "b": 1\n}\n')


def test_a_rename_that_fails_mid_set_leaves_no_temporary_file(tmp_path):
    """The second rename of a set fails (a folder where its file should go): as ``rename_all`` promises, the file
    renamed before it stays renamed, the failed one and those after it keep their destination as it was, and no
    temporary file of any of them is left behind."""
    (tmp_path / "a.json").write_text("old a")
    (tmp_path / "b.json").mkdir()  # os.replace(file, folder): IsADirectoryError
    (tmp_path / "c.json").write_text("old c")
    with pytest.raises(OutputError, match=r"b\.json: expected a writable folder .* found: a folder at "), atomic_set():
        write_text(tmp_path / "a.json", "a")
        write_text(tmp_path / "b.json", "b")
        write_text(tmp_path / "c.json", "c")
    assert temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]
    assert (tmp_path / "a.json").read_text() == "a" and (tmp_path / "c.json").read_text() == "old c"
    assert (tmp_path / "b.json").is_dir() and not any((tmp_path / "b.json").iterdir())


def _log_syncs(monkeypatch) -> list[tuple]:
    """Record, in order, every ``os.fsync`` (with the path its descriptor is open on) and ``os.replace``."""
    calls = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        calls.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def logged_replace(source, target, *args, **kwargs):
        calls.append(("replace", Path(source).resolve(), Path(target).resolve()))
        replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    return calls


@pytest.mark.parametrize("in_a_set", [False, True], ids=["one-file", "set"])
def test_each_file_is_fsynced_before_its_rename_and_the_folder_after_the_renames(tmp_path, monkeypatch, in_a_set):
    """Durability after a power cut: a file's data reaches the disk before the rename makes it the destination
    (else the new name can point at an empty file), and the folder is fsynced once the renames are done (else the
    renames themselves can be lost)."""
    folder = tmp_path.resolve()
    calls = _log_syncs(monkeypatch)
    if in_a_set:
        with atomic_set():
            write_text(folder / "a.json", "a")
            write_text(folder / "b.json", "b")
    else:
        write_text(folder / "a.json", "a")
    renames = [c for c in calls if c[0] == "replace"]
    assert [target for _, _, target in renames] == [folder / "a.json", folder / "b.json"][:1 + in_a_set]
    for rename in renames:
        _, source, target = rename
        assert source.parent == folder and atomic.TEMP.fullmatch(source.name)["name"] == target.name
        assert ("fsync", source) in calls[:calls.index(rename)], calls
    last = max(calls.index(r) for r in renames)
    assert ("fsync", folder) in calls[last + 1:]


def test_a_write_removes_the_leftovers_of_its_file_and_only_those(tmp_path):
    leftovers = [".model.pt.abcd1234.tmp", ".model.pt.zz_9yy00.tmp"]
    others = [".metrics.json.abcd1234.tmp", "model.pt.tmp", ".model.pt.tmp", "notes.tmp", ".model.pt.TOOLONG12.tmp",
              ".model.pt.ABCD1234.tmp", ".model.pt.abcd123.tmp", ".model.pt.abcd12345.tmp"]  # not mkstemp's 8
    for name in leftovers + others:
        (tmp_path / name).write_text("x")
    write_atomic(tmp_path / "model.pt", lambda fh: fh.write(b"weights"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "model.pt"])


def test_remove_leftovers_keeps_other_files_folders_and_a_sets_staged_files(tmp_path):
    (tmp_path / ".a.json.abcd1234.tmp").write_text("x")
    (tmp_path / ".dir.abcd1234.tmp").mkdir()
    (tmp_path / "keep.json").write_text("x")
    with atomic_set(), atomic_path(tmp_path / "b.json") as staged:
        staged.write_text("{}")
        assert remove_leftovers(tmp_path) == [tmp_path / ".a.json.abcd1234.tmp"]
        assert staged.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dir.abcd1234.tmp", "b.json", "keep.json"]


def test_no_space_names_the_file_the_folder_and_the_free_space(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"old")
    with pytest.raises(OutputError) as raised:
        write_atomic(tmp_path / "model.pt", no_space)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'model.pt'}: expected a writable folder {tmp_path} with room for model.pt")
    assert "found: No space left on device (free: " in message and " MB)" in message
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    assert (tmp_path / "model.pt").read_bytes() == b"old" and temps(tmp_path) == []


def test_a_file_in_place_of_the_folder_is_named(tmp_path):
    (tmp_path / "artifacts").write_text("not a folder")
    with pytest.raises(OutputError, match=r"found: a file at .*artifacts, not a folder"):
        write_json(tmp_path / "artifacts" / "noise" / "summary.json", {})
    with pytest.raises(OutputError) as raised:
        prepare_output(tmp_path / "artifacts" / "noise", step="noise")
    assert str(raised.value) == (f"{tmp_path / 'artifacts' / 'noise'}: expected a folder for the noise outputs, "
                                 f"found a file at {tmp_path / 'artifacts'}; move it away or remove it")


def test_prepare_output_creates_the_folder_and_removes_leftovers(tmp_path):
    out = prepare_output(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
    (out / ".labels.npz.abcd1234.tmp").write_text("x")
    (out / "labels.npz").write_text("x")
    prepare_output(out)
    assert [p.name for p in out.iterdir()] == ["labels.npz"]


def test_a_write_probe_another_process_cleaned_up_is_no_failure(tmp_path, monkeypatch):
    """Two processes preparing one folder (torchrun's, or a user's): the other's clean-up may remove this one's write
    probe between its creation and its removal. The probe was made, so the folder is writable."""
    made = atomic.tempfile.mkstemp

    def made_then_cleaned_up(*args, **kwargs):
        fd, probe = made(*args, **kwargs)
        assert remove_leftovers(kwargs["dir"]) == [Path(probe)]  # what the other process's clean-up does
        return fd, probe

    monkeypatch.setattr(atomic.tempfile, "mkstemp", made_then_cleaned_up)
    assert prepare_output(tmp_path / "out", step="mlnt") == tmp_path / "out"
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("rank", "kept"), [(None, []), ("0", []), ("1", [".model.pt.abcd1234.tmp"])])
def test_under_torchrun_only_the_main_process_removes_leftovers(tmp_path, monkeypatch, rank, kept):
    """The main process (RANK 0, or no RANK) is the one that writes a training step's outputs; the others only
    check the folder, so their clean-up can never remove a temporary file it is writing."""
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    (tmp_path / ".model.pt.abcd1234.tmp").write_text("x")
    prepare_output(tmp_path, step="mlnt")
    assert [p.name for p in tmp_path.iterdir()] == kept


def test_a_process_other_than_the_main_one_still_checks_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "artifacts").write_text("not a folder")
    with pytest.raises(OutputError, match=r"expected a folder for the mlnt outputs, found a file at "):
        prepare_output(tmp_path / "artifacts" / "mlnt", step="mlnt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder: chmod cannot block it")
def test_a_read_only_folder_fails_before_the_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"out: expected a writable folder for the noise outputs, found: "
                                              r"Permission denied"):
            prepare_output(out, step="noise")
    finally:
        out.chmod(0o755)


def test_a_full_disk_fails_before_the_work_with_the_free_space(tmp_path, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", full)
    with pytest.raises(OutputError, match=re.escape(f"{tmp_path}: expected a writable folder for the noise outputs, "
                                                    "found: No space left on device (free: ") + r"\d+ MB\)$"):
        prepare_output(tmp_path, step="noise")


@pytest.mark.parametrize(("code", "found"), [(errno.EROFS, "Read-only file system"),
                                             (errno.EACCES, "Permission denied")])
def test_a_folder_that_cannot_take_files_fails_before_the_work(tmp_path, monkeypatch, code, found):
    """The read-only and no-permission cases as the system reports them (chmod does not stop root)."""
    def refuse(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError) as raised:
        prepare_output(tmp_path, step="evaluate")
    assert str(raised.value) == f"{tmp_path}: expected a writable folder for the evaluate outputs, found: {found}"
    with pytest.raises(OutputError, match=re.escape(f"expected a writable folder {tmp_path} with room for x.json, "
                                                    f"found: {found}")):
        write_json(tmp_path / "x.json", {})


STEP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from components.common.atomic import atomic_set, write_text
    from components.common.config import cli

    def body(_configs):
        out = Path(sys.argv[1])
        with atomic_set():
            write_text(out / "a.txt", "new")
            print("ready", flush=True)
            time.sleep(60)
            write_text(out / "b.txt", "new")

    raise SystemExit(cli("demo", {}, "demo", body)(["--params", sys.argv[2]]))
""")


def test_sigterm_runs_the_cleanup_of_a_step(tmp_path):
    """A pod's preemption sends SIGTERM: the step exits 143 through its cleanup clauses, which remove the staged
    temporary files; the previous outputs stay."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    (tmp_path / "params.yaml").write_text("{}\n")
    child = subprocess.Popen([sys.executable, "-c", STEP, str(out), str(tmp_path / "params.yaml")], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "ready"
        assert len(temps(out)) == 1
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 128 + signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "old"


def test_the_sigterm_handler_leaves_an_embedding_programs_handler_and_other_threads_alone():
    def mine(*_args):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert exit_on_sigterm() is None and signal.getsignal(signal.SIGTERM) is mine
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        found = []
        thread = threading.Thread(target=lambda: found.append(exit_on_sigterm()))
        thread.start()
        thread.join()
        assert found == [None] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert exit_on_sigterm() is signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, mine)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_after_the_first_sigterm_a_second_ends_the_process_at_once():
    """exit_on_sigterm: the first SIGTERM raises SystemExit(143) and puts back the default action, so a second one
    is not held up by the cleanup clauses."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert exit_on_sigterm() is signal.SIG_DFL
        with pytest.raises(SystemExit) as exit_:
            signal.raise_signal(signal.SIGTERM)
        assert exit_.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
