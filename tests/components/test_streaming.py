"""Clothing1M-style shards and the training data streamed from them.

The shards are plain WebDataset tars (the ``webdataset`` library reads them, byte for byte the source JPEGs) with
an index that points at the exact bytes and a sha256 per shard. A ``ShardSource`` epoch is a pure function of
``(seed, epoch)``: the same batches (and random crops) with any number of DataLoader workers, resumed mid-epoch
without a sample repeated or skipped, split into disjoint rows under data parallelism. A damaged shard is named,
with the keys it holds, in one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import webdataset as wds
from PIL import Image

from benchmarks.fixtures import write_clothing1m
from components.baseline import BaselineConfig
from components.baseline import run as baseline
from components.common.checkpoints import FileCheckpointStore
from components.common.config import ConfigError
from components.common.errors import DataError
from components.common.splits import load_split
from components.common.streaming import ShardImages, ShardSource, decode, decoded_chunks, open_split
from components.formats.images import load_image
from components.formats.webdataset import ShardWriter, read_index, verify_shards
from components.ingest import IngestConfig
from components.ingest import run as ingest
from components.noise import NoiseConfig
from components.noise import run as make_noise
from model.distributed import Group
from model.networks import build_network
from model.trainer import TrainConfig, train
from tests.components.conftest import write_manifest
from tests.components.formats_fixtures import refuse_resizes_over
from tests.model.test_trainer import CrashError, CrashingStore

TRAIN, PER_SPLIT, SHARD_SIZE = 40, 6, 7  # 6 training shards (7 x 5 + 5): two shuffle windows of 4 shards
CROP, RESIZE, CLASSES = 16, 20, 14
WORLD = 2
FIT = {"progress": False, "batch_size": 8, "lr": 0.05, "seed": 3, "augment": False, "device": "cpu"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny Clothing1M in its official layout (JPEGs of varied sizes) and its ingest; tests must not change
    either (copy them first)."""
    root = tmp_path_factory.mktemp("c1m")
    source = write_clothing1m(root / "c1m", per_split=PER_SPLIT, train=TRAIN, noise_rate=0.3, seed=1)
    manifest = ingest(IngestConfig(dataset="clothing1m", path=str(source), image_size=CROP, resize=RESIZE,
                                   shard_size=SHARD_SIZE, seed=2), out=root / "ingest")
    return source, root / "ingest", manifest


@pytest.fixture(scope="module")
def source_dir(dataset):
    return dataset[0]


@pytest.fixture(scope="module")
def ingest_dir(dataset):
    return dataset[1]


def label_table(path: Path) -> dict[str, int]:
    return {key: int(label) for key, label in (line.split() for line in path.read_text().splitlines())}


def shard_paths(ingest_dir: Path, split: str) -> list[Path]:
    entry = json.loads((ingest_dir / "shards" / "index.json").read_text())["splits"][split]
    return [ingest_dir / "shards" / shard["file"] for shard in entry["shards"]]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (folders as None) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def identified(ingest_dir: Path, *, workers: int = 0, augment: bool = False,
               positions: np.ndarray | None = None) -> ShardSource:
    """The training split with each sample's label replaced by its position, so batches say which samples
    they hold."""
    n = len(read_index(ingest_dir, "train")) if positions is None else positions.shape[0]
    positions = np.arange(n) if positions is None else positions
    return open_split(ingest_dir, "train", positions=positions, labels=torch.arange(n), workers=workers,
                      augment=augment)


def epoch(source: ShardSource, number: int, *, batch_size: int = 6, first: int = 0, seed: int = 0,
          rows: slice | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rows = rows if rows is not None else slice(0, batch_size)
    return [(x.clone(), y.clone()) for x, y in source.batches(number, first=first, batch_size=batch_size,
                                                               seed=seed, rows=rows)]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def pixels(x: torch.Tensor, source: ShardSource) -> torch.Tensor:
    """uint8 images back from the normalised floats a source yields."""
    mean, std = torch.tensor(source.mean)[:, None, None], torch.tensor(source.std)[:, None, None]
    return ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def by_position(batches) -> dict[int, torch.Tensor]:
    return {int(p): image for x, y in batches for image, p in zip(x, y, strict=True)}


# --- the shard format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_webdataset_reads_our_shards_with_the_original_jpeg_bytes(source_dir, ingest_dir, split):
    labels = label_table(source_dir / ("noisy_label_kv.txt" if split == "train" else "clean_label_kv.txt"))
    clean = label_table(source_dir / "clean_label_kv.txt")
    listed = (source_dir / {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt",
                            "test": "clean_test_key_list.txt"}[split]).read_text().split()
    urls = [str(p) for p in shard_paths(ingest_dir, split)]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    index = read_index(ingest_dir, split)
    assert len(samples) == len(index) == len(listed)
    keys = []
    for i, sample in enumerate(samples):
        meta = json.loads(sample["json"])
        keys.append(meta["key"])
        assert sample["__key__"] == f"{i:09d}" and sample["__url__"] == urls[index.shard[i]]
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "cls", "json"}
        assert sample["jpg"] == (source_dir / meta["key"]).read_bytes()  # never re-encoded
        assert int(sample["cls"]) == meta["label"] == labels[meta["key"]] == index.label[i]
        assert meta["clean_label"] == clean.get(meta["key"], -1) == index.clean_label[i]
        assert index.key[i].decode() == meta["key"]
    if split == "train":  # written in a random order, so every shard is a random sample
        assert sorted(keys) == sorted(listed) and keys != listed
    else:
        assert keys == listed
    # webdataset's own decoders: a PIL image of the source's size and an int label
    decoded = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json")
    for image, label, meta in decoded:
        with Image.open(source_dir / meta["key"]) as original:
            assert image.size == original.size
        assert label == meta["label"]


def test_the_index_points_at_the_exact_image_bytes(source_dir, ingest_dir):
    for split in ("train", "val", "test"):
        index = read_index(ingest_dir, split)
        members = {}
        for number, path in enumerate(shard_paths(ingest_dir, split)):
            with tarfile.open(path) as tar:
                names = tar.getnames()
                assert names == [f"{n}.{ext}" for n in sorted({m.split('.')[0] for m in names})
                                 for ext in ("jpg", "cls", "json")]  # a sample's members in a row
                members.update({m.name: (number, m.offset_data, m.size) for m in tar if m.name.endswith(".jpg")})
        assert len(members) == len(index)
        handles = {}
        for i in range(len(index)):
            original = (source_dir / index.key[i].decode()).read_bytes()
            shard, offset, size = int(index.shard[i]), int(index.offset[i]), int(index.size[i])
            assert members[f"{i:09d}.jpg"] == (shard, offset, size) and size == len(original)
            with open(index.path(i), "rb") as fh:
                fh.seek(offset)
                assert fh.read(size) == original
            assert index.read(i) == index.read(i, handles) == original
        for handle in handles.values():
            handle.close()


