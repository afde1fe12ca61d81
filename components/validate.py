"""validate: check the ingested data with a Great Expectations suite before anyone trains on it.

Four tables are validated: ``images`` (one row per image: split, label, height, width, channels, dtype, pixel
minimum and maximum, and whether it is blank: one colour, every pixel), ``splits`` (one row: the number of images of
train, test and each other split of the manifest, ``<split>_images``, and the share of them that is blank,
``<split>_blank_share``), ``classes`` (one row per class: its count in each split, ``<split>_count``, and its share of
the training split, ``train_share``) and ``overlap`` (one row: the share of test images, and of validation images
where the dataset has its own val split, with a near-duplicate in the training split, which would flatter the gate
or the model selection, and the share of validation images with one in the test split, which would choose the
model on the images the gate judges; near-duplicates' 8x8 grayscale thumbnails differ by at most 8 grey levels in
every cell and their 16x16 ones, less their means, by at most 3 on average, or one's and the other's mirror image's
(``components.common.thumbnails``): a re-encoded or slightly brightened copy matches, a shifted or cropped one does
not; a failure names up to five pairs, each image by its file where ingest kept the files, e.g.
``test/cat/dup.png ≈ train/cat/3.png``, else by split and row, ``test image 4 ≈ train image 297``, ``val image 3 ≈
test image 5``). Every dataset needs a train and a test split.

Labels must be one integer class index per image (a one-dimensional integer array as long as the images): other
labels (floats, NaN, one-hot rows, one label too few) are a ``DataError`` naming the file, before any table is built.

Writes ``artifacts/validate/report.json`` (success, one entry per failed expectation, statistics, every near-duplicate
pair of the overlap table, ``near_duplicates`` (``test`` and ``val``: in training; ``val_in_test``), and
``label_conflicts``: training images that are copies of an earlier one with another label, their thumbnails equal at
16 grey levels, mirrored or not, a warning, not a failure) and the Great Expectations Data Docs
(HTML) under ``artifacts/validate/gx/``, the two as one set (the project is built aside, in ``.gx-staging/``,
and swapped in with the report: a failed write leaves both as they were, and ``gx/`` holds this run's results
alone). On any failed expectation it prints one line per failure (expectation,
column, expected, observed) and exits non-zero, so nothing downstream runs.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.common.artifacts import check_labels, read_arrays, read_json, read_manifest
from components.common.atomic import atomic_set, prepare_output, stage_folder, write_json
from components.common.config import cli
from components.common.errors import DataError
from components.common.steps import FOLDERS
from components.common.streaming import decoded_chunks, open_split
from components.common.thumbnails import Prints, fingerprints, first_matches, thumbnails
from components.formats.webdataset import read_index, verify_shards
from model.progress import progress

INGEST_OUT = FOLDERS["ingest"]
REQUIRED_SPLITS = ("train", "test")  # every dataset has them: the model trains on one, the gate judges the other
# The overlap table's near-duplicate checks, each a column ``<split>_in_<against>_share`` (the val ones where the
# dataset has its own val split) and a list of pairs in report.json's ``near_duplicates`` under its key: key ->
# (split, the split searched for its images' near-duplicates). Test or val images in training would flatter the gate
# or the selection; val images in test would choose the model, its temperature and the gate's CE reference on the
# images the gate judges.
OVERLAPS = {"test": ("test", "train"), "val": ("val", "train"), "val_in_test": ("val", "test")}

OUT = FOLDERS["validate"]
STAGING = ".gx-staging"  # inside the output folder: this run's project until it is swapped in
DOCS = Path("gx") / "uncommitted" / "data_docs" / "local_site" / "index.html"  # the Data Docs, under the output


@dataclass(frozen=True)
class ValidateConfig:
    """The ``validate`` section of params.yaml, the thresholds of the expectations. ``min_images`` is checked twice:
    each split of the manifest (train, test, and val where there is one) holds at least ``min_images`` images (table
    ``splits``), and each class of the training split at least ``min_images / K`` of them (table ``classes``, so no
    class is nearly empty; the test and val splits need one image of each class). ``class_balance_ratio``: each
    class's training share is within ``[1/(ratio K), ratio/K]``; ``max_duplicate_share`` and ``max_blank_share``: see
    the field comments."""

    min_images: int = 1  # each split holds at least this many images; each training class at least min_images / K
    class_balance_ratio: float = 5.0  # each class's share of the training split is within [1/(ratio K), ratio/K]
    max_duplicate_share: float = 0.01  # share of test, val images with a near-duplicate in train; of val in test
    max_blank_share: float = 0.01  # at most this share of each split's images is blank: one colour, every pixel

    def __post_init__(self) -> None:
        if self.min_images < 0:
            raise ValueError(f"min_images: expected >= 0, found {self.min_images}")
        if not self.class_balance_ratio >= 1.0:  # NaN too: it would drop the balance check
            raise ValueError(f"class_balance_ratio: expected >= 1, found {self.class_balance_ratio}")
        for name in ("max_duplicate_share", "max_blank_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], found {getattr(self, name)}")


class ValidationFailedError(RuntimeError):
    """At least one expectation failed; the message has one line per failure and ``failures`` holds the report's
    entries (one dict per failed expectation: table, expectation, column, expected, observed)."""

    def __init__(self, message: str, failures: Sequence[dict] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


def run(config: ValidateConfig, *, ingest: Path = INGEST_OUT, out: Path = OUT) -> dict:
    """Validate the ingested data (``ingest``'s manifest and arrays, or its shards after their sha256 check); writes
    ``report.json`` and the Data Docs under ``gx/`` to ``out``, and raises ``ValidationFailedError`` on failure."""
    ingest, out = Path(ingest), Path(out)
    manifest = read_manifest(ingest)
    _check_manifest(ingest, manifest)
    tables = build_tables(ingest, manifest)
    prepare_output(out, step="validate")
    staging = out / STAGING  # this run's Great Expectations project, swapped in with report.json as one set
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's
    try:
        failures = _run_suites(config, manifest, tables, staging)
        report = _report(failures, tables, out / DOCS)
        with atomic_set():
            stage_folder(staging / "gx", out / "gx")
            write_json(out / "report.json", report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    overlap = tables["overlap"]
    if overlap.attrs["conflicts"]:
        print(f"WARNING: validate: {conflict_warning(overlap.attrs['conflicts'])}", file=sys.stderr)
    if failures:
        lines = [f"{f['expectation']} column={f['column']} expected={f['expected']} observed={f['observed']}"
                 for f in failures]
        raise ValidationFailedError(f"{len(failures)} expectation(s) failed on {ingest}:\n" + "\n".join(lines),
                                    failures)
    return report


def _report(failures: list[dict], tables: dict, docs: Path) -> dict:
    """``report.json``: success, the failures, the Data Docs' page, statistics, every near-duplicate pair and every
    training label conflict."""
    overlap = tables["overlap"]
    return {"success": not failures, "failures": failures, "data_docs": str(docs),
            "statistics": {"images": len(tables["images"]),
                           "duplicate_share": float(overlap["test_in_train_share"].iloc[0]),
                           "class_shares": tables["classes"]["train_share"].round(6).tolist(),
                           "train_label_conflicts": len(overlap.attrs["conflicts"])},
            "near_duplicates": {split: named["all"] for split, named in overlap.attrs["pairs"].items()},
            "label_conflicts": overlap.attrs["conflicts"]}


def _check_manifest(ingest: Path, manifest: dict) -> None:
    """A ``DataError`` naming ``manifest.json`` unless it gives the image shape (three positive sizes: height,
    width, channels), at least one class name and each split's count, which the expectations are made from."""
    path = ingest / "manifest.json"
    shape, names, counts = (manifest.get(key) for key in ("image_shape", "class_names", "counts"))
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise DataError(f"{path}: expected image_shape [height, width, channels] of positive sizes, found {shape!r}")
    if not (isinstance(names, list) and names):
        raise DataError(f"{path}: expected class_names, a list of at least one class, found {names!r}")
    if not (isinstance(counts, dict) and all(isinstance(n, int) and n >= 0 for n in counts.values())):
        raise DataError(f"{path}: expected counts, each split's number of images, found {counts!r}")


def build_tables(ingest: Path, manifest: dict) -> dict[str, Any]:
    """The four tables the suites check, as pandas DataFrames: ``images`` (one row per image of every split, from
    ``iter_images``, with its ``position`` in its split), ``splits`` (one row: ``<split>_images``, the rows of
    ``images`` of train, test and each other split of the manifest's counts, and ``<split>_blank_share``, the share of
    them with one colour), ``classes`` (``class_table``) and ``overlap`` (the share of test, and of val where there is
    one, with a near-duplicate, ``first_matches``, among the training images, and of val among the test images:
    ``OVERLAPS``). Reads ``ingest``."""
    import pandas as pd  # noqa: PLC0415 - pandas is only needed by this step

    rows, found = [], {"train": [], "test": [], "val": []}  # each split's fingerprints, and its mirror images'
    first, train_labels, conflicts = {}, [], []  # first: each copy key's first training row; conflicts: see below
    for split, images, labels in iter_images(ingest):
        if images.size == 0 and images.shape[0]:
            raise DataError(f"{ingest}: expected images of at least one pixel, found {split} images of shape "
                            f"{list(images.shape[1:])}")
        flat = images.reshape(images.shape[0], -1, images.shape[3])
        lo, hi = flat.min(axis=(1, 2)), flat.max(axis=(1, 2))
        rows.append(pd.DataFrame({"split": split, "label": labels.astype(np.int64), "height": images.shape[1],
                                  "width": images.shape[2], "channels": images.shape[3], "dtype": str(images.dtype),
                                  "pixel_min": lo.astype(np.float64), "pixel_max": hi.astype(np.float64),
                                  "blank": (flat.max(axis=1) == flat.min(axis=1)).all(axis=1)}))
        flipped = None if split == "train" else fingerprints(images[:, :, ::-1])  # what a training flip makes
        found[split].append((fingerprints(images), flipped))
        if split == "train":
            train_labels.extend(labels.tolist())
            conflicts += _label_conflicts(first, thumbnails(images), thumbnails(images[:, :, ::-1]), train_labels,
                                          len(train_labels) - len(labels))
    if not rows:
        raise DataError(f"{ingest}: expected images in the train and test splits, found none in any split")
    table = pd.concat(rows, ignore_index=True)
    table["position"] = table.groupby("split").cumcount()  # the image's index in its split (train.npz, ...)
    classes = class_table(table, manifest)
    prints = {split: Prints.cat([own for own, _ in found[split]]) for split in ("train", "test")}
    pairs = {key: _overlap(found[split], prints[against]) for key, (split, against) in OVERLAPS.items()}
    counts = table["split"].value_counts()
    overlap = pd.DataFrame({f"{split}_in_{against}_share": [len(pairs[key]) / max(int(counts.get(split, 0)), 1)]
                            for key, (split, against) in OVERLAPS.items()
                            if split == "test" or "val" in manifest["counts"]})
    overlap.attrs["pairs"] = {key: _name_pairs(ingest, manifest, split, pairs[key], against=against)
                              for key, (split, against) in OVERLAPS.items()}
    overlap.attrs["conflicts"] = [
        f"{named} ({_class_name(manifest, train_labels[row])} and {_class_name(manifest, train_labels[first])})"
        for named, (row, first, _) in zip(_pair_names(ingest, manifest, "train", conflicts), conflicts, strict=True)]
    return {"images": table, "splits": split_table(table, manifest), "classes": classes, "overlap": overlap}


def split_table(images, manifest: dict):
    """One row: ``<split>_images`` and ``<split>_blank_share`` for train, test and every other split of the
    manifest's counts, from the ``images`` table (a split it lacks has 0 images and share 0)."""
    import pandas as pd  # noqa: PLC0415

    columns = {}
    for split in dict.fromkeys(("train", "test", *manifest["counts"])):
        blank = images.loc[images["split"] == split, "blank"]
        columns[f"{split}_images"] = [len(blank)]
        columns[f"{split}_blank_share"] = [float(blank.mean()) if len(blank) else 0.0]
    frame = pd.DataFrame(columns)
    frame.attrs["blank"] = {split: images.loc[images["blank"] & (images["split"] == split), "position"].tolist()
                            for split in images["split"].unique()}
    return frame


def _overlap(queries: list, among: Prints) -> list[tuple[int, int, bool]]:
    """(row, matched row, mirrored) for each image of a split (``queries``: its chunks' fingerprints and their
    mirror images') with a near-duplicate among another split's images (``among``'s fingerprints: training, or
    test)."""
    if not queries:
        return []
    matched, mirrored = first_matches(Prints.cat([own for own, _ in queries]),
                                      Prints.cat([flipped for _, flipped in queries]), among)
    return [(int(row), int(matched[row]), bool(mirrored[row])) for row in np.flatnonzero(matched >= 0)]


def _class_name(manifest: dict, label: int) -> str:
    """The name of class ``label``; ``label N`` for one outside the manifest's classes (the images suite names
    it)."""
    names = manifest["class_names"]
    return str(names[label]) if 0 <= label < len(names) else f"label {label}"


def _label_conflicts(first: dict[bytes, int], keys: list[bytes], mirrored: list[bytes], labels: list[int],
                     start: int) -> list[tuple[int, int, bool]]:
    """The training rows ``start``, ``start + 1``, ... (``thumbnails`` ``keys``, their mirror images' ``mirrored``)
    that are copies of an earlier training image with another label: (row, earlier row, mirrored), the same
    picture's first row where there is one, else its mirror image's. Records each new key's first row in ``first``;
    ``labels`` are every training row's so far. Copies, not near-duplicates: one pass over the keys, however many
    training images there are (near-duplicates would compare each with every other)."""
    found = []
    for row, (key, flipped) in enumerate(zip(keys, mirrored, strict=True), start):
        same, other = first.setdefault(key, row), first.get(flipped, row)
        for earlier, is_mirror in ((same, False), (other, True)):
            if labels[earlier] != labels[row]:
                found.append((row, earlier, is_mirror))
                break
    return found


DUPLICATE_PAIRS = 5  # near-duplicate pairs named in an overlap failure


def _name_pairs(ingest: Path, manifest: dict, split: str, pairs: list[tuple[int, int, bool]], *,
                against: str = "train") -> dict:
    """``pairs`` (``split`` row, ``against`` row, mirrored) named: ``all``, every pair (``_pair_names``), and
    ``text``, the first ``DUPLICATE_PAIRS`` of them as one line, e.g. ``test/cat/dup.png ≈ train/cat/3.png, test
    image 7 ≈ train image 12 (mirrored)`` ("" without pairs)."""
    named = _pair_names(ingest, manifest, split, pairs, against=against)
    text = ", ".join(named[:DUPLICATE_PAIRS])
    more = f", ... ({len(pairs)} {split} images in all)" if len(pairs) > DUPLICATE_PAIRS else ""
    return {"all": named, "text": text + more}


def _pair_names(ingest: Path, manifest: dict, split: str, pairs: list[tuple[int, int, bool]], *,
                against: str = "train") -> list[str]:
    """Each of ``pairs`` (``split`` row, ``against`` row, mirrored) as ``a ≈ b``: each image by its file (the
    ``keys`` an image folder's npz holds, a shard's key) where the ingested data has one, else by split and row."""
    if not pairs:
        return []
    names = {s: _keys(ingest, manifest, s) for s in (split, against)}

    def name(s: str, row: int) -> str:
        return str(names[s][row]) if names[s] is not None and row < len(names[s]) else f"{s} image {row}"

    return [f"{name(split, row)} ≈ {name(against, match)}{' (mirrored)' if mirrored else ''}"
            for row, match, mirrored in pairs]


def _keys(ingest: Path, manifest: dict, split: str) -> list[str] | None:
    """Each image's file of ``split`` where ingest kept them (an npz's ``keys``, a shard index's keys), else None."""
    if manifest.get("format") == "shards":
        return [k.decode() if isinstance(k, bytes) else str(k) for k in read_index(ingest, split).key]
    with np.load(ingest / f"{split}.npz") as arrays:
        return arrays["keys"].tolist() if "keys" in arrays.files else None


def class_table(images, manifest: dict):
    """One row per class of the manifest: ``class`` (its name), ``<split>_count`` for train, test and val (where
    the manifest has them) and ``train_share``, from the ``images`` table (labels outside the classes are counted
    in the nearest one; the ``images`` expectations report them)."""
    import pandas as pd  # noqa: PLC0415

    k = len(manifest["class_names"])
    columns = {"class": manifest["class_names"]}
    for split in ("train", *[s for s in ("test", "val") if s in manifest["counts"]]):
        labels = images.loc[images["split"] == split, "label"].to_numpy(dtype=np.int64)
        columns[f"{split}_count"] = np.bincount(labels.clip(0, k - 1), minlength=k)
    columns["train_share"] = columns["train_count"] / max(columns["train_count"].sum(), 1)
    return pd.DataFrame(columns)


def iter_images(ingest: Path, chunk: int = 10000) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(split, images, labels)`` in chunks, from ``train.npz``/``test.npz``, or decoded from the shards of a
    large set (after its resize and crop; every shard's sha256 checked first)."""
    if read_manifest(ingest)["format"] == "shards":
        verify_shards(ingest)
        for split in read_json(ingest / "shards" / "index.json", "ingest", "splits")["splits"]:
            source = open_split(ingest, split)
            for images, labels in progress(decoded_chunks(source, chunk=min(chunk, 1000)), unit="chunks",
                                           desc=f"validate {split}", total=-(-len(source) // min(chunk, 1000))):
                yield split, images, labels
        return
    for split in read_manifest(ingest)["counts"]:  # train, test, and val if any
        path = ingest / f"{split}.npz"
        images, labels = read_arrays(path, "ingest", "images", "labels")
        if images.ndim != 4:
            raise DataError(f"{path}: expected images of shape [N, H, W, C], found {list(images.shape)}")
        check_labels(path, labels, images.shape[0], what="image")
        for start in range(0, images.shape[0], chunk):
            yield split, images[start:start + chunk], labels[start:start + chunk]


def expectations(config: ValidateConfig, manifest: dict) -> dict[str, list]:
    """The Great Expectations expectations of each table (``images``, ``splits``, ``classes``, ``overlap``), from
    ``config``'s thresholds and the manifest's counts, image shape and class names. ``min_images`` bounds each split's
    image count below (``splits``: one ``<split>_images`` column per split of the manifest, so a failure names the
    split) and each training class's count at ``min_images / K`` (``classes``); every class has at least one test
    image, and one val image where there is a val split (``classes``: ``test_count``, ``val_count``)."""
    import great_expectations as gx  # noqa: PLC0415 - slow to import; only this step needs it

    e = gx.expectations
    k = len(manifest["class_names"])
    height, width, channels = manifest["image_shape"]
    total = sum(manifest["counts"].values())
    images = [e.ExpectTableRowCountToEqual(value=total)]
    images += [e.ExpectColumnValuesToNotBeNull(column=c) for c in ("split", "label", "pixel_min", "pixel_max")]
    images += [e.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=k - 1),
               e.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
               e.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
               e.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
               e.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]),
               e.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
               e.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255)]
    images += [e.ExpectColumnValuesToBeInSet(column="split", value_set=sorted(manifest["counts"]))]
    images += [e.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(REQUIRED_SPLITS))]
    every = dict.fromkeys((*REQUIRED_SPLITS, *manifest["counts"]))  # a manifest without a test split fails
    per_split = [e.ExpectColumnMinToBeBetween(column=f"{split}_images",  # one row: its minimum is the split's count
                                              min_value=max(config.min_images, int(split in REQUIRED_SPLITS)))
                 for split in every]
    per_split += [e.ExpectColumnValuesToBeBetween(column=f"{split}_blank_share", max_value=config.max_blank_share)
                  for split in every]
    classes = [e.ExpectColumnValuesToBeBetween(column="train_count", min_value=config.min_images / k),
               e.ExpectColumnValuesToBeBetween(column="train_share", min_value=1.0 / (config.class_balance_ratio * k),
                                               max_value=min(1.0, config.class_balance_ratio / k))]
    classes += [e.ExpectColumnValuesToBeBetween(column=f"{split}_count", min_value=1)  # else its metrics read 0
                for split in ("test", "val") if split in manifest["counts"]]
    overlap = [e.ExpectColumnValuesToBeBetween(column=f"{split}_in_{against}_share", min_value=0.0,
                                               max_value=config.max_duplicate_share)
               for split, against in OVERLAPS.values() if split == "test" or "val" in manifest["counts"]]
    return {"images": images, "splits": per_split, "classes": classes, "overlap": overlap}


