"""noise: clean training labels -> noisy labels, the injected-noise mask, the train/validation split.

Writes ``artifacts/noise/labels.npz`` (``index`` into the ingested training set, ``label`` as given to
training, ``clean_label``, ``is_noisy``, ``is_val``), ``transition.json`` (the realised K x K transition
matrix, rows = clean class) and ``summary.json`` (requested and realised noise rates).

Noise kinds (deterministic given ``seed``):
- ``none``: labels unchanged.
- ``symmetric``: with probability ``rate`` a label is replaced by a class drawn uniformly from all K classes
  (the true one included), so the realised rate is ``rate * (K - 1) / K``.
- ``uniform_other``: with probability ``rate`` a label is replaced by one of the other K - 1 classes,
  uniformly, so the realised rate is ``rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import write_atomic, write_json
from components.config import cli
from components.formats import DataError
from components.ingest import OUT as INGEST_OUT

KINDS = ("none", "symmetric", "uniform_other")
OUT = Path("artifacts/noise")


@dataclass(frozen=True)
class NoiseConfig:
    kind: str = "symmetric"  # one of KINDS
    rate: float = 0.5  # the probability that a label is resampled
    seed: int = 0
    train_size: int = 0  # use a random subset of this many training images (0: all of them)
    val_fraction: float = 0.1  # share of the (sub)set held out for model selection
    val_clean: bool = True  # validation labels clean (the paper's CIFAR-10 setup) or noisy like training

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown noise kind {self.kind!r}. Valid: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate: expected a number in [0, 1], found {self.rate}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in (0, 1) (training picks its best epoch on the "
                             f"validation set), found {self.val_fraction}")
        if self.train_size < 0:
            raise ValueError(f"train_size: expected 0 (all) or a positive count, found {self.train_size}")


def corrupt(labels: np.ndarray, *, kind: str, rate: float, num_classes: int,
            rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of ``labels`` under the noise model ``kind`` (see the module docstring)."""
    noisy = labels.copy()
    if kind == "none" or rate == 0.0:
        return noisy
    hit = rng.random(labels.shape[0]) < rate
    if kind == "symmetric":
        noisy[hit] = rng.integers(0, num_classes, int(hit.sum()))
    else:  # uniform_other: shift by 1..K-1 so the new class is never the old one
        noisy[hit] = (labels[hit] + rng.integers(1, num_classes, int(hit.sum()))) % num_classes
    return noisy


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised counts: entry (i, j) is the share of class-i samples labelled j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def run(config: NoiseConfig, *, ingest: Path = INGEST_OUT, out: Path = OUT) -> dict:
    """Make the noisy labels and the split from the ingested training set; returns the summary."""
    train_file = Path(ingest) / "train.npz"
    if not train_file.is_file():
        raise DataError(f"{train_file}: expected the ingest step's output, found no such file "
                        f"(run python -m components.ingest first)")
    with np.load(train_file) as data:
        clean_all = data["labels"]
    num_classes = int(clean_all.max()) + 1
    rng = np.random.default_rng(config.seed)
    n = clean_all.shape[0] if config.train_size == 0 else config.train_size
    if n > clean_all.shape[0]:
        raise ValueError(f"train_size: expected at most the {clean_all.shape[0]} ingested images, found {n}")
    index = np.sort(rng.permutation(clean_all.shape[0])[:n])
    clean = clean_all[index]
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[:round(config.val_fraction * n)]] = True
    noisy = corrupt(clean, kind=config.kind, rate=config.rate, num_classes=num_classes, rng=rng)
    if config.val_clean:
        noisy[is_val] = clean[is_val]
    is_noisy = noisy != clean
    train_rows = ~is_val
    summary = {"kind": config.kind, "requested_rate": config.rate, "num_classes": num_classes,
               "train": int(train_rows.sum()), "val": int(is_val.sum()), "val_clean": config.val_clean,
               "realised_rate_train": float(is_noisy[train_rows].mean()) if train_rows.any() else 0.0,
               "realised_rate_val": float(is_noisy[is_val].mean()) if is_val.any() else 0.0}
    out = Path(out)
    write_atomic(out / "labels.npz", lambda fh: np.savez(fh, index=index, label=noisy, clean_label=clean,
                                                         is_noisy=is_noisy, is_val=is_val))
    write_json(out / "transition.json", transition_matrix(clean[train_rows], noisy[train_rows],
                                                          num_classes).round(6).tolist())
    write_json(out / "summary.json", summary)
    return summary


def _main(configs: dict) -> None:
    s = run(configs["noise"])
    print(f"noise: {s['kind']} rate {s['requested_rate']} -> realised {s['realised_rate_train']:.4f} on "
          f"{s['train']} training labels; {s['val']} validation labels ({'clean' if s['val_clean'] else 'noisy'})")


main = cli("noise", {"noise": NoiseConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