def test_index_json_has_each_shards_sha256_and_the_counts_add_up(source_dir, ingest_dir, dataset):
    manifest = dataset[2]
    splits = json.loads((ingest_dir / "shards" / "index.json").read_text())["splits"]
    assert {split: entry["count"] for split, entry in splits.items()} == manifest["counts"] == \
        {"train": TRAIN, "val": PER_SPLIT, "test": PER_SPLIT}
    assert [s["count"] for s in splits["train"]["shards"]] == [7, 7, 7, 7, 7, 5]
    assert [s["file"] for s in splits["train"]["shards"]] == [f"train-{n:05d}.tar" for n in range(6)]
    shard_bytes = source_bytes = samples = 0
    for split, entry in splits.items():
        assert sum(s["count"] for s in entry["shards"]) == entry["count"]
        index = read_index(ingest_dir, split)
        assert np.bincount(index.shard).tolist() == [s["count"] for s in entry["shards"]]
        for shard in entry["shards"]:
            path = ingest_dir / "shards" / shard["file"]
            assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert shard["bytes"] == path.stat().st_size
            shard_bytes += shard["bytes"]
        source_bytes += sum((source_dir / k.decode()).stat().st_size for k in index.key)
        samples += len(index)
    expected = {f for entry in splits.values() for f in (s["file"] for s in entry["shards"])}
    expected |= {"index.json", "train.index.npz", "val.index.npz", "test.index.npz"}
    assert {p.name for p in (ingest_dir / "shards").iterdir()} == expected
    assert not (ingest_dir / "train.npz").exists() and not (ingest_dir / "index.json").exists()
    assert manifest["shard_bytes"] == shard_bytes and manifest["format"] == "shards"
    assert manifest["transform"]["resize"] == RESIZE and manifest["transform"]["crop"] == CROP
    # the JPEGs themselves plus tar headers and padding: at most 3 KiB a sample and a 10 KiB record a shard
    n_shards = sum(len(e["shards"]) for e in splits.values())
    assert source_bytes < shard_bytes <= source_bytes + 3 * 1024 * samples + 10240 * n_shards


def test_the_same_input_gives_byte_identical_shards(source_dir, ingest_dir, tmp_path):
    ingest(IngestConfig(dataset="clothing1m", path=str(source_dir), image_size=CROP, resize=RESIZE,
                        shard_size=SHARD_SIZE, seed=2), out=tmp_path / "again")
    assert snapshot(tmp_path / "again" / "shards") == snapshot(ingest_dir / "shards")
    for path in shard_paths(ingest_dir, "train"):  # no clock in the bytes: two runs a second apart agree too
        with tarfile.open(path) as tar:
            assert {(m.mtime, m.mode) for m in tar.getmembers()} == {(0, 0o644)}


# --- order: a pure function of (seed, epoch) ----------------------------------------------------------------


def test_an_epoch_is_a_function_of_seed_and_epoch_whatever_the_workers(ingest_dir):
    positions = np.random.default_rng(0).permutation(TRAIN)[:33]  # a subset, as the noise step's index gives
    serial, parallel = identified(ingest_dir, positions=positions), identified(ingest_dir, workers=2,
                                                                                  positions=positions)
    index = read_index(ingest_dir, "train")
    orders = []
    for number in range(3):
        batches = epoch(serial, number)
        assert_same_batches(batches, epoch(parallel, number))
        assert len(batches) == 33 // 6 and all(y.shape == (6,) for _, y in batches)
        seen = torch.cat([y for _, y in batches])
        assert seen.unique().numel() == seen.numel() and 33 - seen.numel() < 6  # each once; < a batch dropped
        orders.append(seen.tolist())
        for x, y in batches:  # every image is the sample its position names
            for image, p in zip(pixels(x, serial), y, strict=True):
                row = int(positions[p])
                assert torch.equal(image, decode(index.read(row), resize=RESIZE, crop=CROP))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert [y.tolist() for _, y in epoch(serial, 0, seed=1)] != [y.tolist() for _, y in epoch(serial, 0)]


def test_reads_do_not_depend_on_the_position_of_a_shared_open_shard(tmp_path):
    """A DataLoader worker forked from a process holding open shards shares their file positions with it and
    with its sibling workers: a read that trusted the position would return another sample's bytes."""
    rng = np.random.default_rng(0)
    payloads = [rng.bytes(int(n)) for n in rng.integers(4200, 9000, 12)]  # larger than a read buffer
    writer = ShardWriter(tmp_path / "shards", "train", shard_size=100)
    (tmp_path / "shards").mkdir()
    for i, payload in enumerate(payloads):
        writer.add(f"images/{i}.jpg", payload, label=i % 3, clean_label=-1)
    (tmp_path / "shards" / "index.json").write_text(json.dumps({"splits": {"train": writer.close()}}))
    index = read_index(tmp_path, "train")
    handles = {}
    for row, payload in enumerate(payloads):
        assert index.read(row, handles) == payload, row
        # another process moves the shared position (to the end of the file)
        mover = mp.get_context("fork").Process(target=os.lseek, args=(handles["train-00000.tar"].fileno(), 0,
                                                                       os.SEEK_END))
        mover.start()
        mover.join()
    for handle in handles.values():
        handle.close()


def test_forked_workers_read_what_the_main_process_reads(ingest_dir):
    source = identified(ingest_dir)
    expected = {number: epoch(source, number, batch_size=4) for number in range(5)}  # opens the shards here
    assert source.images._handles, "the main process should hold open shards for this test to mean anything"
    forked = ShardSource(source.images, source.positions, source.labels, workers=2)  # the same ShardImages:
    # its open files inherited by the forked workers
    for _ in range(2):
        for number, batches in expected.items():
            assert_same_batches(epoch(forked, number, batch_size=4), batches)


def test_a_resumed_epoch_is_the_tail_of_the_uninterrupted_one(ingest_dir):
    for augment in (False, True):
        source = identified(ingest_dir, augment=augment)
        whole = epoch(source, 2, batch_size=8)
        for first in (1, 3, len(whole) - 1, len(whole)):
            assert_same_batches(epoch(source, 2, batch_size=8, first=first), whole[first:])


def test_a_pass_abandoned_mid_epoch_does_not_leak_into_the_next(ingest_dir):
    expected = epoch(identified(ingest_dir), 1, batch_size=4)
    source = identified(ingest_dir, workers=2)
    abandoned = source.batches(0, first=0, batch_size=4, seed=0, rows=slice(0, 4))
    next(abandoned), next(abandoned)
    del abandoned  # as a crash leaves it: the loop's frame, and the iterator with it, are gone
    assert_same_batches(epoch(source, 1, batch_size=4), expected)
    assert_same_batches(epoch(source, 1, batch_size=4, first=3), expected[3:])


def test_two_passes_at_once_on_one_source_are_refused(ingest_dir):
    """Its worker processes serve one pass at a time; a second pass would reset the first one's batches."""
    source = identified(ingest_dir, workers=2)
    first = source.batches(0, first=0, batch_size=4, seed=0, rows=slice(0, 4))
    next(first)
    with pytest.raises(RuntimeError, match="expected one pass at a time"):
        next(source.eval_batches(4))
    assert len(list(first)) == len(epoch(source, 0, batch_size=4)) - 1  # the first pass is unharmed


