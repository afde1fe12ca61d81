"""Image shards in the WebDataset convention, with a byte index for random access.

A split is a sequence of POSIX tar files ``shards/<split>-<n>.tar``. Sample ``i`` of a split is three members in
a row, named by its zero-padded number: ``<i>.jpg`` (the original encoded bytes, never re-encoded), ``<i>.cls``
(its label as decimal text) and ``<i>.json`` (``{"key": source key, "label": ..., "clean_label": ...}``, -1 where
no clean label is known). ``webdataset.WebDataset`` reads the shards as they are.

Beside the shards, ``shards/<split>.index.npz`` holds one row per sample: ``shard`` (number), ``offset`` and
``size`` (of the image bytes inside the tar), ``label``, ``clean_label`` and ``key``, so a reader seeks straight
to any sample (deterministic order, mid-epoch resume, disjoint shares per process) without scanning the tar.
``shards/index.json`` lists every shard with its sample count, size and sha256.

Each shard and index is fsynced once written: the folder holding them is renamed in by ingest's swap, which then
deletes the previous shards, and a rename flushes none of the files inside (a power cut could leave both lost).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.artifacts import check_labels, read_arrays, read_json, sha256_file
from components.common.atomic import fsync_file
from components.common.errors import DataError
from components.formats import inside

INDEX_KEYS = ("shard", "offset", "size", "label", "clean_label", "key")
OPEN_SHARDS = 64  # shard files a reading process keeps open at once (SplitIndex.read)


def shard_name(split: str, number: int) -> str:
    """The file name of shard ``number`` of ``split``: ``<split>-<number>.tar``, the number zero-padded to five
    digits."""
    return f"{split}-{number:05d}.tar"


class ShardWriter:
    """Write the samples of one split into tar shards of ``shard_size`` samples each, in order."""

    def __init__(self, folder: Path, split: str, shard_size: int):
        self.folder, self.split, self.shard_size = Path(folder), split, shard_size
        self.rows: dict[str, list] = {k: [] for k in INDEX_KEYS}
        self.shards: list[dict] = []
        self._tar: tarfile.TarFile | None = None
        self._in_shard = 0

    def add(self, key: str, payload: bytes, *, label: int, clean_label: int, extension: str = "jpg") -> None:
        """Append one sample: ``payload`` (the encoded image, as it is) as ``<i>.<extension>``, ``label`` as
        ``<i>.cls`` and ``{key, label, clean_label}`` as ``<i>.json``, and its row of the index. Opens the next shard
        file in ``folder`` when none is open and closes it (size, sha256) at ``shard_size`` samples."""
        if self._tar is None:
            path = self.folder / shard_name(self.split, len(self.shards))
            self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed by _close_shard
            self._in_shard = 0
        number = f"{len(self.rows['key']):09d}"
        meta = json.dumps({"key": key, "label": label, "clean_label": clean_label}).encode()
        offset = self._member(f"{number}.{extension}", payload)
        self._member(f"{number}.cls", str(label).encode())
        self._member(f"{number}.json", meta)
        for name, value in zip(INDEX_KEYS, (len(self.shards), offset, len(payload), label, clean_label, key),
                               strict=True):
            self.rows[name].append(value)
        self._in_shard += 1
        if self._in_shard == self.shard_size:
            self._close_shard()

    def _member(self, name: str, payload: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644  # mtime 0: the same input gives the same bytes
        start = self._tar.offset + len(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
        self._tar.addfile(info, io.BytesIO(payload))
        return start  # where the member's data begins, after its header

    def _close_shard(self) -> None:
        self._tar.close()
        path = Path(self._tar.name)
        fsync_file(path)  # on disk before ingest's swap deletes the previous shards
        self.shards.append({"file": path.name, "count": self._in_shard, "bytes": path.stat().st_size,
                            "sha256": sha256_file(path)})
        self._tar = None

    def close(self) -> dict:
        """Finish the last shard and write the split's index; returns its entry of ``index.json``."""
        if self._tar is not None:
            self._close_shard()
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in self.rows.items() if k != "key"}
        arrays["key"] = np.asarray([k.encode() for k in self.rows["key"]], dtype=bytes)
        path = self.folder / f"{self.split}.index.npz"
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        fsync_file(path)  # as the shards: a folder's rename flushes none of its files
        return {"count": len(self.rows["key"]), "shards": self.shards}


