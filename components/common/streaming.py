"""Training and evaluation data streamed from WebDataset shards: decoded, resized and cropped in ``DataLoader``
worker processes, never held in memory whole.

``ShardSource`` is what the trainer's loop reads for a sharded dataset (the in-memory ``model.trainer.Data``
is the other kind). Its order is a pure function of ``(seed, epoch)``: the shards are shuffled, then the samples
within each window of ``WINDOW_SHARDS`` consecutive shards (the ingest step wrote the training samples in a random
order, so every shard is already a random sample). Batch ``j`` of an epoch is the slice ``[j B, (j + 1) B)`` of
that order, whatever the number of workers, so a run resumed at batch ``j`` sees exactly the samples an
uninterrupted run would. Under data parallelism each process loads only its rows of each global batch (disjoint
shares of the same shards); the loop assembles the global batch. Random crops and flips (``augment``) are seeded
per sample from ``(seed, epoch, position)``, so they do not depend on which worker decodes the sample either. The
loaders never draw from torch's global generator, so a resumed run's dropout draws are the uninterrupted run's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from components.common.config import ConfigError
from components.common.errors import DataError
from components.formats.images import MAX_PIXELS, open_image, resize_crop, to_8_bits
from components.formats.webdataset import SplitIndex

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WINDOW_SHARDS = 4  # shards whose samples are shuffled together (about 1 GB of Clothing1M JPEGs at 10k per shard)


def decode(payload: bytes, *, resize: int, crop: int, offset: tuple[int, int] | None = None,
           flip: bool = False, where: str = "image", max_pixels: int = MAX_PIXELS) -> Tensor:
    """uint8 ``[3, crop, crop]``: the short side resized to ``resize`` (bilinear), then the ``crop`` square at
    ``offset`` (a fraction pair in [0, 1]; None: the centre), mirrored if ``flip``. An image whose header declares
    more than ``max_pixels`` pixels is refused (``DataError``) before it is decoded."""
    with open_image(payload, where=where, max_pixels=max_pixels) as img:
        if img.format == "JPEG":
            img.draft("RGB", (resize, resize))  # decode at a reduced scale no smaller than ``resize``
        rgb = to_8_bits(img, where=where).convert("RGB")  # a 16-bit image scaled, as serving does, not clipped
    scale = resize / min(rgb.size)
    w, h = max(resize, round(rgb.width * scale)), max(resize, round(rgb.height * scale))
    fx, fy = offset if offset is not None else (0.5, 0.5)
    square = (round((w - crop) * fx), round((h - crop) * fy), crop)
    out = resize_crop(rgb, (w, h), square, max_pixels=max_pixels)  # a thin image: only the crop is resampled
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


class ShardImages(Dataset):
    """The images of one split: item ``(row, seed)`` -> ``(uint8 [3, crop, crop], decode seconds)``; ``seed``
    -1 is the centre crop, any other value draws a random crop and flip from it."""

    def __init__(self, index: SplitIndex, *, resize: int, crop: int):
        if resize < crop:
            raise ValueError(f"resize: expected at least the crop size {crop}, found {resize}")
        self.index, self.resize, self.crop = index, resize, crop
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor | None, float | str]:
        """``(image, decode seconds)``, or ``(None, message)`` for an unreadable sample: the error travels back as
        a value, so the main process raises it as one line instead of a worker's traceback."""
        row, seed = item
        started = time.perf_counter()
        offset, flip = None, False
        if seed >= 0:
            draw = np.random.default_rng(seed).random(3)
            offset, flip = (float(draw[0]), float(draw[1])), bool(draw[2] < 0.5)
        try:
            payload = self.index.read(row, self._handles)
            where = f"{self.index.path(row)} (key {self.index.key[row].decode()})"
            image = decode(payload, resize=self.resize, crop=self.crop, offset=offset, flip=flip, where=where)
        except (DataError, OSError) as err:
            return None, " ".join(str(err).split())
        return image, time.perf_counter() - started

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files stay in the process that opened them