def test_data_parallel_ranks_load_disjoint_rows_that_make_the_global_batch(ingest_dir):
    source = identified(ingest_dir, workers=2)
    whole = epoch(source, 1, batch_size=8)
    shares = [epoch(source, 1, batch_size=8, rows=Group(rank, WORLD).rows(8)) for rank in range(WORLD)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shares, strict=True):
        assert y0.shape == y1.shape == (4,) and not set(y0.tolist()) & set(y1.tolist())
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    resumed = epoch(source, 1, batch_size=8, first=2, rows=Group(1, WORLD).rows(8))
    assert_same_batches(resumed, shares[1][2:])


# --- augmentation -------------------------------------------------------------------------------------------


def resized(payload: bytes) -> torch.Tensor:
    """uint8 ``[3, H, W]``: the whole image with its short side resized to RESIZE, before any crop."""
    with Image.open(io.BytesIO(payload)) as img:
        img.draft("RGB", (RESIZE, RESIZE))
        rgb = img.convert("RGB")
    scale = RESIZE / min(rgb.size)
    size = (max(RESIZE, round(rgb.width * scale)), max(RESIZE, round(rgb.height * scale)))
    return torch.from_numpy(np.asarray(rgb.resize(size, Image.Resampling.BILINEAR)).copy()).permute(2, 0, 1)


def windows(image: torch.Tensor, whole: torch.Tensor) -> list[tuple[int, int, bool]]:
    """``(top, left, mirrored)`` of every CROP x CROP window of ``whole`` equal to ``image`` (mirrored or not)."""
    found = []
    tiles = whole.unfold(1, CROP, 1).unfold(2, CROP, 1)  # [3, top, left, CROP, CROP]
    for mirrored, candidate in ((False, image), (True, image.flip(-1))):
        equal = (tiles == candidate[:, None, None]).flatten(3).all(3).all(0)
        found += [(int(t), int(left), mirrored) for t, left in equal.nonzero().tolist()]
    return found


def test_without_augment_every_image_is_the_centre_crop(ingest_dir):
    source = identified(ingest_dir, workers=2)
    index = source.images.index
    centre = torch.stack([decode(index.read(i), resize=RESIZE, crop=CROP, offset=None) for i in range(len(index))])
    for i, image in enumerate(centre):  # the middle window of the resized image
        whole = resized(index.read(i))
        middle = ((whole.shape[1] - CROP) / 2, (whole.shape[2] - CROP) / 2)
        assert any(abs(t - middle[0]) <= 0.5 and abs(left - middle[1]) <= 0.5 and not mirrored
                   for t, left, mirrored in windows(image, whole)), i
    for number in range(2):
        for x, positions in epoch(source, number, batch_size=8):
            assert torch.equal(pixels(x, source), centre[positions])
    labelled = open_split(ingest_dir, "train", workers=0)
    evaluated = list(labelled.eval_batches(16))  # every sample once, in order, with its label
    assert torch.equal(torch.cat([y for _, y in evaluated]), torch.from_numpy(index.label))
    assert torch.equal(pixels(torch.cat([x for x, _ in evaluated]), labelled), centre)
    chunks = list(decoded_chunks(labelled, chunk=16))
    assert torch.equal(torch.from_numpy(np.concatenate([c for c, _ in chunks])).permute(0, 3, 1, 2), centre)
    assert np.concatenate([y for _, y in chunks]).tolist() == index.label.tolist()


def test_random_crops_are_fixed_per_seed_epoch_and_position(ingest_dir):
    serial, parallel = identified(ingest_dir, augment=True), identified(ingest_dir, workers=2, augment=True)
    index = serial.images.index
    first = epoch(serial, 0, batch_size=8)
    assert_same_batches(epoch(parallel, 0, batch_size=8), first)
    images = by_position(first)
    # the same crop whatever the batch size, the resume point or the data-parallel rank
    for other in (epoch(parallel, 0, batch_size=5), epoch(serial, 0, batch_size=8, first=3),
                  epoch(serial, 0, batch_size=8, rows=Group(1, WORLD).rows(8))):
        assert all(torch.equal(image, images[p]) for p, image in by_position(other).items())
    # each one a window of the resized image, mirrored or not; they differ from sample to sample, epoch to epoch
    kinds, off_centre = [], 0
    for p, image in by_position([(pixels(x, serial), y) for x, y in first]).items():
        payload = index.read(p)
        found = windows(image, resized(payload))
        assert found, f"position {p}: not a crop of its image"
        kinds.append("flipped" if found[0][2] else "plain")
        off_centre += not torch.equal(image, decode(payload, resize=RESIZE, crop=CROP))
    assert set(kinds) == {"plain", "flipped"} and off_centre > len(kinds) // 2
    later = by_position(epoch(serial, 1, batch_size=8))
    assert sum(not torch.equal(later[p], images[p]) for p in images.keys() & later.keys()) > len(images) // 2
    reseeded = by_position(epoch(serial, 0, batch_size=8, seed=5))
    assert sum(not torch.equal(reseeded[p], images[p]) for p in images.keys() & reseeded.keys()) > len(images) // 2


# --- the loader's throughput --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_stats_report_the_loaders_throughput(ingest_dir, workers):
    source = open_split(ingest_dir, "train", workers=workers)
    assert source.epoch_stats() == {}
    epoch(source, 0, batch_size=8)
    assert source.epoch_stats()["loader_images_per_s_per_worker"] > 0
    assert source.subset(torch.arange(len(source)) < 20).epoch_stats() == {}  # a new source starts afresh



