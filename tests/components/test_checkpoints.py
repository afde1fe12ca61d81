import contextlib
import hashlib
import io
import logging
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch

from components.baseline import BaselineConfig
from components.common import code
from components.common.atomic import write_json
from components.common.checkpoints import CheckpointError, FileCheckpointStore, checkpoint_store, read_checkpoint
from components.common.splits import training_digest


def test_round_trip_keeps_the_previous_checkpoint(tmp_path):
    store = FileCheckpointStore(tmp_path)
    assert store.load("round0") is None
    store.save("round0", {"step": 1, "w": torch.ones(3)})
    store.save("round0", {"step": 2, "w": torch.zeros(3)})
    assert store.load("round0")["step"] == 2
    assert read_checkpoint(tmp_path / "round0.prev.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round0.prev.pt", "round0.pt"]  # no temporary files


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:100] + b"\x00" + b[101:],
                                    lambda b: b""], ids=["truncated", "flipped-byte", "empty"])
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    store = FileCheckpointStore(tmp_path)
    store.save("k", {"step": 1})
    store.save("k", {"step": 2})
    path = tmp_path / "k.pt"
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        assert store.load("k")["step"] == 1
    assert "k.pt: expected a checkpoint with a matching sha256 trailer, found a corrupt or truncated file" \
        in caplog.text


def test_a_save_over_a_torn_checkpoint_keeps_the_good_previous_one(tmp_path):
    """A torn ``<key>.pt`` is overwritten, never rotated into ``<key>.prev.pt``: the last good one stays there."""
    store = FileCheckpointStore(tmp_path)
    store.save("k", {"step": 1})
    store.save("k", {"step": 2})
    path = tmp_path / "k.pt"
    path.write_bytes(path.read_bytes()[:50])
    store.save("k", {"step": 3})
    assert read_checkpoint(tmp_path / "k.prev.pt")["step"] == 1 and store.load("k")["step"] == 3


def test_no_usable_checkpoint_is_an_error(tmp_path):
    store = FileCheckpointStore(tmp_path)
    store.save("k", {"step": 1})
    (tmp_path / "k.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: .*k.pt: expected a checkpoint"):
        store.load("k")


def test_checkpoints_cannot_run_code(tmp_path):
    """A pickle that would call a function on load is refused: checkpoints are read with weights_only."""
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    payload = buffer.getvalue()
    (tmp_path / "k.pt").write_bytes(payload + b"\nsha256:" + hashlib.sha256(payload).hexdigest().encode())
    with pytest.raises(CheckpointError, match=r"expected a torch checkpoint, found unreadable data"):
        read_checkpoint(tmp_path / "k.pt")



def _torch_load_refusal(payload: bytes) -> str:
    """What ``torch_load_error`` makes of torch.load's refusal of ``payload``."""
    from components.common.errors import torch_load_error  # noqa: PLC0415

    with pytest.raises(Exception) as caught:  # whatever torch raises
        torch.load(io.BytesIO(payload), weights_only=True)
    return torch_load_error(caught.value)


def test_a_torch_load_error_is_one_line_of_the_reason_without_torchs_advice():
    """errors.py: what torch.load refused, in one line, without its advice (to retry with weights_only=False, which
    would run the file's code; to file an issue; to read the docs; guesses about how the file got corrupt)."""
    class Evil:
        def __reduce__(self):
            return (os.mkdir, ("never",))

    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(100), "y": Evil()}, buffer)
    code, garbage = _torch_load_refusal(buffer.getvalue()), _torch_load_refusal(b"not a checkpoint" * 4)
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(100)}, buffer)
    cut = _torch_load_refusal(buffer.getvalue()[:200])
    assert code.startswith("refused by the weights-only loader: ") and "mkdir" in code
    assert garbage.startswith("refused by the weights-only loader: ") and "Unsupported operand" in garbage
    assert "central directory" in cut and not cut.startswith("refused")
    for line in (code, garbage, cut):
        assert "\n" not in line and "  " not in line, line
        for advice in ("weights_only", "trusted source", "file an issue", "WeightsUnpickler", "documentation",
                       "miniz", "corrupted"):
            assert advice not in line, (advice, line)