def _run_suites(config: ValidateConfig, manifest: dict, tables: dict, out: Path) -> list[dict]:
    """Run each table's suite in a Great Expectations project at ``out`` (its ``gx/``, with the Data Docs); returns
    the failures."""
    import great_expectations as gx  # noqa: PLC0415

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="great_expectations")
    out.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(out))
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    source = _fresh_pandas_source(context, "ingest")
    failures = []
    for name, suite_items in expectations(config, manifest).items():
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all")
        if name in [s.name for s in context.suites.all()]:
            context.suites.delete(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=suite_items))
        if name in [v.name for v in context.validation_definitions.all()]:
            context.validation_definitions.delete(name)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": tables[name]})
        failures += [_failure(name, r, tables[name]) for r in result.results if not r.success]
    context.build_data_docs()
    return failures


def _fresh_pandas_source(context, name: str):
    if name in [s.name for s in context.data_sources.all().values()]:
        context.data_sources.delete(name)
    return context.data_sources.add_pandas(name)


def conflict_warning(conflicts: list[str]) -> str:
    """The warning for training images that are copies of one with another label: one of the two labels
    is wrong (or the class folders overlap), and training sees both."""
    many = "1 training image is" if len(conflicts) == 1 else f"{len(conflicts)} training images are"
    return (f"{many} a copy of one with another label, e.g. {'; '.join(conflicts[:DUPLICATE_PAIRS])}: "
            f"one of the two labels is wrong; every pair is in report.json's label_conflicts")