def test_epoch_stats_are_images_per_second_of_decoding_summed_over_the_images(ingest_dir, monkeypatch):
    """docs/data.md: ``loader_images_per_s_per_worker`` is the images a worker decodes, resizes and crops per second
    of its time: every image counted, and every image's decode time summed (here each takes 0.5 s)."""
    import itertools  # noqa: PLC0415
    import types  # noqa: PLC0415

    from components.common import streaming  # noqa: PLC0415

    ticks = itertools.count(step=0.5)
    monkeypatch.setattr(streaming, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    source = open_split(ingest_dir, "train", workers=0)
    epoch(source, 0, batch_size=8)
    assert source.epoch_stats() == {"loader_images_per_s_per_worker": 2.0}
    ticks = itertools.count(step=0.25)  # the next epoch decodes twice as fast: its own figure, not an average
    epoch(source, 1, batch_size=8)
    assert source.epoch_stats() == {"loader_images_per_s_per_worker": 4.0}


def test_a_source_needs_one_label_per_position(ingest_dir):
    source = open_split(ingest_dir, "train", workers=0)
    with pytest.raises(ValueError, match=r"labels: expected one per position \(5\), found \(4,\)"):
        ShardSource(source.images, source.positions[:5], source.labels[:4], workers=0)


def test_decode_puts_the_crop_at_its_offset_left_then_top():
    """``offset`` is the crop's (x, y) fraction of the slack: (1, 0) the top right window, (0, 1) the bottom left;
    an image whose short side already is ``resize`` is only cropped."""
    whole = np.random.default_rng(0).integers(0, 256, (RESIZE, RESIZE + 9, 3), dtype=np.uint8)  # 29 wide, 20 high
    buffer = io.BytesIO()
    Image.fromarray(whole).save(buffer, "PNG")
    for (fx, fy), (left, top) in {(0.0, 0.0): (0, 0), (1.0, 0.0): (13, 0), (0.0, 1.0): (0, 4), (1.0, 1.0): (13, 4),
                                  (0.5, 0.25): (6, 1)}.items():
        got = decode(buffer.getvalue(), resize=RESIZE, crop=CROP, offset=(fx, fy)).permute(1, 2, 0).numpy()
        assert np.array_equal(got, whole[top:top + CROP, left:left + CROP]), (fx, fy)


def test_a_thin_image_is_resized_only_where_the_crop_keeps_it(monkeypatch):
    """A 1x20000 line passed ingest (its pixels are few) and was resized whole in every loader worker, to
    256x5120000 (4 GB, a MemoryError no worker caught). Only the kept square is resampled."""
    buffer = io.BytesIO()
    Image.fromarray(np.arange(20000, dtype=np.uint8)[:, None]).save(buffer, "PNG")
    sizes = refuse_resizes_over(1_000_000, monkeypatch)
    for offset in (None, (0.0, 1.0)):
        image = decode(buffer.getvalue(), resize=256, crop=224, offset=offset, max_pixels=1_000_000)
        assert tuple(image.shape) == (3, 224, 224)
    assert sizes == [(224, 224)] * 2


@pytest.mark.parametrize("offset", [None, (0.0, 0.0), (1.0, 1.0), (0.3, 0.7)])
def test_the_crop_of_a_resize_too_large_to_make_is_the_same_image(offset):
    """Under the limit the image is resized whole, then cropped (the recorded results, bit for bit); over it only the
    crop is resampled, from the same pixels with the same filter: the same image, at any offset."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 5, 3), dtype=np.uint8)).save(buffer, "PNG")
    whole = decode(buffer.getvalue(), resize=RESIZE, crop=CROP, offset=offset)
    square = decode(buffer.getvalue(), resize=RESIZE, crop=CROP, offset=offset, max_pixels=200)  # 20x148 resized
    assert (square.int() - whole.int()).abs().max() <= 2  # rounding: float box edges, fixed-point weights

def test_a_random_crop_draws_its_two_offsets_independently(ingest_dir, monkeypatch):
    """The random crops cover the image, not just its diagonal: the horizontal and vertical fractions differ."""
    from components.common import streaming  # noqa: PLC0415

    drawn = []
    monkeypatch.setattr(streaming, "decode", lambda payload, **kwargs: drawn.append(kwargs) or torch.zeros(1))
    images = open_split(ingest_dir, "train", workers=0).images
    for seed in range(20):
        images[0, seed]
    offsets = [d["offset"] for d in drawn]
    assert all(0 <= f <= 1 for offset in offsets for f in offset)
    assert sum(fx != fy for fx, fy in offsets) == len(offsets) and {d["flip"] for d in drawn} == {False, True}


def test_the_shard_images_need_a_resize_at_least_the_crop(ingest_dir):
    """A hand-edited manifest whose resize is below its crop: refused, not cropped past the image's edge."""
    index = open_split(ingest_dir, "train", workers=0).images.index
    with pytest.raises(ValueError, match=rf"^resize: expected at least the crop size {CROP}, found {CROP - 1}$"):
        ShardImages(index, resize=CROP - 1, crop=CROP)
    assert ShardImages(index, resize=CROP, crop=CROP).crop == CROP


def test_an_unreadable_sample_is_raised_as_one_line_the_first_of_its_batch(ingest_dir, monkeypatch):
    """A worker's error travels back as a value: the first unreadable sample of the batch, its message on one line."""
    from components.formats.webdataset import SplitIndex  # noqa: PLC0415

    read = SplitIndex.read
    bad = {2: DataError("shard x: expected 10 bytes,\n  found 3"), 5: DataError("shard y: second")}
    monkeypatch.setattr(SplitIndex, "read", lambda self, row, handles=None: (_ for _ in ()).throw(bad[row])
                        if row in bad else read(self, row, handles))
    source = open_split(ingest_dir, "train", workers=0)
    with pytest.raises(DataError) as raised:
        list(source.eval_batches(8))
    assert str(raised.value) == "shard x: expected 10 bytes, found 3"
    with pytest.raises(DataError, match=r"^shard x: expected 10 bytes, found 3$"):  # validate's reader too
        list(decoded_chunks(source, chunk=8))


def test_shard_images_pickle_without_their_open_files(ingest_dir):
    """A DataLoader that spawns its workers pickles the dataset: the open shards stay in the process that opened
    them, and the copy reads the same bytes through its own."""
    import pickle  # noqa: PLC0415

    images = open_split(ingest_dir, "train", workers=0).images
    first = images[0, -1][0]
    assert images._handles, "the main process should hold an open shard for this test to mean anything"
    copy = pickle.loads(pickle.dumps(images))
    assert copy._handles == {} and torch.equal(copy[0, -1][0], first)


def test_a_subset_keeps_each_selected_sample_with_its_own_label(ingest_dir):
    """``subset`` (the mentor filter of iterative training): the rows ``keep`` selects, each image with its label."""
    positions = np.random.default_rng(4).permutation(TRAIN)  # as the noise step's index: not in shard order
    source = identified(ingest_dir, positions=positions)
    index = source.images.index
    keep = torch.from_numpy(positions % 3 != 0)
    for subset in (source.subset(keep), source.subset(torch.nonzero(keep)[:, 0])):
        assert len(subset) == int(keep.sum())
        seen = []
        for x, rows in subset.eval_batches(8):
            for image, row in zip(pixels(x, subset), rows.tolist(), strict=True):
                assert keep[row] and torch.equal(image, decode(index.read(positions[row]), resize=RESIZE, crop=CROP))
                seen.append(row)
        assert seen == torch.nonzero(keep)[:, 0].tolist()


def test_the_window_shuffle_groups_the_samples_by_the_shard_that_holds_them(ingest_dir):
    """With positions in any order (the noise step's index), an epoch is the shards shuffled and the samples of each
    window of four shards together: its first samples are all those of four shards, the rest those of the other two."""
    positions = np.random.default_rng(5).permutation(TRAIN)
    source = identified(ingest_dir, positions=positions)
    shards = source.images.index.shard
    counts = np.bincount(shards)
    for number in range(3):
        rows = torch.cat([y for _, y in epoch(source, number, batch_size=1)]).numpy()
        order = shards[positions[rows]].tolist()
        assert sorted(rows.tolist()) == list(range(TRAIN))
        assert any(len(set(order[:k])) == 4 and counts[sorted(set(order[:k]))].sum() == k
                   for k in range(1, TRAIN)), order


@pytest.mark.parametrize("batch_size", [1, 3, 13, TRAIN - 1, TRAIN, TRAIN + 1])
def test_eval_batches_hold_every_sample_once_in_order_whatever_the_batch_size(ingest_dir, batch_size):
    source = identified(ingest_dir)
    sizes = [y.shape[0] for _, y in source.eval_batches(batch_size)]
    assert torch.cat([y for _, y in source.eval_batches(batch_size)]).tolist() == list(range(TRAIN))
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1)


def test_a_manifest_without_the_transform_is_a_data_error_naming_the_key(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "shards", "counts": {"train": 1}}))
    with pytest.raises(DataError, match=r"manifest\.json: expected the key 'transform' written by the ingest step, "
                                        r"found keys \['counts', 'format'\]$"):
        open_split(tmp_path, "train", workers=0)


