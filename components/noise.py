"""noise: clean training labels -> noisy labels, the injected-noise mask, the train/validation split.

Writes ``artifacts/noise/labels.npz`` (``index`` into the ingested training set, ``label`` as given to
training, ``clean_label``, ``is_noisy``, ``is_val``), ``transition.json`` (the realised K x K transition
matrix of the training rows, rows = clean class) and ``summary.json`` (requested and realised noise rates).

Noise kinds, each deterministic given ``seed`` (r = ``rate``, K classes):
- ``none``: labels unchanged.
- ``symmetric``: with probability r a label is replaced by a class drawn uniformly from all K classes, the true
  one included: realised rate r (K - 1) / K.
- ``uniform_other``: with probability r a label is replaced by one of the other K - 1 classes, uniformly:
  realised rate r.
- ``asymmetric``: with probability r a label of a class in the class map becomes its mapped class; other
  classes are kept. Built-in maps: CIFAR-10 truck->automobile, bird->airplane, deer->horse, cat<->dog;
  Fashion-MNIST T-shirt/top<->Shirt, Pullover<->Coat, Sandal->Sneaker, Sneaker->Ankle boot, Ankle boot->Sneaker.
  ``class_map`` (``["cat->dog", ...]``, names or indices) replaces the built-in map.
- ``pairflip``: with probability r class i becomes class (i + 1) mod K: realised rate r.
- ``instance``: feature-dependent noise (Xia et al., NeurIPS 2020): each sample's flip rate q is drawn from a
  normal N(r, 0.1^2) clipped to [0, 1]; the wrong classes get probabilities q * softmax(x W) over the other
  classes, with x the flattened image in [0, 1] and W a fixed N(0, 1) projection drawn from ``seed``, so
  similar images tend to flip to the same classes. Realised rate about r.
- ``human``: the labels of human annotators from the ingested dataset (CIFAR-10N: ``human_labels`` picks
  ``aggre_label``, ``worse_label`` or ``random_label1..3``; Clothing1M: its published noisy labels, measured
  against the clean labels of the images that have one); ``rate`` is not used.

Sharded datasets (Clothing1M) keep their own clean validation split: ``is_val`` is then false everywhere and
``val_fraction`` is not used. The synthetic kinds corrupt the ingested labels (Clothing1M's noisy ones), except
``instance``, which needs every image's pixels in memory. Noise rates count only the rows whose clean label is
known (``clean_label`` -1 marks the others).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from components.artifacts import read_arrays, read_json
from components.atomic import write_atomic, write_json
from components.config import cli
from components.formats import DataError
from components.formats.cifar import HUMAN_LABELS, HumanLabels
from components.formats.webdataset import read_index
from components.ingest import OUT as INGEST_OUT

Kind = Literal["none", "symmetric", "uniform_other", "asymmetric", "pairflip", "instance", "human"]
KINDS = typing.get_args(Kind)
OUT = Path("artifacts/noise")
BUILTIN_MAPS = {
    "cifar10": ["truck->automobile", "bird->airplane", "deer->horse", "cat->dog", "dog->cat"],
    "fashion-mnist": ["T-shirt/top->Shirt", "Shirt->T-shirt/top", "Pullover->Coat", "Coat->Pullover",
                      "Sandal->Sneaker", "Sneaker->Ankle boot", "Ankle boot->Sneaker"],
}
BUILTIN_MAPS["cifar10n"] = BUILTIN_MAPS["cifar10"]


@dataclass(frozen=True)
class NoiseConfig:
    kind: Kind = "symmetric"
    rate: float = 0.5  # r: the probability that a label is resampled
    seed: int = 0
    class_map: tuple[str, ...] = ()  # asymmetric: "source->target" pairs (names or indices); () = built-in map
    human_labels: HumanLabels = "aggre_label"  # human (cifar10n): which annotation to use
    train_size: int = 0  # use a random subset of this many training images (0: all of them)
    val_fraction: float = 0.1  # share of the (sub)set held out for model selection
    val_clean: bool = True  # validation labels clean (the paper's CIFAR-10 setup) or noisy like training

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown noise kind {self.kind!r}. Valid: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate: expected a number in [0, 1], found {self.rate}")
        if self.human_labels not in HUMAN_LABELS:
            raise ValueError(f"Unknown human_labels {self.human_labels!r}. Valid: {', '.join(HUMAN_LABELS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in (0, 1) (training picks its best epoch on the "
                             f"validation set), found {self.val_fraction}")
        if self.train_size < 0:
            raise ValueError(f"train_size: expected 0 (all) or a positive count, found {self.train_size}")


def corrupt(labels: np.ndarray, *, kind: str, rate: float, num_classes: int, rng: np.random.Generator,
            class_map: dict[int, int] | None = None, images: np.ndarray | None = None) -> np.ndarray:
    """Noisy copy of ``labels`` under ``kind`` (see the module docstring); ``human`` is handled by ``run``."""
    noisy = labels.copy()
    hit = rng.random(labels.shape[0]) < rate
    if kind == "none" or rate == 0.0:
        return noisy
    if kind == "symmetric":
        noisy[hit] = rng.integers(0, num_classes, int(hit.sum()))
    elif kind == "uniform_other":  # a shift by 1..K-1 never lands on the old class
        noisy[hit] = (labels[hit] + rng.integers(1, num_classes, int(hit.sum()))) % num_classes
    elif kind == "pairflip":
        noisy[hit] = (labels[hit] + 1) % num_classes
    elif kind == "asymmetric":
        table = np.arange(num_classes)
        for source, target in (class_map or {}).items():
            table[source] = target
        noisy[hit] = table[labels[hit]]
    elif kind == "instance":
        noisy = _instance_noise(labels, rate, num_classes, rng, images)
    else:
        raise ValueError(f"Unknown noise kind {kind!r}. Valid: {', '.join(KINDS)}")
    return noisy


def _instance_noise(labels, rate, num_classes, rng, images) -> np.ndarray:
    if images is None:
        raise ValueError("instance noise needs the images")
    n = labels.shape[0]
    flip_rate = np.clip(rng.normal(rate, 0.1, n), 0.0, 1.0)
    x = images.reshape(n, -1).astype(np.float32) / 255.0
    w = rng.standard_normal((x.shape[1], num_classes)).astype(np.float32)
    scores = x @ w
    scores[np.arange(n), labels] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs *= (flip_rate / probs.sum(axis=1))[:, None]
    probs[np.arange(n), labels] = 1.0 - flip_rate
    cumulative = probs.cumsum(axis=1)
    draws = rng.random(n)[:, None] * cumulative[:, -1:]
    return np.minimum((draws > cumulative).sum(axis=1), num_classes - 1).astype(labels.dtype)


def parse_class_map(pairs, class_names: list[str]) -> dict[int, int]:
    """``["cat->dog", "3->5"]`` -> ``{3: 5}``, checking every class against the dataset's classes."""
    index = {name: i for i, name in enumerate(class_names)}

    def resolve(token: str, pair: str) -> int:
        token = token.strip()
        if token in index:
            return index[token]
        if token.isdigit() and int(token) < len(class_names):
            return int(token)
        raise ValueError(f"class_map: {pair!r}: expected a class name or index of this dataset "
                         f"({', '.join(class_names)}), found {token!r}")

    table = {}
    for pair in pairs:
        source, arrow, target = pair.partition("->")
        if not arrow:
            raise ValueError(f"class_map: expected 'source->target', found {pair!r}")
        table[resolve(source, pair)] = resolve(target, pair)
    return table


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised counts: entry (i, j) is the share of class-i samples labelled j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def run(config: NoiseConfig, *, ingest: Path = INGEST_OUT, out: Path = OUT) -> dict:
    """Make the noisy labels and the split from the ingested training set; returns the summary."""
    ingest = Path(ingest)
    manifest, clean_all, own_val = _read_ingest(ingest)
    num_classes = len(manifest["class_names"])
    rng = np.random.default_rng(config.seed)
    n = clean_all.shape[0] if config.train_size == 0 else config.train_size
    if n > clean_all.shape[0]:
        raise ValueError(f"train_size: expected at most the {clean_all.shape[0]} ingested images, found {n}")
    index = np.sort(rng.permutation(clean_all.shape[0])[:n])
    clean = clean_all[index]
    is_val = np.zeros(n, dtype=bool)
    if own_val is None:  # carve the validation set out of the training images
        is_val[rng.permutation(n)[:round(config.val_fraction * n)]] = True
    noisy, clean = _noisy_labels(config, ingest, manifest, clean, index, num_classes, rng)
    if config.val_clean:
        noisy[is_val] = clean[is_val]
    known = clean >= 0  # Clothing1M: the clean label of most training images is unknown (-1)
    is_noisy = known & (noisy != clean)
    train_rows = ~is_val
    summary = {"kind": config.kind, "requested_rate": config.rate, "num_classes": num_classes,
               "train": int(train_rows.sum()), "val": int(is_val.sum()) if own_val is None else own_val,
               "val_source": "held out of the training images" if own_val is None else "the dataset's val split",
               "val_clean": config.val_clean if own_val is None else True,
               "clean_label_known_train": int((known & train_rows).sum()),
               "realised_rate_train": _rate(is_noisy, known & train_rows),
               "realised_rate_val": _rate(is_noisy, known & is_val)}
    out = Path(out)
    write_atomic(out / "labels.npz", lambda fh: np.savez(fh, index=index, label=noisy, clean_label=clean,
                                                         is_noisy=is_noisy, is_val=is_val))
    rows = known & train_rows
    write_json(out / "transition.json", transition_matrix(clean[rows], noisy[rows], num_classes).round(6).tolist())
    write_json(out / "summary.json", summary)
    return summary


