import hashlib
import io
import logging
import os

import numpy as np
import pytest
import torch

from components.baseline import BaselineConfig
from components.common.atomic import write_json
from components.common.checkpoints import CheckpointError, FileCheckpointStore, checkpoint_store, read_checkpoint
from components.common.splits import split_inputs


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


def test_atomic_json_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the umask applies, not mkstemp's 0600


def _run_id(ingest, noise) -> str:
    """The checkpoint folder name a baseline run over ``ingest`` and ``noise`` gets."""
    return checkpoint_store(ingest.parent / "out", BaselineConfig(), split_inputs(ingest, noise)).directory.name


def test_a_changed_val_split_names_another_checkpoint_folder(tmp_path):
    """An image folder's own val.npz is the validation set: relabelling it must not resume the finished run."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    images, labels = np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 0, 1])
    np.savez(ingest / "train.npz", images=images, labels=labels)
    np.savez(noise / "labels.npz", index=np.arange(4), label=labels, is_val=np.zeros(4, bool))
    write_json(ingest / "manifest.json", {"format": "arrays", "counts": {"train": 4, "val": 4}})
    np.savez(ingest / "val.npz", images=images, labels=labels)
    before = _run_id(ingest, noise)
    np.savez(ingest / "val.npz", images=images, labels=1 - labels)
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