def test_a_split_is_normalised_with_the_manifests_mean_and_std(ingest_dir, tmp_path):
    """open_split decodes with the manifest's transform: its mean and std, whatever they are."""
    copy = tmp_path / "ingest"
    shutil.copytree(ingest_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["transform"].update(mean=[0.25, 0.5, 0.75], std=[0.5, 0.25, 0.125])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    source = open_split(copy, "val", workers=0)
    assert (source.mean, source.std) == ((0.25, 0.5, 0.75), (0.5, 0.25, 0.125))
    x = torch.cat([x for x, _ in source.eval_batches(64)])
    raw = torch.stack([decode(source.images.index.read(i), resize=RESIZE, crop=CROP) for i in range(len(source))])
    want = (raw.float() / 255.0 - torch.tensor([0.25, 0.5, 0.75])[:, None, None]) / torch.tensor([0.5, 0.25, 0.125])[
        :, None, None]
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)


def test_decoded_chunks_are_the_sources_samples_at_its_positions(ingest_dir):
    positions = np.random.default_rng(6).permutation(TRAIN)[:25]
    source = identified(ingest_dir, positions=positions)
    index = source.images.index
    chunks = list(decoded_chunks(source, chunk=10))
    assert [len(images) for images, _ in chunks] == [10, 10, 5]
    images, rows = np.concatenate([c for c, _ in chunks]), np.concatenate([y for _, y in chunks])
    assert rows.tolist() == list(range(25))
    for row, image in enumerate(images):
        want = decode(index.read(positions[row]), resize=RESIZE, crop=CROP).permute(1, 2, 0).numpy()
        assert np.array_equal(image, want), row

# --- training on shards -------------------------------------------------------------------------------------


def shard_net(seed: int = 0):
    torch.manual_seed(seed)
    return build_network("small_cnn", CLASSES, in_channels=3, image_size=CROP)


def untimed(history):
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "loader_images_per_s_per_worker")}
            for r in history]


def test_training_interrupted_mid_epoch_resumes_to_bitwise_the_same_weights(ingest_dir, tmp_path):
    config = TrainConfig(epochs=2, checkpoint_every=3, **FIT)  # 5 steps an epoch: checkpoints at 3, 5, 6, ...
    val = open_split(ingest_dir, "val", workers=0)
    straight = train(config, shard_net(), open_split(ingest_dir, "train", workers=2, augment=True), val_data=val,
                     store=FileCheckpointStore(tmp_path / "straight"))
    with pytest.raises(CrashError):  # saves: start, step 3, step 5 (epoch end), step 6: dies in epoch 2
        train(config, shard_net(), open_split(ingest_dir, "train", workers=2, augment=True), val_data=val,
              store=CrashingStore(tmp_path / "crashed", crash_after=4))
    assert FileCheckpointStore(tmp_path / "crashed").load("round0")["step"] == 6
    resumed = train(config, shard_net(seed=99), open_split(ingest_dir, "train", workers=0, augment=True),
                    val_data=val, store=FileCheckpointStore(tmp_path / "crashed"))
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert straight.steps == resumed.steps == 10
    assert untimed(straight.history) == untimed(resumed.history)
    assert straight.evaluations == resumed.evaluations
    assert all(r["loader_images_per_s_per_worker"] > 0 for r in straight.history + resumed.history)
    assert not torch.equal(straight.student.state_dict()["head.weight"], shard_net().state_dict()["head.weight"])


def dropout_net(seed: int = 0):
    """A user's network that draws from torch's global generator while it trains (dropout)."""
    net = shard_net(seed)
    net.head = torch.nn.Sequential(torch.nn.Dropout(0.5), net.head)
    return net


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pass_leaves_torchs_global_generator_alone(ingest_dir, workers):
    """The trainer checkpoints torch's global generator (a network's dropout draws from it); the loader must not
    draw from it too, or a resumed run, whose loaders start at other points of that stream, diverges."""
    source = open_split(ingest_dir, "train", workers=workers, augment=True)
    for _ in range(2):  # the first pass starts the loader (and its workers), the second reuses it
        before = torch.get_rng_state()
        list(source.batches(0, first=0, batch_size=6, seed=0, rows=slice(0, 6)))
        assert torch.equal(torch.get_rng_state(), before)
    before = torch.get_rng_state()
    list(decoded_chunks(open_split(ingest_dir, "val", workers=workers), chunk=4))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_network_with_dropout_resumes_to_bitwise_the_same_weights(ingest_dir, tmp_path, workers):
    config = TrainConfig(epochs=2, checkpoint_every=3, workers=workers, **FIT)
    val = open_split(ingest_dir, "val", workers=workers)
    straight = train(config, dropout_net(), open_split(ingest_dir, "train", workers=workers), val_data=val,
                     store=FileCheckpointStore(tmp_path / "straight"))
    with pytest.raises(CrashError):  # saves: start, step 3: dies mid-epoch 1
        train(config, dropout_net(), open_split(ingest_dir, "train", workers=workers), val_data=val,
              store=CrashingStore(tmp_path / "crashed", crash_after=2))
    resumed = train(config, dropout_net(seed=99), open_split(ingest_dir, "train", workers=workers),
                    val_data=open_split(ingest_dir, "val", workers=workers),
                    store=FileCheckpointStore(tmp_path / "crashed"))
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert untimed(straight.history) == untimed(resumed.history)


@dataclass
class RecordingSource(ShardSource):
    """A ShardSource that keeps what it yields: this process's rows of each global batch."""

    seen: list = field(default_factory=list)

    def batches(self, epoch, **kwargs):
        for x, y in super().batches(epoch, **kwargs):
            self.seen.append((epoch, x.clone(), y.clone()))
            yield x, y


def _train_on_shards(ingest_dir: str, group: Group) -> dict:
    split = open_split(ingest_dir, "train", workers=1, augment=True)
    source = RecordingSource(split.images, split.positions, split.labels, mean=split.mean, std=split.std,
                             workers=split.workers, augment=True)
    result = train(TrainConfig(epochs=2, **FIT), shard_net(), source, group=group)
    return {"student": {k: v.clone() for k, v in result.student.state_dict().items()},
            "losses": [h["train_loss"] for h in result.history], "seen": source.seen, "steps": result.steps}