def _rate(is_noisy: np.ndarray, rows: np.ndarray) -> float:
    """The share of noisy labels among ``rows`` (those whose clean label is known)."""
    return float(is_noisy[rows].mean()) if rows.any() else 0.0


def _read_ingest(ingest: Path) -> tuple[dict, np.ndarray, int | None]:
    """The manifest, the ingested training labels, and the size of the dataset's own validation split (None
    when it has none and the noise step holds one out)."""
    manifest = read_json(ingest / "manifest.json", "ingest")
    if manifest.get("format") == "shards":
        counts = manifest.get("counts", {})
        return manifest, read_index(ingest, "train").label, counts.get("val")
    (labels,) = read_arrays(ingest / "train.npz", "ingest", "labels")
    return manifest, labels, None


def _noisy_labels(config, ingest, manifest, clean, index, num_classes, rng) -> tuple[np.ndarray, np.ndarray]:
    """The labels training uses, and the clean labels they are measured against (-1 where unknown)."""
    sharded = manifest.get("format") == "shards"
    if config.kind == "human":
        if sharded:  # the ingested labels are the annotators' already; the clean ones are known for some images
            return clean.copy(), read_index(ingest, "train").clean_label[index]
        path = ingest / "human_labels.npz"
        if not path.is_file():
            raise DataError(f"{path}: expected human labels for noise kind 'human' (ingest dataset cifar10n or "
                            f"clothing1m), found no such file (ingested dataset: {manifest['dataset']})")
        with np.load(path) as table:
            return table[config.human_labels][index].astype(np.int64), clean
    class_map = None
    if config.kind == "asymmetric":
        pairs = config.class_map or BUILTIN_MAPS.get(manifest["dataset"])
        if not pairs:
            raise ValueError(f"class_map: expected source->target pairs for asymmetric noise on "
                             f"{manifest['dataset']}, which has no built-in map; found none")
        class_map = parse_class_map(pairs, manifest["class_names"])
    images = None
    if config.kind == "instance":
        if sharded:
            raise ValueError(f"kind: instance noise reads every image's pixels, which a sharded dataset "
                             f"({manifest['dataset']}) does not hold in memory; expected another kind, found "
                             f"'instance'")
        with np.load(ingest / "train.npz") as data:
            images = data["images"][index]
    return corrupt(clean, kind=config.kind, rate=config.rate, num_classes=num_classes, rng=rng,
                   class_map=class_map, images=images), clean


def _main(configs: dict) -> None:
    s = run(configs["noise"])
    print(f"noise: {s['kind']} rate {s['requested_rate']} -> realised {s['realised_rate_train']:.4f} on "
          f"{s['train']} training labels; {s['val']} validation labels ({'clean' if s['val_clean'] else 'noisy'})")


main = cli("noise", {"noise": NoiseConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