def test_atomic_json_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the umask applies, not mkstemp's 0600


def baseline_store(out, ingest, noise):
    """The checkpoint store a baseline run with the default config over ``ingest`` and ``noise`` gets."""
    return checkpoint_store(out, BaselineConfig(), [training_digest(ingest, noise)], code="components.baseline")


def _run_id(ingest, noise) -> str:
    """The checkpoint folder name a baseline run over ``ingest`` and ``noise`` gets."""
    return baseline_store(ingest.parent / "out", ingest, noise).directory.name


def _four_images(tmp_path):
    """``ingest/train.npz`` of four blank 8x8 images labelled 0, 1, 0, 1 and ``noise/labels.npz`` keeping them all
    for training; returns the two folders, the images and the labels."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    images, labels = np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 0, 1])
    np.savez(ingest / "train.npz", images=images, labels=labels)
    np.savez(noise / "labels.npz", index=np.arange(4), label=labels, is_val=np.zeros(4, bool))
    return ingest, noise, images, labels


def test_a_changed_val_split_names_another_checkpoint_folder(tmp_path):
    """An image folder's own val.npz is the validation set: relabelling it must not resume the finished run."""
    ingest, noise, images, labels = _four_images(tmp_path)
    write_json(ingest / "manifest.json", {"format": "arrays", "counts": {"train": 4, "val": 4}})
    np.savez(ingest / "val.npz", images=images, labels=labels)
    before = _run_id(ingest, noise)
    np.savez(ingest / "val.npz", images=images, labels=1 - labels)
    assert _run_id(ingest, noise) != before


def test_other_noisy_labels_name_another_checkpoint_folder(tmp_path):
    """The noise step's labels are an input of the run: another noise draw (another seed or rate) must not resume
    the run trained on the old labels."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    images, labels = np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 0, 1])
    np.savez(ingest / "train.npz", images=images, labels=labels)
    write_json(ingest / "manifest.json", {"format": "arrays", "counts": {"train": 4}})
    np.savez(noise / "labels.npz", index=np.arange(4), label=labels, is_val=np.zeros(4, bool))
    before = _run_id(ingest, noise)
    np.savez(noise / "labels.npz", index=np.arange(4), label=1 - labels, is_val=np.zeros(4, bool))
    assert _run_id(ingest, noise) != before


def test_a_changed_transform_of_the_same_shards_names_another_checkpoint_folder(tmp_path):
    """Clothing1M's shards hold the original JPEGs: another ingest.image_size or resize changes only the manifest's
    transform, which every step decodes with, so it must change the run too."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    (ingest / "shards").mkdir(parents=True)
    noise.mkdir()
    write_json(ingest / "shards" / "index.json", {"splits": {}})
    np.savez(noise / "labels.npz", index=np.arange(4), label=np.zeros(4, int), is_val=np.zeros(4, bool))
    manifest = {"format": "shards", "transform": {"resize": 16, "crop": 16, "mean": [0.5] * 3, "std": [0.2] * 3}}
    write_json(ingest / "manifest.json", manifest)
    before = _run_id(ingest, noise)
    write_json(ingest / "manifest.json", {**manifest, "transform": {**manifest["transform"], "resize": 32, "crop": 32}})
    assert _run_id(ingest, noise) != before


def _retry_config(workdir):
    import yaml  # noqa: PLC0415

    return BaselineConfig(**yaml.safe_load((workdir / "params.yaml").read_text())["baseline"])