def _worker(rank: int, ingest_dir: str, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        results[rank] = _train_on_shards(ingest_dir, Group(rank=rank, world_size=WORLD))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_read_disjoint_samples_and_train_as_one(ingest_dir, tmp_path):
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(str(ingest_dir), str(tmp_path / "init"), results), nprocs=WORLD, join=True)
    ranks = [results[rank] for rank in range(WORLD)]
    single = _train_on_shards(str(ingest_dir), Group())
    # what each process read: its rows of each global batch, disjoint, together the whole batch
    source = identified(ingest_dir, augment=True)
    whole = [(number, x, y) for number in range(2) for x, y in epoch(source, number, batch_size=8, seed=3)]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == len(whole) == ranks[0]["steps"] == 10
    for step, (number, x, ids) in enumerate(whole):
        read = []
        for rank in range(WORLD):
            seen_epoch, xr, _ = ranks[rank]["seen"][step]
            rows = Group(rank, WORLD).rows(8)
            assert seen_epoch == number and torch.equal(xr, x[rows])
            read.append(set(ids[rows].tolist()))
        assert not read[0] & read[1] and read[0] | read[1] == set(ids.tolist())
    # the same weights in both processes, as one process training on the global batches
    for key, value in single["student"].items():
        assert torch.equal(ranks[0]["student"][key], ranks[1]["student"][key]), key
        torch.testing.assert_close(ranks[0]["student"][key], value, rtol=1e-4, atol=2e-6)
    assert ranks[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert all(np.isfinite(ranks[0]["losses"]))
    assert not torch.equal(ranks[0]["student"]["head.weight"], shard_net().state_dict()["head.weight"])


# --- damaged shards -----------------------------------------------------------------------------------------


def _flip_a_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["altered", "cut short"])
def test_a_damaged_shard_is_named_with_the_keys_it_holds(ingest_dir, tmp_path, damage):
    ingested = tmp_path / "ingest"
    shutil.copytree(ingest_dir, ingested)
    make_noise(NoiseConfig(kind="human"), ingest=ingested, out=tmp_path / "noise")
    index = read_index(ingested, "train")
    rows = np.flatnonzero(index.shard == 2)
    shard = ingested / "shards" / "train-00002.tar"
    if damage == "altered":  # same size, one byte of an image changed
        _flip_a_byte(shard, int(index.offset[rows[3]] + index.size[rows[3]] // 2))
    else:
        shard.write_bytes(shard.read_bytes()[:int(index.offset[rows[-1]])])
    before = snapshot(tmp_path)
    verify_shards(ingested, ("val", "test"))  # the other splits are whole
    for check in (lambda: verify_shards(ingested), lambda: load_split(ingested, tmp_path / "noise", workers=0)):
        with pytest.raises(DataError) as caught:
            check()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{shard}: expected ")
        assert f"{index.key[rows[0]].decode()} .. {index.key[rows[-1]].decode()}" in message  # the keys it holds
        assert ("sha256" if damage == "altered" else f"found {shard.stat().st_size} bytes") in message
        assert "re-run the ingest step" in message
    assert snapshot(tmp_path) == before  # nothing written


def test_reading_an_image_of_a_shard_cut_short_after_its_check_names_the_bytes_missing(ingest_dir, tmp_path):
    """``SplitIndex.read``: a shard cut short inside an image (after its sha256 check, or with it skipped) is a
    ``DataError`` naming the shard, the key, the offset and the bytes found, never the short bytes handed on."""
    copy = tmp_path / "ingest"
    shutil.copytree(ingest_dir, copy)
    index = read_index(copy, "train")
    offset, size, key = int(index.offset[3]), int(index.size[3]), index.key[3].decode()
    index.path(3).write_bytes(index.path(3).read_bytes()[:offset + 10])
    for handles in (None, {}):
        with pytest.raises(DataError, match=rf"^{re.escape(str(index.path(3)))}: expected {size} bytes of "
                                            rf"{re.escape(key)} at offset {offset}, found 10 \(the shard is cut "
                                            r"short\)$"):
            index.read(3, handles)
        for handle in (handles or {}).values():
            handle.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_no_longer_decodes_is_one_line_naming_shard_and_key(ingest_dir, tmp_path, workers):
    """Bytes damaged after the sha256 check (or with it skipped) fail in the loader, in a worker or not, with the
    same one line as the main process would give, not a worker's traceback."""
    copy = tmp_path / "ingest"
    shutil.copytree(ingest_dir, copy)
    index = read_index(copy, "train")
    with open(index.path(3), "r+b") as fh:  # overwrite sample 3's JPEG with zeros, its length kept
        fh.seek(int(index.offset[3]))
        fh.write(bytes(int(index.size[3])))
    source = open_split(copy, "train", workers=workers)
    with pytest.raises(DataError) as caught:
        list(source.eval_batches(4))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"{index.path(3)} (key {index.key[3].decode()}): expected an image file, found unreadable data" in message



@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_gone_after_its_check_is_one_line_naming_it(ingest_dir, tmp_path, workers):
    """A shard that cannot be opened any more (deleted, unmounted) is a sample the loader cannot read: the same one
    line in the main process, in a worker or not, not the worker's OSError with its traceback."""
    copy = tmp_path / "ingest"
    shutil.copytree(ingest_dir, copy)
    source = open_split(copy, "train", workers=workers)
    index = read_index(copy, "train")
    index.path(0).unlink()
    with pytest.raises(DataError) as caught:
        list(source.eval_batches(4))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and str(index.path(0)) in message


def test_an_epoch_shuffles_the_shards_then_the_samples_within_each_window_of_four():
    """streaming.py: the shards are shuffled, then the samples within each window of four consecutive shards."""
    import itertools  # noqa: PLC0415

    from components.common.streaming import WINDOW_SHARDS, epoch_order  # noqa: PLC0415

    shards = np.repeat(np.arange(10), 7)  # 10 shards of 7 samples, in shard order as the index lists them
    first_windows, sorted_windows = set(), 0
    for seed in range(5):
        order = epoch_order(shards, seed=seed, epoch=0)
        assert sorted(order.tolist()) == list(range(shards.size))  # every sample once
        cuts = np.cumsum([0] + [7 * min(WINDOW_SHARDS, 10 - start) for start in range(0, 10, WINDOW_SHARDS)])
        windows = [order[a:b] for a, b in itertools.pairwise(cuts)]
        assert [len(set(shards[w].tolist())) for w in windows] == [4, 4, 2]  # whole shards, windows of four
        first_windows.add(frozenset(shards[windows[0]].tolist()))
        sorted_windows += sum(bool(np.all(np.diff(w) > 0)) for w in windows)
    assert len(first_windows) > 1  # the shards are shuffled, not taken in the index's order
    assert sorted_windows == 0  # the samples within a window are shuffled too


def test_a_decompression_bomb_in_a_shard_is_refused_before_it_is_decoded(tmp_path):
    """Shards written by another tool (or before the ingest step checked pixel counts): an image whose header
    declares more than the limit is one line naming the shard, the key, the limit and its size, never decoded."""
    from components.common.streaming import ShardImages  # noqa: PLC0415
    from components.formats.images import MAX_PIXELS  # noqa: PLC0415
    from tests.reliability.test_readers import png_bomb  # noqa: PLC0415

    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path / "shards", "train", 4)
    writer.add("images/bomb.png", png_bomb(9_000, 9_000), label=0, clean_label=-1, extension="png")
    writer.add("images/small.png", png_bomb(40, 30), label=1, clean_label=-1, extension="png")
    (tmp_path / "shards" / "index.json").write_text(json.dumps({"splits": {"train": writer.close()}}))
    images = ShardImages(read_index(tmp_path, "train"), resize=8, crop=8)
    image, message = images[(0, -1)]
    assert image is None and message == (f"{tmp_path / 'shards' / 'train-00000.tar'} (key images/bomb.png): expected "
                                         f"an image of at most {MAX_PIXELS} pixels (the readers' limit on "
                                         f"decompression bombs), found 9000x9000 = 81000000 pixels")
    image, _ = images[(1, -1)]
    assert tuple(image.shape) == (3, 8, 8)


def test_a_shard_index_naming_a_file_outside_the_shards_folder_is_refused(tmp_path):
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path / "shards", "train", 4)
    writer.add("images/small.png", png_bytes(), label=1, clean_label=-1, extension="png")
    entry = writer.close()
    entry["shards"][0]["file"] = "../../elsewhere.tar"
    (tmp_path / "shards" / "index.json").write_text(json.dumps({"splits": {"train": entry}}))
    for read in (lambda: read_index(tmp_path, "train"), lambda: verify_shards(tmp_path)):
        with pytest.raises(DataError, match=r"shards/index.json \(split train\): expected a file name relative to "
                                            r".*shards that stays inside it, found '../../elsewhere.tar'"):
            read()