@dataclass(frozen=True)
class SplitIndex:
    """Where each sample of a split lies: ``files[shard[i]]`` at ``offset[i]``, ``size[i]`` bytes."""

    folder: Path
    files: tuple[str, ...]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    clean_label: np.ndarray
    key: np.ndarray  # bytes

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def path(self, row: int) -> Path:
        """The shard file holding sample ``row``."""
        return self.folder / self.files[int(self.shard[row])]

    def read(self, row: int, handles: dict[str, object] | None = None) -> bytes:
        """The encoded image of sample ``row``; ``handles`` caches open files (one per shard) across calls, the
        ``OPEN_SHARDS`` used last: an epoch's shuffle reads every shard, and a file kept open for each of a thousand
        shards ran into the open-file limit (``ulimit -n``, often 1024) mid-epoch."""
        path = self.path(row)
        handle = None if handles is None else handles.pop(path.name, None)
        if handle is None:
            handle = open(path, "rb")  # noqa: SIM115 - kept open in ``handles`` for the next read
            while handles is not None and len(handles) >= OPEN_SHARDS:
                handles.pop(next(iter(handles))).close()  # the one used longest ago
        if handles is not None:
            handles[path.name] = handle  # last: the most recently used
        try:  # pread: no shared file position, so handles inherited by forked DataLoader workers stay safe
            payload = os.pread(handle.fileno(), int(self.size[row]), int(self.offset[row]))
        finally:
            if handles is None:
                handle.close()
        if len(payload) != int(self.size[row]):
            raise DataError(f"{path}: expected {int(self.size[row])} bytes of {self.key[row].decode()} at offset "
                            f"{int(self.offset[row])}, found {len(payload)} (the shard is cut short)")
        return payload


def read_index(ingest: Path, split: str) -> SplitIndex:
    """The index of ``split`` in an ingest folder written with shards; checks it against ``index.json``."""
    ingest = Path(ingest)
    splits = read_json(ingest / "shards" / "index.json", "ingest", "splits")["splits"]
    if split not in splits:
        raise DataError(f"{ingest / 'shards' / 'index.json'}: expected the split {split!r}, found {sorted(splits)}")
    entry = splits[split]
    folder = ingest / "shards"
    arrays = dict(zip(INDEX_KEYS, read_arrays(folder / f"{split}.index.npz", "ingest", *INDEX_KEYS), strict=True))
    for name, array in arrays.items():  # one row per sample in every array; labels integer class indices
        if name in ("label", "clean_label"):
            check_labels(folder / f"{split}.index.npz", array, entry["count"], what="sample (index.json)",
                         name=name)
        elif array.shape != (entry["count"],):
            raise DataError(f"{folder / f'{split}.index.npz'}: expected {entry['count']} samples (index.json) in "
                            f"{name!r}, found shape {list(array.shape)}")
    for shard in entry["shards"]:  # an index.json naming a file outside the shards folder is not followed
        inside(folder, shard["file"], where=f"{folder / 'index.json'} (split {split})")
    return SplitIndex(folder, tuple(s["file"] for s in entry["shards"]), **arrays)


def verify_shards(ingest: Path, splits: tuple[str, ...] | None = None) -> None:
    """Check every shard's size and sha256 against ``index.json``; the first mismatch raises ``DataError``
    naming the shard and the keys of the samples it holds."""
    ingest = Path(ingest)
    index = read_json(ingest / "shards" / "index.json", "ingest", "splits")["splits"]
    for split, entry in index.items():
        if splits is not None and split not in splits:
            continue
        keys = None
        for number, shard in enumerate(entry["shards"]):
            path = inside(ingest / "shards", shard["file"], where=f"{ingest / 'shards' / 'index.json'} (split {split})")
            if not path.is_file():
                raise DataError(f"{path}: expected a shard of {shard['count']} samples, found no such file "
                                f"(re-run the ingest step)")
            size = path.stat().st_size
            found = f"{size} bytes" if size != shard["bytes"] else f"sha256 {sha256_file(path)[:16]}"
            if found != f"sha256 {shard['sha256'][:16]}":
                keys = keys if keys is not None else read_index(ingest, split)
                held = keys.key[keys.shard == number]
                span = f"{held[0].decode()} .. {held[-1].decode()}" if held.size else "no samples"
                raise DataError(f"{path}: expected {shard['bytes']} bytes with sha256 {shard['sha256'][:16]} "
                                f"(index.json), found {found}; it holds {span}: re-run the ingest step")
