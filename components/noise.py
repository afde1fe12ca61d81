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
  Fashion-MNIST T-shirt/top<->Shirt, Pullover<->Coat, Sandal->Sneaker, Sneaker->Ankle boot, Ankle boot->Sneaker;
  CIFAR-100 each class to the next of its superclass, the last to the first (``superclass_map``).
  ``class_map`` (``["cat->dog", ...]``, names or indices) replaces the built-in map.
- ``pairflip``: with probability r class i becomes class (i + 1) mod K: realised rate r.
- ``instance``: instance-dependent noise (Xia et al., NeurIPS 2020, after their ``get_instance_noisy_label``): each
  sample's flip rate q is drawn from N(r, 0.1^2) truncated to [0, 1]; the wrong classes get probabilities
  q * softmax(x W[y]) over the other classes, with x the flattened image scaled to [0, 1] and W[y] a fixed N(0, 1)
  projection per clean class y, drawn from ``seed``, so similar images of a class flip to the same classes.
  Realised rate the truncated normal's mean: r for 0.2 <= r <= 0.8, more below (about 0.10 at r = 0.05).
  One deviation from their code, kept because recorded results depend on it: theirs passes the raw pixel values
  0..255 as x, so its scores x W[y] are 255 times these and its softmax close to an argmax (a sample's flips go
  nearly all to one wrong class); this one, on the pixels / 255, is softer and spreads a sample's flips over more
  of the wrong classes. q, and so the realised rate, is the same. (Their code also flattens CIFAR images
  channel-first, this one channel-last: the same distribution, W being i.i.d.)
- ``human``: the labels of human annotators from the ingested dataset (CIFAR-10N: ``human_labels`` picks
  ``aggre_label``, ``worse_label`` or ``random_label1..3``; CIFAR-100N: ``noisy_label``, which ``human_labels``
  must name; Clothing1M: its published noisy labels, measured against the clean labels of the images that have
  one); ``rate`` is not used.

A dataset with its own clean validation split (Clothing1M's, an image folder's ``val``) keeps it: ``is_val`` is
then false everywhere and ``val_fraction`` is not used. Otherwise ``val_fraction`` of the rows are held out, with
their clean labels where ``val_clean`` and those are known; where they are not (a user's own labels under kind
``none``), the summary's ``val_clean`` is false and a warning says that selection runs on noisy labels. The training
images that are near-duplicates of a held-out one (the same picture saved twice, re-encoded, a few grey levels
brighter, or mirrored: validate's rule, ``near_duplicate_groups``) are held out with it, so that no validation image
has a near-duplicate left in training: ``held_out_near_duplicates`` in the summary counts them, where there are any.

The step refuses (a ``DataError`` naming the report and its failures, before writing anything) data whose
validation failed: where ``run`` is given the validate step's folder (the command line gives
``artifacts/validate``) and its ``report.json`` exists with ``success`` false. Where there is no report (steps run
by hand on a folder never validated; the KFP component, whose validate step raises before this one runs) the step
runs as it did.

