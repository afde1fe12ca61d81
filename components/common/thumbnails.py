"""Near-duplicate images by fingerprint: two images are near-duplicates when their 8x8 grayscale thumbnails,
quantised to 16 levels, are equal, or one's is the other's mirror image's (what a training flip makes of it).

Validate measures the share of test (and val) images with a near-duplicate among the training images; an image
folder's reader, drawing the test split itself, holds out each group of near-duplicates whole, so that the split it
draws is not one validate refuses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 4096  # images converted to float at a time: a whole folder of photos in float32 would not fit in memory


def thumbnails(images: np.ndarray) -> list[bytes]:
    """One fingerprint per image of ``images`` (uint8 ``[N, H, W, C]``): its 8x8 grayscale thumbnail, quantised to
    16 levels."""
    found = []
    for start in range(0, images.shape[0], CHUNK):
        chunk = np.ascontiguousarray(images[start:start + CHUNK])
        x = torch.from_numpy(chunk).float().mean(dim=3, keepdim=True).permute(0, 3, 1, 2)
        small = F.adaptive_avg_pool2d(x, 8).clamp(0, 255).div(16).floor().to(torch.uint8)
        found += [row.tobytes() for row in small.reshape(small.shape[0], -1).numpy()]
    return found


def near_duplicate_groups(images: np.ndarray) -> np.ndarray:
    """For each image, the first row of its group of near-duplicates (itself when it has none): images joined by
    an equal thumbnail, or by one's thumbnail being the other's mirror image's, transitively."""
    parent = np.arange(images.shape[0])

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = int(parent[row])
        return row

    keys, first = thumbnails(images), {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    for row, (key, mirrored) in enumerate(zip(keys, thumbnails(images[:, :, ::-1]), strict=True)):
        for other in (first[key], first.get(mirrored, row)):
            a, b = root(row), root(other)
            parent[max(a, b)] = min(a, b)
    return np.array([root(row) for row in range(images.shape[0])], dtype=np.int64)
