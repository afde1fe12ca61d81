"""Near-duplicate images by fingerprint, an image's grayscale thumbnails (each cell the mean grey of its part of the
image), under two rules:

- near-duplicates (``first_matches``, ``near_duplicate_groups``): every cell of the two 8x8 thumbnails within
  ``TOLERANCE`` (8) grey levels, and their 16x16 thumbnails, each less its mean grey, within ``DETAIL`` (3) levels
  on average; or the same of one and the other's mirror image (what a training flip makes of it). A copy
  re-encoded as JPEG (quality 75), or up to 8 grey levels brighter or darker, matches; one shifted or cropped by a
  pixel does not, nor two photos alike only at 8x8 (the same shape on a different texture: the 16x16 test). Validate
  measures the share of test (and val) images with a near-duplicate among the training images, and an image
  folder's reader, drawing the test split itself, and the noise step, drawing the validation rows, hold out each
  group of them whole, so that the split drawn is not one validate refuses.
- copies (``thumbnails``, ``copy_groups``): the 8x8 thumbnails, quantised to 16 levels, equal (or mirror images).
  One pass over the images, however many: validate's warning on training images with two labels, which compares
  every training image with every other, on a million of them.

Near-duplicates are found without comparing every pair: the references are sorted by their mean grey (two
near-duplicates' means differ by ``TOLERANCE`` at most), and each chunk of queries is compared (squared distances by
one matrix product, then every cell of the candidates, then their 16x16 thumbnails) only with the references whose
means are that close.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

CHUNK = 4096  # images converted to float at a time: a whole folder of photos in float32 would not fit in memory
TOLERANCE = 8.0  # grey levels (of 255) by which each cell of two near-duplicates' 8x8 thumbnails may differ
DETAIL = 3.0  # grey levels by which two near-duplicates' 16x16 thumbnails, less their means, differ on average
QUERIES, REFERENCES = 1024, 16384  # queries by references compared at a time: a 64 MiB matrix of distances
PAIRS = 1 << 18  # candidate pairs compared cell by cell at a time (near-uniform images are all candidates)
SLACK = 1e-3  # float32 rounding: a copy exactly 8 levels brighter averages to 8.00003
SIDE, DETAIL_SIDE = 8, 16  # the thumbnails' sides


@dataclass(frozen=True)
class Prints:
    """The fingerprints of N images: ``coarse``, their 8x8 grayscale thumbnails (``[N, 64]`` float32 grey levels
    in [0, 255]), and ``detail``, their 16x16 ones (``[N, 256]`` uint8, rounded: a quarter of float32's memory)."""

    coarse: torch.Tensor
    detail: torch.Tensor

    def __len__(self) -> int:
        return self.coarse.shape[0]

    def __getitem__(self, rows) -> Prints:
        return Prints(self.coarse[rows], self.detail[rows])

    @staticmethod
    def cat(parts: list[Prints]) -> Prints:
        return Prints(torch.cat([p.coarse for p in parts] or [torch.zeros(0, SIDE * SIDE)]),
                      torch.cat([p.detail for p in parts] or [torch.zeros(0, DETAIL_SIDE ** 2, dtype=torch.uint8)]))


def fingerprints(images: np.ndarray) -> Prints:
    """The ``Prints`` of ``images`` (uint8 ``[N, H, W, C]``)."""
    found = []
    for start in range(0, images.shape[0], CHUNK):
        chunk = np.array(images[start:start + CHUNK], copy=True)  # a flipped axis of length 1 keeps its stride
        x = torch.from_numpy(chunk).float().mean(dim=3, keepdim=True).permute(0, 3, 1, 2)
        detail = F.adaptive_avg_pool2d(x, DETAIL_SIDE).clamp(0, 255).round().to(torch.uint8)
        found.append(Prints(F.adaptive_avg_pool2d(x, SIDE).clamp(0, 255).reshape(x.shape[0], -1),
                            detail.reshape(x.shape[0], -1)))
    return Prints.cat(found)


def thumbnails(images: np.ndarray) -> list[bytes]:
    """One key per image of ``images`` (uint8 ``[N, H, W, C]``): its 8x8 thumbnail quantised to 16 levels; two
    images with equal keys are copies."""
    return [row.tobytes() for row in fingerprints(images).coarse.div(16).floor().to(torch.uint8).numpy()]


def first_matches(queries: Prints, mirrored: Prints, references: Prints) -> tuple[np.ndarray, np.ndarray]:
    """For each image of ``queries`` (``fingerprints``; ``mirrored``, its mirror images'), the first row of
    ``references`` (``fingerprints``) that is a near-duplicate of it, -1 where none is, and whether only its mirror
    image matches."""
    none = np.iinfo(np.int64).max
    distinct, _, lowest = _distinct(references)
    first = []
    for found in (queries, mirrored):
        asked, asked_of, _ = _distinct(found)
        best = np.full(len(asked), none)
        for rows, matched in _pairs(asked, distinct):
            np.minimum.at(best, rows, lowest[matched])
        first.append(best[asked_of])
    direct = first[0] != none
    row = np.where(direct, first[0], first[1])
    return np.where(row == none, -1, row), ~direct & (row != none)


def near_duplicate_groups(images: np.ndarray) -> np.ndarray:
    """For each image, the first row of its group of near-duplicates (itself when it has none): images joined by
    being near-duplicates, mirrored or not, transitively."""
    found, flipped = fingerprints(images), fingerprints(images[:, :, ::-1])
    distinct, rows_of, first = _distinct(found)  # one fingerprint many times (blank frames): one node, not n^2 pairs
    asked, asked_of, first_flipped = _distinct(flipped)
    rows = np.arange(len(found))
    links = [(rows, first[rows_of]), (rows, first_flipped[asked_of])]  # each image with its fingerprint's others
    links += [(first[a], first[b]) for a, b in _pairs(distinct, distinct)]
    links += [(first_flipped[a], first[b]) for a, b in _pairs(asked, distinct)]
    return _groups(len(found), links)


def _distinct(prints: Prints) -> tuple[Prints, np.ndarray, np.ndarray]:
    """The distinct fingerprints of ``prints``, for each row the position of its own among them, and for each
    distinct one the first row that has it."""
    rows = np.concatenate([prints.coarse.numpy().view(np.uint8), prints.detail.numpy()], axis=1)
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, index, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return prints[torch.from_numpy(index)], inverse.ravel(), index


def copy_groups(images: np.ndarray) -> np.ndarray:
    """For each image, the first row of its group of copies (itself when it has none): images joined by equal
    ``thumbnails``, or one's being the other's mirror image's, transitively."""
    first: dict[bytes, int] = {}
    keys = thumbnails(images)
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    rows = np.arange(len(keys))
    same = np.array([first[key] for key in keys], dtype=np.int64)
    mirrored = np.array([first.get(key, row) for row, key in enumerate(thumbnails(images[:, :, ::-1]))], dtype=np.int64)
    return _groups(len(keys), [(rows, same), (rows, mirrored)])


def _groups(n: int, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each of ``n`` rows' group's first row, the groups the connected components that ``pairs`` (arrays of rows,
    joined pairwise) join."""
    a = np.concatenate([np.asarray(rows, dtype=np.int64) for rows, _ in pairs] or [np.zeros(0, np.int64)])
    b = np.concatenate([np.asarray(rows, dtype=np.int64) for _, rows in pairs] or [np.zeros(0, np.int64)])
    _, component = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False)
    first = np.full(component.max(initial=-1) + 1, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    return first[component]


def _pairs(queries: Prints, references: Prints) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (query row, reference row) that are near-duplicates, in chunks of query rows: only references whose
    mean is within ``TOLERANCE`` of a chunk's are compared, by their squared distance first (at most the cells times
    ``TOLERANCE`` squared), then cell by cell, then by their 16x16 thumbnails (``_alike``)."""
    means = references.coarse.mean(dim=1)
    order = torch.argsort(means)
    sorted_means, ranked = means[order], references[order]
    squares = ranked.coarse.square().sum(dim=1)
    bound = SIDE * SIDE * (TOLERANCE + SLACK) ** 2 * 1.01 + 64.0  # float32 rounding of the expansion, then exact
    by_mean = torch.argsort(queries.coarse.mean(dim=1))
    for start in range(0, len(queries), QUERIES):
        rows = by_mean[start:start + QUERIES]
        q = queries[rows]
        mean = q.coarse.mean(dim=1)
        lo = int(torch.searchsorted(sorted_means, mean.min() - TOLERANCE - SLACK))
        hi = int(torch.searchsorted(sorted_means, mean.max() + TOLERANCE + SLACK, right=True))
        for block in range(lo, hi, REFERENCES):
            window = ranked[block:min(block + REFERENCES, hi)]
            distance = q.coarse.square().sum(dim=1, keepdim=True) + squares[None, block:block + len(window)] \
                - 2.0 * q.coarse @ window.coarse.T
            candidates = torch.nonzero(distance <= bound)
            for part in range(0, candidates.shape[0], PAIRS):
                i, j = candidates[part:part + PAIRS].unbind(dim=1)
                close = (q.coarse[i] - window.coarse[j]).abs().amax(dim=1) <= TOLERANCE + SLACK
                i, j = i[close], j[close]
                alike = _alike(q.detail[i], window.detail[j])
                yield rows[i[alike]].numpy(), order[block + j[alike]].numpy()


def _alike(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``a`` and of ``b`` (16x16 thumbnails), each less its mean grey, differ by at most
    ``DETAIL`` levels on average: a brighter copy is alike, two textures alike only in their 8x8 means are not."""
    a, b = a.float(), b.float()
    return ((a - a.mean(dim=1, keepdim=True)) - (b - b.mean(dim=1, keepdim=True))).abs().mean(dim=1) <= DETAIL + SLACK