def test_a_split_the_shard_index_does_not_list_is_a_data_error_naming_the_splits_it_has(tmp_path):
    """``read_index`` checks the split against ``index.json``: one it does not list (an ingest without a val split,
    an index.json cut short) is a ``DataError`` naming the file and the splits it has, not a bare ``KeyError``."""
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path / "shards", "train", 4)
    writer.add("images/small.png", png_bytes(), label=1, clean_label=-1, extension="png")
    (tmp_path / "shards" / "index.json").write_text(json.dumps({"splits": {"train": writer.close()}}))
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'shards' / 'index.json'))}: expected the split "
                                        r"'val', found \['train'\]$"):
        read_index(tmp_path, "val")


@pytest.mark.parametrize(("change", "found"), [
    (lambda a: {**a, "label": a["label"] + 0.5}, r"expected integer class indices as label, found float64 label "
                                                 r"with values like 1\.5$"),
    (lambda a: {**a, "clean_label": a["clean_label"][:1]}, r"expected one label per sample \(index.json\) \(2 "
                                                           r"clean_label\), found 1 clean_label$"),
    (lambda a: {**a, "offset": a["offset"][:, None]}, r"expected 2 samples \(index.json\) in 'offset', found shape "
                                                      r"\[2, 1\]$"),
], ids=["float-label", "short-clean-label", "offset-shape"])
def test_a_shard_index_with_labels_that_are_not_one_integer_per_sample_is_refused(tmp_path, change, found):
    """validate checks the labels of train.npz before it builds its tables; a shard index's labels were read as
    they were (``astype(int64)``: 1.5 became class 1). They get the same check when the index is read."""
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path / "shards", "train", 4)
    for key in ("images/a.png", "images/b.png"):
        writer.add(key, png_bytes(), label=1, clean_label=-1, extension="png")
    (tmp_path / "shards" / "index.json").write_text(json.dumps({"splits": {"train": writer.close()}}))
    path = tmp_path / "shards" / "train.index.npz"
    with np.load(path) as index:
        arrays = change(dict(index))
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {found}"):
        read_index(tmp_path, "train")