A user's own labels (``labels: as given`` in the manifest) are the truth the synthetic kinds are measured
against; under ``none`` their truth is unknown (``clean_label`` -1). The synthetic kinds corrupt the ingested
labels (Clothing1M's noisy ones), except ``instance``, which needs every image's pixels in memory. Noise rates
count only the rows whose clean label is known (None where none is). ``train_size`` larger than the ingested
training set uses all of it, saying so. Noise that leaves some class's clean label no longer its most common given
label (pairflip or asymmetric at ``rate`` >= 0.5, say) is a warning, ``majority_warning`` in the summary.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from components.common.artifacts import MADE_FROM, labels_digest, read_arrays, read_json, read_manifest
from components.common.atomic import atomic_set, prepare_output, write_atomic, write_json
from components.common.config import CONFIG_FILE, ConfigError, as_record, cli
from components.common.errors import DataError
from components.common.steps import FOLDERS
from components.common.thumbnails import near_duplicate_groups
from components.formats.cifar import HUMAN_LABELS, HumanLabels
from components.formats.webdataset import read_index

INGEST_OUT = FOLDERS["ingest"]
VALIDATE_OUT = FOLDERS["validate"]

Kind = Literal["none", "symmetric", "uniform_other", "asymmetric", "pairflip", "instance", "human"]
KINDS = typing.get_args(Kind)
OUT = FOLDERS["noise"]
BUILTIN_MAPS = {
    "cifar10": ["truck->automobile", "bird->airplane", "deer->horse", "cat->dog", "dog->cat"],
    "fashion-mnist": ["T-shirt/top->Shirt", "Shirt->T-shirt/top", "Pullover->Coat", "Coat->Pullover",
                      "Sandal->Sneaker", "Sneaker->Ankle boot", "Ankle boot->Sneaker"],
}
BUILTIN_MAPS["cifar10n"] = BUILTIN_MAPS["cifar10"]
RATELESS = ("none", "human")  # the kinds that do not read ``rate``: the summary's requested_rate is None
IDENTIFIABLE_BELOW = {"symmetric": "1", "uniform_other": "(K-1)/K", "asymmetric": "0.5", "pairflip": "0.5"}
# the rates below which the clean label stays the most common given label of every class (docs/data.md)
INSTANCE_STD = 0.1  # the spread of the per-sample flip rates of instance noise, as in Xia et al.'s code


@dataclass(frozen=True)
class NoiseConfig:
    """The ``noise`` section of params.yaml: ``kind`` (one of ``KINDS``, see the module docstring), ``rate`` and
    ``seed``; ``class_map`` (asymmetric) and ``human_labels`` (human, on cifar10n); ``train_size`` (0: every ingested
    training image); ``val_fraction`` (the share held out for validation where the dataset has no val split) and
    ``val_clean`` (whether those held-out rows keep their clean labels)."""

    kind: Kind = "symmetric"
    rate: float = 0.5  # r: the probability that a label is resampled
    seed: int = 0
    class_map: tuple[str, ...] = ()  # asymmetric: "source->target" pairs (names or indices); () = built-in map
    human_labels: HumanLabels = "aggre_label"  # human: cifar10n's annotation to use; cifar100n: noisy_label
    train_size: int = 12000  # a random subset of this many training images (0, or more than there are: all)
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, found {self.seed!r}")
        for pair in self.class_map:  # the classes themselves are checked against the dataset (``parse_class_map``)
            _pair(pair)


def _pair(pair: object) -> tuple[str, str]:
    """A class_map entry's source and target, or a ``ConfigError`` unless it is one ``source->target`` string:
    checked in ``NoiseConfig`` already, so a malformed params file fails before any data is read."""
    source, arrow, target = pair.partition("->") if isinstance(pair, str) else ("", "", "")
    if not arrow or not source.strip() or not target.strip():
        raise ConfigError(f"class_map: expected 'source->target', found {pair!r}")
    return source, target


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
    """Xia et al.'s generator (``get_instance_noisy_label`` of their code): a flip rate per sample from N(r, 0.1^2)
    truncated to [0, 1]; one N(0, 1) projection per clean class, ``W[y]`` (d x K), so where a wrong label goes
    depends on the image and on its class; the wrong classes share the flip rate by softmax(x W[y]). x is the image
    divided by 255, where their code uses the raw pixels: a softer softmax than theirs (the module docstring)."""
    if images is None:
        raise ValueError("instance noise needs the images")
    n = labels.shape[0]
    flip_rate = stats.truncnorm.rvs(-rate / INSTANCE_STD, (1.0 - rate) / INSTANCE_STD, loc=rate,
                                    scale=INSTANCE_STD, size=n, random_state=rng)
    x = images.reshape(n, -1).astype(np.float32) / 255.0
    w = rng.standard_normal((num_classes, x.shape[1], num_classes)).astype(np.float32)
    scores = np.empty((n, num_classes), dtype=np.float32)
    for c in range(num_classes):
        rows = labels == c
        scores[rows] = x[rows] @ w[c]
    scores[np.arange(n), labels] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs *= (flip_rate / probs.sum(axis=1))[:, None]
    probs[np.arange(n), labels] = 1.0 - flip_rate
    cumulative = probs.cumsum(axis=1)
    draws = rng.random(n)[:, None] * cumulative[:, -1:]
    return np.minimum((draws > cumulative).sum(axis=1), num_classes - 1).astype(labels.dtype)


def parse_class_map(pairs, class_names: list[str]) -> dict[int, int]:
    """``["cat->dog", "3->5"]`` -> ``{3: 5}``, checking every class against the dataset's classes. What it refuses
    is a ``ConfigError`` (the step's exit 2): the params name a class the dataset does not have, the data is fine."""
    index = {name: i for i, name in enumerate(class_names)}

    def resolve(token: str, pair: str) -> int:
        token = token.strip()
        if token in index:
            return index[token]
        if token.isascii() and token.isdigit() and int(token) < len(class_names):  # not "²", which int() refuses
            return int(token)
        raise ConfigError(f"class_map: {pair!r}: expected a class name or index of this dataset "
                          f"({', '.join(class_names)}), found {token!r}")

    table = {}
    for pair in pairs:
        source, target = _pair(pair)
        key, value = resolve(source, pair), resolve(target, pair)
        if table.get(key, value) != value:
            raise ConfigError(f"class_map: expected one target per class, found {class_names[key]!r} mapped to "
                              f"{class_names[table[key]]!r} and to {class_names[value]!r} ({pair!r})")
        table[key] = value
    return table


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised counts: entry (i, j) is the share of class-i samples labelled j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def designed_transition(kind: str, rate: float, num_classes: int,
                        class_map: dict[int, int] | None = None) -> np.ndarray | None:
    """The transition matrix (row = clean class) a synthetic ``kind`` draws from at ``rate``; None for the kinds
    whose matrix depends on the data (``instance``, ``human``, ``none``)."""
    eye = np.eye(num_classes)
    if kind == "symmetric":
        return (1 - rate) * eye + rate / num_classes
    if kind == "uniform_other":
        return (1 - rate) * eye + rate / max(num_classes - 1, 1) * (1 - eye)
    if kind == "pairflip":
        return (1 - rate) * eye + rate * np.roll(eye, 1, axis=1)
    if kind == "asymmetric":
        table = eye.copy()
        for source, target in (class_map or {}).items():
            table[source] = (1 - rate) * eye[source] + rate * eye[target]
        return table
    return None


def overrun_classes(transition: np.ndarray, class_names: list[str]) -> list[str]:
    """The classes of ``transition`` (row = clean class) whose clean label is not strictly the most common given
    label, each as "Shirt (0.19 kept, 0.56 to T-shirt/top)"; rows of classes without a known clean label (all
    zeros) are skipped."""
    found = []
    for i, row in enumerate(transition):
        other = np.delete(np.arange(len(row)), i)
        j = other[np.argmax(row[other])] if len(other) else i
        if row.sum() > 0 and j != i and row[j] >= row[i] - 1e-12:
            found.append(f"{class_names[i]} ({row[i]:.2f} kept, {row[j]:.2f} to {class_names[j]})")
    return found


def majority_warning(config: NoiseConfig, manifest: dict, realised: np.ndarray) -> str | None:
    """A warning when some class's clean label is not its most common given label (no method can learn that class
    from the labels): by the kind's design at ``rate`` for the synthetic kinds (whose realised matrix differs from it
    by sampling alone), by the realised matrix for ``instance`` and ``human``."""
    names = manifest["class_names"]
    designed = designed_transition(config.kind, config.rate, len(names), _class_map(config, manifest))
    overrun = overrun_classes(realised if designed is None else designed, names)
    if not overrun:
        return None
    how = "realised" if designed is None else f"drawn by kind {config.kind} at rate {config.rate}"
    bound = IDENTIFIABLE_BELOW.get(config.kind)
    named = "; ".join(overrun[:3]) + (f"; and {len(overrun) - 3} more" if len(overrun) > 3 else "")
    limit = f" (kind {config.kind} keeps the clean label the most common below rate {bound})" if bound else ""
    return (f"the clean label is not the most common given label ({how}) of {len(overrun)} of {len(names)} "
            f"classes: {named}: no method can learn these classes from the labels{limit}")


def run(config: NoiseConfig, *, ingest: Path = INGEST_OUT, out: Path = OUT, validate: Path | None = None) -> dict:
    """Make the noisy labels and the split from the ingested training set: reads ``ingest``'s ``manifest.json``
    and ``train.npz`` or shard index (``human_labels.npz`` for kind human); writes ``labels.npz``,
    ``transition.json`` and ``summary.json`` to ``out``; returns the summary. ``validate``: the validate step's
    folder of this ``ingest``, whose ``report.json``, where it exists, must record success (``check_validated``);
    None (the default, as in the KFP component and the benchmarks): no report is read."""
    if validate is not None:
        check_validated(Path(validate) / "report.json")
    ingest, out = Path(ingest), prepare_output(out, step="noise")
    manifest, clean_all, own_val = _read_ingest(ingest)
    num_classes = len(manifest["class_names"])
    rng = np.random.default_rng(config.seed)
    n = _subset_size(config.train_size, clean_all.shape[0])
    index = np.sort(rng.permutation(clean_all.shape[0])[:n])
    clean = clean_all[index]
    is_val, copies = np.zeros(n, dtype=bool), 0
    if own_val is None:  # carve the validation set out of the training images
        is_val, copies = _hold_out(config, rng, ingest, index)
    noisy, clean = _noisy_labels(config, ingest, manifest, clean, index, num_classes, rng)
    known = clean >= 0  # unknown (-1): a user's own labels under kind none; most of Clothing1M
    if config.val_clean:
        noisy[is_val & known] = clean[is_val & known]
    is_noisy = known & (noisy != clean)
    train_rows = ~is_val
    val_clean = own_val is not None or bool(config.val_clean and known[is_val].all())
    requested = None if config.kind in RATELESS else config.rate  # params.yaml's rate, unused by these kinds
    summary = {"kind": config.kind, "requested_rate": requested, "num_classes": num_classes,
               "labels": manifest.get("labels", "curated"), "ingested_train": int(clean_all.shape[0]),
               "train": int(train_rows.sum()), "val": int(is_val.sum()) if own_val is None else own_val,
               "val_source": "held out of the training images" if own_val is None else "the dataset's val split",
               "val_clean": val_clean,
               "clean_label_known_train": int((known & train_rows).sum()),
               "realised_rate_train": _rate(is_noisy, known & train_rows),
               "realised_rate_val": _rate(is_noisy, known & is_val)}
    if copies:
        summary["held_out_near_duplicates"] = copies
        print(f"noise: held out {copies} more training image(s), near-duplicates of drawn validation images (the "
              f"same picture saved twice, re-encoded or mirrored: validate's rule), so that none has a copy left in "
              f"training", file=sys.stderr)
    if not val_clean:
        summary["warning"] = NOISY_VALIDATION
        print(f"WARNING: {NOISY_VALIDATION}", file=sys.stderr)
    ingested = np.bincount(clean_all[clean_all >= 0], minlength=num_classes) > 0
    coverage = coverage_warning(np.where(known, clean, noisy), is_val, manifest["class_names"], ingested=ingested) \
        if own_val is None else None
    if coverage:
        summary["coverage_warning"] = coverage
        print(f"WARNING: {coverage}", file=sys.stderr)
    rows = known & train_rows
    transition = transition_matrix(clean[rows], noisy[rows], num_classes)
    warning = majority_warning(config, manifest, transition)
    if warning:
        summary["majority_warning"] = warning
        print(f"WARNING: {warning}", file=sys.stderr)
    with atomic_set():  # the three files as a set: a failure in any leaves the previous three
        write_atomic(out / "labels.npz", lambda fh: np.savez(fh, index=index, label=noisy, clean_label=clean,
                                                             is_noisy=is_noisy, is_val=is_val,
                                                             **{MADE_FROM: np.array(labels_digest(clean_all))}))
        write_json(out / "transition.json", transition.round(6).tolist())
        write_json(out / CONFIG_FILE, as_record(config))
        write_json(out / "summary.json", summary)
    return summary


def check_validated(report: Path) -> None:
    """A ``DataError`` naming the validate step's ``report`` and the expectations it records as failed, where the
    report exists and records ``success`` false (or cannot be read as validate's report); nothing where there is no
    report (a folder never validated: the step runs as before)."""
    if not report.is_file():
        return
    recorded = read_json(report, "validate", "success")
    if not isinstance(recorded["success"], bool):
        raise DataError(f"{report}: expected success true or false, written by the validate step, found success "
                        f"{recorded['success']!r}")
    if recorded["success"]:
        return
    raise DataError(f"{report}: expected data that passed the validate step, found success false, "
                    f"{_failed(recorded.get('failures'))}; fix the data, then re-run the validate step (python -m "
                    f"components.validate)")


def _failed(failures: object, shown: int = 3) -> str:
    """The first ``shown`` of validate's failed expectations (``report.json``'s ``failures``), as its error lines
    name them."""
    if not isinstance(failures, list) or not failures:
        return "no failed expectation recorded"
    named = [f"{f.get('expectation')} column={f.get('column')} observed={f.get('observed')}" if isinstance(f, dict)
             else repr(f) for f in failures[:shown]]
    more = f"; and {len(failures) - shown} more (report.json's failures)" if len(failures) > shown else ""
    return f"{len(failures)} expectation(s) failed: {'; '.join(named)}{more}"


def coverage_warning(labels: np.ndarray, is_val: np.ndarray, class_names: list[str], *,
                     ingested: np.ndarray | None = None) -> str | None:
    """A warning naming the classes that the train_size draw left out of ``labels`` (the true ones where known)
    altogether, of those ``ingested`` (a mask of the classes: the ingested training set's; None, those of
    ``labels``), and the classes of ``labels`` that the validation draw left with no training image, or with no
    validation image; or None. The draws are uniform over the images, not by class (the recorded splits depend on
    it): on a class of a few images they can take them all, or none (validate's class balance check keeps this away
    from classes of more than a few)."""
    present = np.bincount(labels, minlength=len(class_names)) > 0
    absent = (present if ingested is None else np.asarray(ingested, dtype=bool)) & ~present
    untrained = present & (np.bincount(labels[~is_val], minlength=len(class_names)) == 0)
    unvalidated = present & (np.bincount(labels[is_val], minlength=len(class_names)) == 0)
    split = [f"{_names(untrained, class_names)} no training image" if untrained.any() else "",
             f"{_names(unvalidated, class_names)} no validation image" if unvalidated.any() else ""]
    found = [f"the train_size draw left {_names(absent, class_names)} no image, for training or validation"
             if absent.any() else "",
             f"the validation draw left {' and '.join(f for f in split if f)}" if any(split) else ""]
    if not any(found):
        return None
    return (f"{'; '.join(f for f in found if f)}: a class without training images "
            f"cannot be learnt, one without validation images plays no part in selection; use more of the images "
            f"(noise.train_size), or give the dataset a val split")


def _names(mask: np.ndarray, class_names: list[str]) -> str:
    chosen = [repr(class_names[i]) for i in np.flatnonzero(mask)]
    shown = ", ".join(chosen[:5]) + (", ..." if len(chosen) > 5 else "")
    return f"class {shown}" if len(chosen) == 1 else f"{len(chosen)} classes ({shown})"


NOISY_VALIDATION = ("no clean validation set: the validation labels are as noisy as the training labels, so model "
                    "selection (CE's best epoch, MLNT's released model, the model exported) and temperature scaling "
                    "run on noisy labels, and so does the choice of the gate's CE reference (its best epoch). Give a "
                    "clean val split (labels.csv split val, or a val/, valid/ or validation/ folder; docs/data.md)")


def _subset_size(train_size: int, available: int) -> int:
    """How many ingested training images to use: ``train_size``, or all of them (0, or fewer than asked)."""
    if train_size == 0:
        return available
    if train_size >= available:
        if train_size > available:
            print(f"noise: train_size {train_size} is more than the {available} ingested training images: using "
                  f"all {available}", file=sys.stderr)
        return available
    print(f"noise: using a random {train_size} of the {available} ingested training images (noise.train_size; "
          f"0 uses all)", file=sys.stderr)
    return train_size


def _rate(is_noisy: np.ndarray, rows: np.ndarray) -> float | None:
    """The share of noisy labels among ``rows`` (those whose clean label is known); None where none is known."""
    return float(is_noisy[rows].mean()) if rows.any() else None


def _read_ingest(ingest: Path) -> tuple[dict, np.ndarray, int | None]:
    """The manifest, the ingested training labels, and the size of the dataset's own validation split (None
    when it has none and the noise step holds one out)."""
    manifest = read_manifest(ingest)
    own_val = manifest["counts"].get("val")
    if manifest["format"] == "shards":
        return manifest, read_index(ingest, "train").label, own_val
    (labels,) = read_arrays(ingest / "train.npz", "ingest", "labels")
    return manifest, labels, own_val


def superclass_map(superclasses: dict[str, list[str]] | None) -> list[str]:
    """CIFAR-100's asymmetric map, as Patrini et al. (CVPR 2017) describe theirs: within each superclass, each fine
    class flips to the next in class-index order, the last to the first. ``superclasses`` is ingest's manifest
    entry; none (another dataset) gives no pairs. Not the blocks of five consecutive class indices that much public
    code flips within (a ``build_for_cifar100`` applied to index blocks): CIFAR-100's indices are alphabetical, so
    those blocks are not superclasses (a ``class_map`` reproduces them)."""
    return [f"{a}->{b}" for fine in (superclasses or {}).values() if len(fine) > 1
            for a, b in zip(fine, fine[1:] + fine[:1], strict=True)]


def _class_map(config: NoiseConfig, manifest: dict) -> dict[int, int] | None:
    """Asymmetric noise's map, source class to target class (``class_map``, or the dataset's built-in one)."""
    if config.kind != "asymmetric":
        return None
    pairs = config.class_map or BUILTIN_MAPS.get(manifest["dataset"]) or superclass_map(manifest.get("superclasses"))
    if not pairs:
        raise ConfigError(f"class_map: expected source->target pairs for asymmetric noise on "
                          f"{manifest['dataset']}, which has no built-in map; found none")
    return parse_class_map(pairs, manifest["class_names"])


def _hold_out(config: NoiseConfig, rng: np.random.Generator, ingest: Path, index: np.ndarray) -> tuple[np.ndarray, int]:
    """Which of the ``index`` training images to hold out for validation, and how many of them are near-duplicates
    added to the draw: ``val_fraction`` of them drawn with ``rng``, then every image whose group of near-duplicates
    (``near_duplicate_groups``, validate's rule: the same picture saved twice, re-encoded, a few grey levels
    brighter, or mirrored) holds a drawn one. A copy left in training would reward the epoch, and the model, that
    memorised its label, noisy or not. Without near-duplicates the draw is unchanged, and no rows but the added ones
    ever change. A ``ValueError`` where the copies leave no training
    image. Only array datasets are held out of (a sharded one, Clothing1M, has its own val split)."""
    n = index.size
    drawn = np.zeros(n, dtype=bool)
    drawn[rng.permutation(n)[:_held_out(config, n)]] = True
    (images,) = read_arrays(ingest / "train.npz", "ingest", "images")
    groups = near_duplicate_groups(images[index])
    held = np.isin(groups, groups[drawn])
    if held.all():
        raise ValueError(f"val_fraction: expected at least one training image left, found every one of the {n} "
                         f"a near-duplicate of one of the {int(drawn.sum())} drawn for validation (validate's "
                         f"near-duplicate rule): remove the copies, or give the dataset a val split")
    return held, int(held.sum() - drawn.sum())


def _held_out(config: NoiseConfig, n: int) -> int:
    """How many of the ``n`` training images ``val_fraction`` holds out for validation: at least one, and one
    fewer than ``n`` at most, else a ``ValueError`` (selection, calibration and the gate would run on no image, or
    training on none)."""
    count = round(config.val_fraction * n)
    if count == 0:
        raise ValueError(f"val_fraction: expected a validation set of at least one image, found {config.val_fraction}"
                         f" x {n} training images = 0 held out: raise noise.val_fraction or noise.train_size, or "
                         f"give the dataset a val split")
    if count >= n:
        raise ValueError(f"val_fraction: expected at least one training image left, found {config.val_fraction} x "
                         f"{n} training images = {count} held out: lower noise.val_fraction or raise "
                         f"noise.train_size")
    return count


def _noisy_labels(config, ingest, manifest, clean, index, num_classes, rng) -> tuple[np.ndarray, np.ndarray]:
    """The labels training uses, and the clean labels they are measured against (-1 where unknown)."""
    sharded = manifest.get("format") == "shards"
    if config.kind in ("human", "none") and sharded:
        # the ingested labels are the annotators' already; the clean ones are known for some images
        return clean.copy(), read_index(ingest, "train").clean_label[index]
    if config.kind == "none" and manifest.get("labels") == "as given":  # a user's labels: their truth is unknown
        return clean.copy(), np.full_like(clean, -1)
    if config.kind == "human":
        path = ingest / "human_labels.npz"
        if not path.is_file():
            raise DataError(f"{path}: expected human labels for noise kind 'human' (ingest dataset cifar10n, "
                            f"cifar100n or clothing1m), found no such file (ingested dataset: {manifest['dataset']})")
        with np.load(path) as table:
            if config.human_labels not in table.files:
                raise ValueError(f"human_labels: expected one of {manifest['dataset']}'s label sets "
                                 f"({', '.join(table.files)}), found {config.human_labels!r}")
            return table[config.human_labels][index].astype(np.int64), clean
    class_map = _class_map(config, manifest)
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
    s = run(configs["noise"], validate=VALIDATE_OUT)  # validate's report on INGEST_OUT, the ingest run reads
    realised = "unknown (no clean labels)" if s["realised_rate_train"] is None else f"{s['realised_rate_train']:.4f}"
    rate = "" if s["requested_rate"] is None else f" rate {s['requested_rate']}"
    print(f"noise: {s['kind']}{rate} -> realised {realised} on {s['train']} training labels; "
          f"{s['val']} validation labels ({'clean' if s['val_clean'] else 'noisy'}, {s['val_source']})")


main = cli("noise", {"noise": NoiseConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