def test_a_retry_after_the_run_returned_resumes_at_the_end_and_rewrites_identical_outputs(workdir, capsys,
                                                                                          monkeypatch):
    """A Kubeflow pod that dies after ``run`` returned (uploading its outputs, preempted): the retry, with empty
    outputs, finds the finished checkpoint in the shared root, trains nothing and writes the same model files."""
    from components import baseline, ingest, noise  # noqa: PLC0415

    for step in (ingest, noise):
        assert step.main([]) == 0
    config, shared = _retry_config(workdir), workdir / "volume" / "baseline"
    first = baseline.run(config, out=workdir / "pod1", checkpoints=shared)
    (folder,) = shared.iterdir()
    assert (folder / "finished.json").is_file() and (folder / "round0.pt").is_file()
    steps, original = [], torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (steps.append(1), original(self, *a, **k))[1])
    capsys.readouterr()
    second = baseline.run(config, out=workdir / "pod2", checkpoints=shared)
    assert "resumed from" in capsys.readouterr().out and steps == []
    assert second == first
    for name in ("model.pt", "final.pt", "metrics.json", "history.json"):
        assert (workdir / "pod2" / name).read_bytes() == (workdir / "pod1" / name).read_bytes(), name


def _hold(folder, ready, worker=None):
    """Child process: take the folder's lock, say so, and keep it until killed. With ``worker`` (a shared value),
    first fork a process that sleeps, as a data loader forks its workers after the claim, and put its pid there."""
    store = FileCheckpointStore(folder)
    store.claim()
    store.save("start", {"step": 0})  # the holder is named from the first save on
    if worker is not None:
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        worker.value = pid
    ready.set()
    time.sleep(600)


@contextlib.contextmanager
def _held(folder, *, worker=False):
    """Another process holding ``folder``'s lock (and named in it) until the block ends; yields that process (with
    ``worker``, the pid of the process it forked as ``worker_pid``; it is killed at the end too)."""
    import multiprocessing  # noqa: PLC0415

    context = multiprocessing.get_context("spawn")
    ready, pid = context.Event(), context.Value("i", 0) if worker else None
    holder = context.Process(target=_hold, args=(folder, ready, pid), daemon=True)
    holder.start()
    try:
        assert ready.wait(120)
        holder.worker_pid = pid.value if worker else None
        yield holder
    finally:
        if worker and pid.value:  # first: it holds the holder's end of the pipe `join` waits on
            os.kill(pid.value, signal.SIGKILL)
        holder.kill()
        holder.join(30)


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(tmp_path):
    """Two runs of the same config into one folder: the second fails with a named error, not a crash inside
    dvclive; the kernel releases a killed holder's lock, so the rerun then proceeds."""
    from components.common.checkpoints import CheckpointInUseError  # noqa: PLC0415

    folder = tmp_path / "checkpoints" / "run"
    with _held(folder) as holder, pytest.raises(
            CheckpointInUseError, match=rf"another run \(pid {holder.pid} on .*, started .*\) is training into "
                                        rf"{folder}; wait for it"):
        FileCheckpointStore(folder).claim()
    store = FileCheckpointStore(folder)
    store.claim()  # a killed holder holds nothing
    store.release()


def test_the_workers_a_killed_run_forked_do_not_keep_its_rerun_out(tmp_path):
    """A data loader's workers are forked after the claim and outlive a SIGKILL-ed run until they notice (seconds);
    the lock is the run's alone, so its rerun takes the folder at once while they live."""
    folder = tmp_path / "checkpoints" / "run"
    with _held(folder, worker=True) as holder:
        holder.kill()
        while holder.exitcode is None:  # not `join`: the worker holds the pipe that would tell it
            time.sleep(0.01)
        os.kill(holder.worker_pid, 0)  # the worker lives on
        store = FileCheckpointStore(folder)
        store.claim()
        store.release()