def epoch_order(shards: np.ndarray, *, seed: int, epoch: int, window: int = WINDOW_SHARDS) -> np.ndarray:
    """Positions ``0..n-1`` (sample ``i`` in shard ``shards[i]``) in the order of ``epoch``: shards shuffled, then
    the samples within each window of ``window`` consecutive shards."""
    rng = np.random.default_rng([seed, epoch])
    ids = rng.permutation(np.unique(shards))
    parts = [rng.permutation(np.flatnonzero(np.isin(shards, ids[start:start + window])))
             for start in range(0, ids.size, window)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _item(positions: np.ndarray, seeds: Callable[[int], int], p: int) -> tuple[int, int]:
    return int(positions[p]), seeds(p)


class _Plan:
    """The batch sampler of a source's loader: the batches of the pass about to start (arrays of positions),
    turned into ``ShardImages`` items by ``item`` as the loader asks for them (not a million tuples up front)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.item: Callable[[int], tuple[int, int]] = lambda p: (p, -1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [self.item(int(p)) for p in batch]

    def __len__(self) -> int:
        return len(self.batches)


def _collate(items: list[tuple[Tensor | None, float | str]]) -> tuple[Tensor | None, float, str]:
    """A batch: the stacked images, the seconds spent decoding them, and the first error ('' if none)."""
    errors = [outcome for image, outcome in items if image is None]
    if errors:
        return None, 0.0, errors[0]
    return torch.stack([image for image, _ in items]), float(sum(seconds for _, seconds in items)), ""


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # each worker decodes one image at a time; the main process keeps the cores


def _own_generator() -> torch.Generator:
    """The generator a loader draws its workers' base seed from on each new iterator. Without one it draws from
    torch's global generator, which the trainer checkpoints for the network's own draws (dropout): a resumed run
    starts its loaders at other points of that stream, so its dropout masks would differ from the uninterrupted
    run's. The seed it gives is used by nothing (the crops are seeded per sample), so a fixed one does."""
    return torch.Generator().manual_seed(0)


@dataclass
class ShardSource:
    """A sharded split as training or evaluation data (the trainer's ``Source``): the samples at ``positions``
    of ``images``, with ``labels`` (the labels training uses, e.g. the noise step's), normalised by ``mean`` and
    ``std`` per channel. ``augment`` draws a random crop and flip per sample instead of the centre crop."""

    images: ShardImages
    positions: np.ndarray
    labels: Tensor
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    workers: int = 2
    augment: bool = False
    loads_rows: ClassVar[bool] = True  # each process loads only its rows of a global batch
    augments: ClassVar[bool] = True  # crops (random with ``augment``, else central) are its own
    _decoded: list[float] = field(default_factory=lambda: [0, 0.0])  # images and decode seconds this epoch
    _loader: DataLoader | None = field(default=None, init=False, repr=False, compare=False)  # workers outlive a pass
    _plan: _Plan = field(default_factory=_Plan, init=False, repr=False, compare=False)
    _passing: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.labels.shape != (self.positions.shape[0],):
            raise ValueError(f"labels: expected one per position ({self.positions.shape[0]}), found "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def subset(self, keep: Tensor) -> ShardSource:
        """A copy holding only the rows ``keep`` selects (a boolean mask or indices over this source's rows) with
        their labels; its decode counters start at zero and it starts its own loader."""
        return replace(self, positions=self.positions[keep.numpy()], labels=self.labels[keep],
                       _decoded=[0, 0.0])

    def batches(self, epoch: int, *, first: int, batch_size: int, seed: int, rows: slice,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """This process's ``rows`` of the global batches ``first, first + 1, ...`` of ``epoch`` (``generator`` is
        not used: the random crops are seeded per sample)."""
        del generator
        order = epoch_order(self.images.index.shard[self.positions], seed=seed, epoch=epoch)
        steps = len(order) // batch_size
        plan = [order[j * batch_size + rows.start:j * batch_size + rows.stop] for j in range(first, steps)]
        self._decoded = [0, 0.0]
        crops = (lambda p: int(np.random.SeedSequence([seed, epoch, int(p)]).generate_state(1)[0])) \
            if self.augment else (lambda p: -1)
        return self._load(plan, crops)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Every sample once, in order, centre-cropped."""
        positions = np.arange(len(self))
        plan = [positions[i:i + batch_size] for i in range(0, len(self), batch_size)]
        return self._load(plan, lambda p: -1)

    def epoch_stats(self) -> dict[str, float]:
        """The loader's throughput since the epoch began: images decoded, resized and cropped per second of one
        worker's time."""
        images, seconds = self._decoded
        return {"loader_images_per_s_per_worker": images / seconds} if seconds else {}

    def _load(self, plan: list[np.ndarray], seeds) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over ``plan`` (arrays of positions) through the source's loader, whose worker processes start
        once and serve every pass; passes run one at a time (a pass left unfinished ends when its iterator is
        dropped)."""
        if self._passing:
            raise RuntimeError("ShardSource: expected one pass at a time, found a pass started while another is "
                               "running; finish or drop the first iterator, or use a second source")
        if self._loader is None:
            self._loader = DataLoader(self.images, batch_sampler=self._plan, collate_fn=_collate,
                                      num_workers=self.workers, worker_init_fn=_one_thread if self.workers else None,
                                      prefetch_factor=4 if self.workers else None,
                                      persistent_workers=self.workers > 0, generator=_own_generator())
        self._passing = True
        try:
            # no reference back to the source: it is freed (and its workers stopped) as soon as it is dropped
            self._plan.batches, self._plan.item = plan, functools.partial(_item, self.positions, seeds)
            mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
            for (images, seconds, error), batch in zip(self._loader, plan, strict=True):
                if error:
                    raise DataError(error)  # raised here, not in the worker: one line, not a worker traceback
                self._decoded[0] += images.shape[0]
                self._decoded[1] += seconds
                x = (images.float().div_(255.0) - mean) / std
                yield x, self.labels[torch.from_numpy(batch)]
        finally:
            self._passing = False


def open_split(ingest, split: str, *, positions: np.ndarray | None = None, labels: Tensor | None = None,
               workers: int = 2, augment: bool = False, crop_padding: int = 0) -> ShardSource:
    """A split of a sharded ingest as a ``ShardSource``, decoded with the manifest's transform: every sample with
    its ingested label, or the samples at ``positions`` with ``labels``. Its random crops lie within the resize
    margin and pad nothing: a ``crop_padding`` with ``augment`` is a ``ConfigError`` (it would be ignored)."""
    from components.common.artifacts import read_json  # noqa: PLC0415
    from components.formats.webdataset import read_index  # noqa: PLC0415

    transform = read_json(Path(ingest) / "manifest.json", "ingest", "transform")["transform"]
    if augment and crop_padding:
        raise ConfigError(f"crop_padding: expected 0 for the sharded dataset in {ingest} (its loader crops within "
                          f"the resize margin, {transform['resize'] - transform['crop']} pixels, and pads nothing), "
                          f"found {crop_padding}; set crop_padding: 0, or augment: false")
    index = read_index(ingest, split)
    positions = np.arange(len(index)) if positions is None else positions
    labels = torch.from_numpy(index.label[positions].astype(np.int64)) if labels is None else labels
    images = ShardImages(index, resize=transform["resize"], crop=transform["crop"])
    return ShardSource(images, positions, labels, mean=tuple(transform["mean"]), std=tuple(transform["std"]),
                       workers=workers, augment=augment)


def decoded_chunks(source: ShardSource, *, chunk: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """uint8 images ``[n, H, W, C]`` (after the resize and crop, before normalisation) with their labels, ``chunk``
    at a time, in order."""
    positions = np.arange(len(source))
    plan = [positions[i:i + chunk] for i in range(0, len(source), chunk)]
    items = [[(int(source.positions[p]), -1) for p in batch] for batch in plan]
    loader = DataLoader(source.images, batch_sampler=items, collate_fn=_collate, num_workers=source.workers,
                        worker_init_fn=_one_thread if source.workers else None, generator=_own_generator())
    for (images, _, error), batch in zip(loader, plan, strict=True):
        if error:
            raise DataError(error)
        yield images.permute(0, 2, 3, 1).numpy(), source.labels[torch.from_numpy(batch)].numpy()