EXAMPLES = 5  # unexpected values shown in a failure, each with where it is


def _failure(table: str, result, frame) -> dict:
    """The report's entry of a failed expectation on the table ``table`` (the DataFrame ``frame``): a column-values
    failure shows a few unexpected values and where they are (``_where``)."""
    config, found = result.expectation_config, result.result or {}
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    if "observed_value" in found:  # a numpy scalar (a column's minimum) as a number report.json can hold
        observed = found["observed_value"]
        observed = observed.item() if isinstance(observed, np.generic) else observed
    else:
        where = _where(frame, found.get("partial_unexpected_index_list", [])[:EXAMPLES])
        observed = (f"{found.get('unexpected_count')} of {found.get('element_count')} values unexpected, "
                    f"e.g. {found.get('partial_unexpected_list', [])[:EXAMPLES]}" + (f" at {where}" if where else ""))
        column = config.kwargs.get("column", "")
        key = next((key for key, (split, against) in OVERLAPS.items() if column == f"{split}_in_{against}_share"),
                   None)
        pairs = frame.attrs.get("pairs", {}).get(key)
        if pairs and pairs["text"]:
            observed += (f"; near-duplicates: {pairs['text']} (every pair: report.json's near_duplicates); remove "
                         f"one image of each pair, or put both in one split")
        blank = frame.attrs.get("blank", {}).get(column.removesuffix("_blank_share"), [])
        if column.endswith("_blank_share") and blank:
            shown = ", ".join(map(str, blank[:EXAMPLES])) + (f", ... ({len(blank)} in all)" if len(blank) > EXAMPLES
                                                             else "")
            observed += f"; blank (one colour): {column.removesuffix('_blank_share')} images {shown}"
    return {"table": table, "expectation": config.type, "column": config.kwargs.get("column", "(table)"),
            "expected": kwargs, "observed": observed}


def _where(frame, rows: list) -> str:
    """Where the unexpected ``rows`` of ``frame`` are: the class names of ``classes`` rows ("class Shirt"), the
    split and the position in it of ``images`` rows ("train images 0, 1; test image 4"); "" for one-row tables."""
    if not rows or not {"class", "split"} & set(frame.columns):
        return ""
    if "class" in frame.columns:
        names = [str(name) for name in frame["class"].loc[rows]]
        return f"class{'es' if len(names) > 1 else ''} {', '.join(names)}"
    by_split: dict[str, list[str]] = {}
    for row in rows:
        by_split.setdefault(frame["split"].loc[row], []).append(str(frame["position"].loc[row]))
    return "; ".join(f"{split} image{'s' if len(found) > 1 else ''} {', '.join(found)}"
                     for split, found in by_split.items())


def _main(configs: dict) -> None:
    report = run(configs["validate"])
    print(f"validate: all expectations met on {report['statistics']['images']} images; "
          f"Data Docs: {report['data_docs']}")


main = cli("validate", {"validate": ValidateConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