def test_the_main_process_takes_the_folder_when_it_names_it(tmp_path, monkeypatch):
    """``checkpoint_store`` claims the folder in the main process only (torchrun's others share the main's)."""
    from components.common.checkpoints import CheckpointInUseError  # noqa: PLC0415

    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    np.savez(noise / "labels.npz", index=np.arange(4), label=np.zeros(4, int), is_val=np.zeros(4, bool))
    np.savez(ingest / "train.npz", images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.zeros(4, int))
    write_json(ingest / "manifest.json", {"format": "arrays", "counts": {"train": 4}})
    store = baseline_store(tmp_path / "out", ingest, noise)
    assert (store.directory / ".lock").read_text() == ""  # a run that fails before its first save changes nothing
    store.save("start", {"step": 0})
    monkeypatch.setenv("RANK", "1")
    baseline_store(tmp_path / "out", ingest, noise)  # no claim: no conflict
    holder = (store.directory / ".lock").read_text()
    assert f'"pid": {os.getpid()}' in holder
    store.release()
    assert (store.directory / ".lock").read_text() == ""
    other = os.open(store.directory / ".lock", os.O_RDWR)
    try:
        import fcntl  # noqa: PLC0415

        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: another process may take it
        monkeypatch.setenv("RANK", "1")
        baseline_store(tmp_path / "out", ingest, noise)  # torchrun's other processes never take the lock
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(CheckpointInUseError):
            baseline_store(tmp_path / "out", ingest, noise)
    finally:
        os.close(other)


def test_taking_the_folder_removes_what_a_killed_write_left(tmp_path):
    """A SIGKILL in a save leaves ``.round0.pt.*.tmp`` (and, in a rotation, ``.round0.prev.pt.link``): the next run
    of the same config removes them when it takes the folder; checkpoints and other files stay."""
    store = FileCheckpointStore(tmp_path / "run")
    store.save("round0", {"step": 1})
    store.save("round0", {"step": 2})
    left = [tmp_path / "run" / ".round0.pt.k2j3h4.tmp", tmp_path / "run" / ".round0.prev.pt.link"]
    for path in left:
        path.write_bytes(b"torn")
    store.claim()
    store.release()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "round0.prev.pt", "round0.pt"]
    assert store.load("round0") == {"step": 2}


def _finished_run(root, name, *, age_s: float = 0.0):
    folder = root / name
    FileCheckpointStore(folder).save("round0", {"step": 1})
    (folder / "finished.json").write_text("{}")
    then = __import__("time").time() - age_s
    os.utime(folder / "finished.json", (then, then))
    return folder


def test_a_finished_run_keeps_its_folder_and_removes_only_old_finished_unlocked_ones_in_a_shared_root(tmp_path):
    from components.common.checkpoints import SHARED_RETENTION_S, drop_stale_checkpoints  # noqa: PLC0415

    root = tmp_path / "shared"
    old = _finished_run(root, "old", age_s=SHARED_RETENTION_S + 60)
    recent = _finished_run(root, "recent", age_s=60)
    crashed = FileCheckpointStore(root / "crashed")
    crashed.save("round0", {"step": 1})  # no finished.json: a retry may yet resume it
    training = FileCheckpointStore(_finished_run(root, "training", age_s=SHARED_RETENTION_S + 60))
    training.claim()  # another run takes an old finished folder up again: locked, then no longer finished
    assert (training.directory / "finished.json").exists()  # a claim alone (a run that fails on load) changes nothing
    training.save("round0", {"step": 2})
    assert not (training.directory / "finished.json").exists()
    ours = FileCheckpointStore(root / "ours")
    ours.claim()
    ours.save("round0", {"step": 3})
    drop_stale_checkpoints(ours, shared=True)
    assert sorted(p.name for p in root.iterdir()) == ["crashed", "ours", "recent", "training"]
    assert not old.exists() and recent.exists()
    assert (root / "ours" / "finished.json").is_file() and ours.load("round0") == {"step": 3}
    training.release()