def test_a_16_bit_image_in_a_shard_is_scaled_to_8_bits_as_serving_and_the_image_folder_reader_do(tmp_path):
    """Decoding for training converted a 16-bit PNG to RGB directly, which clips: every pixel became 255."""
    pixels = np.array([[8000, 30000], [30000, 8000]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (tmp_path / "deep.png").write_bytes(buffer.getvalue())
    decoded = decode(buffer.getvalue(), resize=2, crop=2)
    assert decoded.unique().tolist() == [8000 // 256, 30000 // 256]
    folder_reader = load_image(tmp_path / "deep.png", channels=1, size=0)[:, :, 0]
    assert torch.equal(decoded[0], torch.from_numpy(folder_reader.copy()))


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_dropped_source_stops_its_worker_processes(ingest_dir):
    """The workers serve every pass of a source and end with it: nothing holds the source in a reference cycle,
    so dropping it stops them at once, not at some later garbage collection."""
    import multiprocessing  # noqa: PLC0415

    before = set(multiprocessing.active_children())
    source = identified(ingest_dir, workers=2)
    epoch(source, 0, batch_size=4)
    workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    del source
    assert not set(multiprocessing.active_children()) - before


# ----- the in-memory split (a dataset ingested as arrays): which rows train, which validate, and their statistics


def _arrays_split(tmp_path: Path, n: int = 50):
    """An ingested array dataset of ``n`` RGB images and the noise step's labels: a shuffled ``index`` (each row's
    ingested image), every fifth row held out for validation, and the held-out images far brighter than the
    training images (a leak of validation pixels into the statistics shows in the mean)."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, (n, 4, 4, 3), dtype=np.uint8)
    index = rng.permutation(n)
    is_val = np.arange(n) % 5 == 0
    images[index[is_val]] += 150
    label = rng.integers(0, 3, n)
    np.savez(ingest / "train.npz", images=images, labels=rng.integers(0, 3, n))
    write_manifest(ingest, list("abc"), {"train": n}, image_shape=(4, 4, 3))
    np.savez(noise / "labels.npz", index=index, label=label, clean_label=label, is_noisy=np.zeros(n, bool),
             is_val=is_val)
    return ingest, noise, images, index, label, is_val


def test_the_validation_set_is_exactly_the_rows_the_noise_step_held_out(tmp_path):
    """Model selection, calibration and the gate's warnings trust the validation set to be the ``is_val`` rows of
    labels.npz (their images through ``index``, their labels), and training to see only the other rows."""
    ingest, noise, images, index, label, is_val = _arrays_split(tmp_path)
    train, val, meta = load_split(ingest, noise, workers=0)
    mean, std = meta["normalisation"]["mean"], meta["normalisation"]["std"]
    for data, rows in ((val, is_val), (train, ~is_val)):
        assert data.labels.tolist() == label[rows].tolist()
        want = (torch.from_numpy(images[index[rows]]).permute(0, 3, 1, 2).double() / 255.0
                - torch.tensor(mean, dtype=torch.float64)[:, None, None]) / torch.tensor(std, dtype=torch.float64)[
                    :, None, None]
        torch.testing.assert_close(data.images.double(), want, rtol=0, atol=1e-5)


def test_the_normalisation_statistics_come_from_the_training_rows_only(tmp_path):
    """The per-channel mean and std recorded in the model file (and applied by serving) are those of the training
    rows' pixels: the brighter validation images leave them unchanged."""
    ingest, noise, images, index, _, is_val = _arrays_split(tmp_path)
    _, _, meta = load_split(ingest, noise, workers=0)
    pixels = images[index[~is_val]].astype(np.float64) / 255.0
    np.testing.assert_allclose(meta["normalisation"]["mean"], pixels.mean(axis=(0, 1, 2)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(meta["normalisation"]["std"], pixels.std(axis=(0, 1, 2)), rtol=0, atol=1e-5)
    everything = images[index].astype(np.float64) / 255.0
    assert min(everything.mean(axis=(0, 1, 2)) - pixels.mean(axis=(0, 1, 2))) > 0.05  # a leak would show


def test_the_class_count_is_the_manifests_even_where_no_label_names_the_last_class(tmp_path):
    """The model file's num_classes is the ingested dataset's (its class names), not the largest noisy label seen."""
    ingest, noise, _, index, label, is_val = _arrays_split(tmp_path)
    fewer = label % 2  # classes 0 and 1 only: "c" never given
    np.savez(noise / "labels.npz", index=index, label=fewer, clean_label=fewer, is_noisy=np.zeros(len(index), bool),
             is_val=is_val)
    assert load_split(ingest, noise, workers=0)[2]["num_classes"] == 3


def test_a_datasets_own_val_split_is_the_validation_set(tmp_path):
    """An image folder's own ``val.npz`` (the manifest counts a val split) is the validation set, normalised with the
    training rows' statistics; the noise step held nothing out, so every row of labels.npz trains."""
    ingest, noise, _, index, label, _ = _arrays_split(tmp_path)
    none = np.zeros(len(index), bool)
    np.savez(noise / "labels.npz", index=index, label=label, clean_label=label, is_noisy=none, is_val=none)
    val_images = np.random.default_rng(1).integers(0, 255, (7, 4, 4, 3), dtype=np.uint8)
    val_labels = np.array([2, 0, 1, 1, 0, 2, 2])
    np.savez(ingest / "val.npz", images=val_images, labels=val_labels)
    write_manifest(ingest, list("abc"), {"train": len(index), "val": 7}, image_shape=(4, 4, 3))
    train, val, meta = load_split(ingest, noise, workers=0)
    assert train.labels.tolist() == label.tolist() and val.labels.tolist() == val_labels.tolist()
    mean, std = meta["normalisation"]["mean"], meta["normalisation"]["std"]
    want = (torch.from_numpy(val_images).permute(0, 3, 1, 2).double() / 255.0
            - torch.tensor(mean, dtype=torch.float64)[:, None, None]) / torch.tensor(std, dtype=torch.float64)[
                :, None, None]
    torch.testing.assert_close(val.images.double(), want, rtol=0, atol=1e-5)


def test_an_index_past_the_last_ingested_image_is_a_data_error(tmp_path):
    """labels.npz from another ingest: an index equal to the image count (one past the last) names the fix."""
    ingest, noise, _, index, label, is_val = _arrays_split(tmp_path)
    index = index.copy()
    index[0] = len(index)
    np.savez(noise / "labels.npz", index=index, label=label, clean_label=label, is_noisy=np.zeros(len(index), bool),
             is_val=is_val)
    with pytest.raises(DataError, match=r"labels\.npz: expected indices of the 50 ingested images, 0 to 49, found 50 "
                                        r"\(re-run the noise step\)"):
        load_split(ingest, noise, workers=0)


def test_a_sharded_split_checks_the_noise_index_and_needs_its_own_val_split(ingest_dir, tmp_path):
    ingested = tmp_path / "ingest"
    shutil.copytree(ingest_dir, ingested)
    make_noise(NoiseConfig(kind="human"), ingest=ingested, out=tmp_path / "noise")
    manifest = json.loads((ingested / "manifest.json").read_text())
    count = manifest["counts"]["train"]
    with np.load(tmp_path / "noise" / "labels.npz") as labels:
        arrays = dict(labels)
    first, arrays["index"][0] = arrays["index"][0], count
    np.savez(tmp_path / "noise" / "labels.npz", **arrays)
    with pytest.raises(DataError, match=rf"expected indices of the {count} ingested images, 0 to {count - 1}, "
                                        rf"found {count}"):
        load_split(ingested, tmp_path / "noise", workers=0)
    arrays["index"][0] = first
    np.savez(tmp_path / "noise" / "labels.npz", **arrays)
    del manifest["counts"]["val"]
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: expected a sharded dataset with its own val split, found the "
                                        r"splits \['test', 'train'\]"):
        load_split(ingested, tmp_path / "noise", workers=0)


def test_a_sharded_split_augments_the_training_images_only_and_checks_the_val_shards(ingest_dir, tmp_path):
    """load_split(augment=True): random crops and flips for training, the centre crop for validation; and every
    train and val shard's sha256 is checked before the step reads it (docs/data.md)."""
    ingested = tmp_path / "ingest"
    shutil.copytree(ingest_dir, ingested)
    make_noise(NoiseConfig(kind="human"), ingest=ingested, out=tmp_path / "noise")
    train, val, _ = load_split(ingested, tmp_path / "noise", workers=0, augment=True)
    assert (train.augment, val.augment) == (True, False)
    assert load_split(ingested, tmp_path / "noise", workers=0)[0].augment is False
    index = read_index(ingested, "val")
    shard = shard_paths(ingested, "val")[0]
    _flip_a_byte(shard, int(index.offset[0] + index.size[0] // 2))
    with pytest.raises(DataError, match=rf"^{re.escape(str(shard))}: expected .*sha256"):
        load_split(ingested, tmp_path / "noise", workers=0)


def test_a_sharded_test_digest_follows_the_test_shards_sha256_and_nothing_else(ingest_dir, tmp_path):
    """splits.test_digest for shards: each test shard's sha256 in index.json (and the index's keys and labels);
    another training shard leaves it as it was."""
    from components.common.splits import test_digest  # noqa: PLC0415

    ingested = tmp_path / "ingest"
    shutil.copytree(ingest_dir, ingested)
    first = test_digest(ingested)
    path = ingested / "shards" / "index.json"
    index = json.loads(path.read_text())
    index["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(index))
    assert test_digest(ingested) == first
    index["splits"]["test"]["shards"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(index))
    assert test_digest(ingested) != first


def test_a_negative_index_is_a_data_error_too(tmp_path):
    """labels.npz's index names ingested images; -1 (the sentinel clean_label uses for "unknown") is none of them,
    and numpy would silently read the last image for it."""
    ingest, noise, _, index, label, is_val = _arrays_split(tmp_path)
    index = index.copy()
    index[1] = -1
    np.savez(noise / "labels.npz", index=index, label=label, clean_label=label, is_noisy=np.zeros(len(index), bool),
             is_val=is_val)
    with pytest.raises(DataError, match=r"labels\.npz: expected indices of the 50 ingested images, 0 to 49, found -1 "):
        load_split(ingest, noise, workers=0)


def test_a_crop_padding_the_shard_loader_cannot_apply_is_refused(ingest_dir, tmp_path):
    """The shard loader crops within the resize margin and pads nothing: a crop_padding with augment would be
    ignored without a word, so it is refused before anything is written; 0, or no augment, is accepted."""
    make_noise(NoiseConfig(kind="human"), ingest=ingest_dir, out=tmp_path / "noise")
    with pytest.raises(ConfigError) as err:
        baseline(BaselineConfig(augment=True, crop_padding=2, batch_size=8, progress=False, device="cpu", workers=0),
                 ingest=ingest_dir, noise=tmp_path / "noise", out=tmp_path / "out")
    assert str(err.value) == (f"crop_padding: expected 0 for the sharded dataset in {ingest_dir} (its loader crops "
                              f"within the resize margin, {RESIZE - CROP} pixels, and pads nothing), found 2; set "
                              "crop_padding: 0, or augment: false")
    assert not (tmp_path / "out" / "checkpoints").exists()
    for augment, padding in ((True, 0), (False, 2)):
        assert len(load_split(ingest_dir, tmp_path / "noise", workers=0, augment=augment, crop_padding=padding)[0])