def test_a_finished_run_removes_a_half_removed_folder_and_gives_up_its_lock(tmp_path):
    """What an interrupted removal left (``.removing-<name>``) goes with the next finished run, and the run's lock is
    released: another process may take the folder (a rerun resumes it at the end)."""
    import fcntl  # noqa: PLC0415

    from components.common.checkpoints import drop_stale_checkpoints  # noqa: PLC0415

    root = tmp_path / "checkpoints"
    half = root / ".removing-old"
    (half / "sub").mkdir(parents=True)
    (half / "sub" / "round0.pt").write_bytes(b"left")
    ours = FileCheckpointStore(root / "ours")
    ours.claim()
    ours.save("round0", {"step": 3})
    drop_stale_checkpoints(ours)
    assert sorted(p.name for p in root.iterdir()) == ["ours"]
    other = os.open(ours.directory / ".lock", os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a BlockingIOError while the run still held it
    finally:
        os.close(other)


def test_a_folder_another_run_is_training_into_is_never_removed(tmp_path):
    """Neither in a step's own root (where every other run's folder goes) nor in a shared one."""
    from components.common.checkpoints import SHARED_RETENTION_S, drop_stale_checkpoints  # noqa: PLC0415

    root = tmp_path / "checkpoints"
    busy = _finished_run(root, "busy", age_s=SHARED_RETENTION_S + 60)
    idle = _finished_run(root, "idle")
    with _held(busy):
        for shared in (True, False):
            ours = FileCheckpointStore(root / "ours")
            ours.claim()
            drop_stale_checkpoints(ours, shared=shared)
            assert busy.is_dir() and (busy / "round0.pt").is_file()
        assert not idle.exists()  # own root: every other unlocked folder goes


def test_an_edit_of_the_code_a_step_runs_or_another_torch_names_another_checkpoint_folder(tmp_path, monkeypatch):
    """``dvc repro`` reruns a training stage after an edit of its code; the rerun resumed the old code's finished
    checkpoint (same config and inputs) and trained nothing. The run id now hashes the files the step imports: an
    edit there starts afresh, one in a file it does not run resumes."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    np.savez(ingest / "train.npz", images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.array([0, 1, 0, 1]))
    np.savez(noise / "labels.npz", index=np.arange(4), label=np.array([0, 1, 0, 1]), is_val=np.zeros(4, bool))
    write_json(ingest / "manifest.json", {"format": "arrays", "counts": {"train": 4}})
    copy = tmp_path / "project"
    for package in code.PACKAGES:
        shutil.copytree(code.ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "ROOT", copy)
    code.code_digest.cache_clear()
    try:
        before = _run_id(ingest, noise)
        (copy / "serving" / "server.py").write_text("# not run by the baseline step\n", encoding="utf-8")
        code.code_digest.cache_clear()
        assert _run_id(ingest, noise) == before
        with (copy / "model" / "trainer.py").open("a") as handle:
            handle.write("# an edit\n")
        code.code_digest.cache_clear()
        edited = _run_id(ingest, noise)
        assert edited != before
        monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch build: other arithmetic, trains afresh
        assert _run_id(ingest, noise) not in (before, edited)
    finally:
        code.code_digest.cache_clear()


def test_a_moved_dataset_or_an_ingest_setting_training_does_not_read_keeps_the_checkpoint_folder(tmp_path):
    """The folder hashes only what training reads of the manifest: a moved data folder, another shard_size or
    test split leave the training images and labels byte-identical, and resume; another class list does not."""
    ingest, noise, _, _ = _four_images(tmp_path)
    manifest = {"format": "arrays", "class_names": ["a", "b"], "image_shape": [8, 8, 1],
                "counts": {"train": 4, "test": 2}, "source": "data/a", "config": {"path": "data/a", "shard_size": 5},
                "inputs_sha256": {"t10k-images-idx3-ubyte.gz": "1" * 64}}
    write_json(ingest / "manifest.json", manifest)
    before = _run_id(ingest, noise)
    write_json(ingest / "manifest.json", {**manifest, "source": "data/b", "counts": {"train": 4, "test": 3},
                                          "config": {"path": "data/b", "shard_size": 7},
                                          "inputs_sha256": {"t10k-images-idx3-ubyte.gz": "2" * 64}})
    assert _run_id(ingest, noise) == before
    write_json(ingest / "manifest.json", {**manifest, "class_names": ["b", "a"]})
    assert _run_id(ingest, noise) != before
