"""The bad-input catalogue: one row per fault, run by ``test_bad_inputs.py`` and listed in docs/reliability.md
(``python -m tests.reliability.catalogue`` renders the table; a test checks the doc holds exactly these rows).

Every case starts from a copy of the good workspace (``workspace.build``), breaks one input, runs one step's CLI
and expects: the exit code, a message holding every fragment of ``says`` (the file or field, what was expected,
what was found), no traceback, and every file of the workspace unchanged (except under ``may_write``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.formats.idx import IDX_IMAGES, IDX_LABELS
from tests.components.conftest import write_idx
from tests.components.formats_fixtures import cifar_batch
from tests.reliability import faults as f

FILES = "data files and step outputs"  # a kind of case
FM = "data/fashion-mnist"
LATEST = "releases/latest"
ENFORCE = ("--enforce",)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # the group in the catalogue
    step: str  # components.<step>, or "serving" (python -m serving)
    fault: str  # the input and how it is broken, for the catalogue
    breaks: Callable[[], None]  # breaks the input, in the workspace copy (the current folder)
    says: tuple[str, ...]  # fragments of the message: the file or field, expected, found
    argv: tuple[str, ...] = ()
    code: int = 1
    may_write: tuple[str, ...] = ()  # folders the step may change on this failure (documented behaviour)
    defect: str = ""  # an open defect: the case asserts the right behaviour and is expected to fail until fixed

    @property
    def module(self) -> str:
        """The module whose ``main`` the case runs: a step, one of the two tools (``make data``, ``make results``)
        or the predictor."""
        if self.step == "serving":
            return "serving"
        return f"components.common.{self.step}" if self.step in ("data", "report") else f"components.{self.step}"

    @property
    def command(self) -> str:
        return " ".join(["python -m", self.module, *self.argv])


def nothing() -> None:
    """The fault is in the command line alone."""


def _interleaved(n: int) -> np.ndarray:
    """``n`` images with spatial structure (random colours in 4x4 blocks), flattened height, width, channel."""
    blocks = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return blocks.repeat(4, 1).repeat(4, 2).reshape(n, 3072)


def _fm_images(n: int) -> None:
    write_idx(Path(FM, "train-images-idx3-ubyte.gz"), np.zeros((n, 28, 28)), IDX_IMAGES)


def _fm_labels(labels: np.ndarray, magic: int = IDX_LABELS) -> None:
    write_idx(Path(FM, "train-labels-idx1-ubyte.gz"), labels, magic)


def _fm_short_data() -> None:
    """A header for 400 images over the bytes of 399: what a cut download that still gunzips looks like."""
    import gzip  # noqa: PLC0415

    from tests.components.conftest import idx_bytes  # noqa: PLC0415

    raw = idx_bytes(np.zeros((400, 28, 28)), IDX_IMAGES)[:-784]
    Path(FM, "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))


def _clothing1m_ingested() -> None:
    """The Clothing1M fixture ingested (sharded) over the workspace's ingest outputs, one shard then cut short."""
    from components import ingest  # noqa: PLC0415

    ingest.run(ingest.IngestConfig(dataset="clothing1m", path="data/clothing1m", image_size=8, shard_size=2))
    f.truncate("artifacts/ingest/shards/train-00001.tar")


CIFAR = ("--set", "ingest.dataset=cifar10", "--set", "ingest.path=data/cifar10")
C1M = ("--set", "ingest.dataset=clothing1m", "--set", "ingest.path=data/clothing1m", "--set", "ingest.image_size=8")

DATA = [
    Case("fmnist-truncated-gzip", FILES, "ingest", "Fashion-MNIST training images cut to half their bytes",
         lambda: f.truncate(f"{FM}/train-images-idx3-ubyte.gz"),
         ("train-images-idx3-ubyte.gz: expected a gzip file, found a truncated or corrupt one",)),
    Case("fmnist-not-gzip", FILES, "ingest", "Fashion-MNIST test images replaced by non-gzip bytes",
         lambda: f.garbage(f"{FM}/t10k-images-idx3-ubyte.gz"),
         ("t10k-images-idx3-ubyte.gz: expected a gzip file",)),
    Case("fmnist-wrong-magic", FILES, "ingest", "training labels written with the images' IDX magic number",
         lambda: _fm_labels(np.zeros((400, 1)), IDX_IMAGES),
         ("train-labels-idx1-ubyte.gz: expected IDX magic number 0x00000801, found 0x00000803",)),
    Case("fmnist-short-data", FILES, "ingest", "IDX header promises 400 images, the data holds 399",
         _fm_short_data, ("train-images-idx3-ubyte.gz: expected 313600 data bytes for shape [400, 28, 28], "
                          "found 312816",)),
    Case("fmnist-image-count", FILES, "ingest", "399 training images for 400 labels", lambda: _fm_images(399),
         ("train-images-idx3-ubyte.gz: expected as many images as train-labels-idx1-ubyte.gz has labels (400), "
          "found 399",)),
    Case("fmnist-label-range", FILES, "ingest", "a training label 12 in a 10-class dataset",
         lambda: _fm_labels(np.array([12] + [0] * 399)),
         ("train-labels-idx1-ubyte.gz: expected train labels in [0, 9], found values from 0 to 12",)),
    Case("fmnist-missing-file", FILES, "ingest", "the test labels file deleted",
         lambda: f.delete(f"{FM}/t10k-labels-idx1-ubyte.gz"),
         ("t10k-labels-idx1-ubyte.gz: expected an IDX file, found no such file",)),
    Case("dataset-folder-missing", FILES, "ingest", "`ingest.path` names no folder", nothing,
         ("data/nowhere: expected the fashion-mnist files, found no such file or folder",),
         argv=("--set", "ingest.path=data/nowhere")),
    Case("cifar-missing-key", FILES, "ingest", "a CIFAR-10 batch pickled without its `data` key",
         lambda: f.cifar_batch("data_batch_3", {b"labels": [0, 1]}),
         ("data_batch_3: expected the key 'data', found keys ['labels']",), argv=CIFAR),
    Case("cifar-wrong-shape", FILES, "ingest", "a CIFAR-10 batch with 100 bytes per image",
         lambda: f.cifar_batch("data_batch_2", {**cifar_batch(4, np.random.default_rng(0)),
                                                b"data": np.zeros((4, 100), np.uint8)}),
         ("data_batch_2): expected data of uint8 [N, 3072], found uint8 [4, 100]",), argv=CIFAR),
    Case("cifar-pixel-by-pixel", FILES, "ingest", "a CIFAR-10 batch of photo-like images written pixel by pixel "
         "(`[N, 32, 32, 3]` flattened as it was)",
         lambda: f.cifar_batch("data_batch_4", {b"labels": [0, 1, 2, 3], b"data": _interleaved(4)}),
         ("data_batch_4): expected each row of data to hold the red, green and blue 32x32 planes one after the other "
          "(CIFAR-10's layout), found rows that look written pixel by pixel",), argv=CIFAR),
    Case("cifar-pickle-runs-code", FILES, "ingest", "a CIFAR-10 batch whose pickle calls `os.mkdir`",
         lambda: f.cifar_batch("data_batch_1", f.RunsCode()),
         ("data_batch_1: expected a pickled CIFAR-10 batch, found unreadable data", "mkdir is not allowed"),
         argv=CIFAR),
    Case("cifar-tarball-truncated", FILES, "ingest", "`cifar-10-python.tar.gz` cut to half its bytes",
         lambda: f.truncate("data/cifar10-tarball/cifar-10-python.tar.gz"),
         ("cifar-10-python.tar.gz: expected cifar-10-python.tar.gz, found a corrupt archive",),
         argv=("--set", "ingest.dataset=cifar10", "--set", "ingest.path=data/cifar10-tarball/cifar-10-python.tar.gz")),
    Case("cifar10n-garbage", FILES, "ingest", "`CIFAR-10_human.pt` replaced by random bytes",
         lambda: f.garbage("data/cifar10/CIFAR-10_human.pt"),
         ("CIFAR-10_human.pt: expected a torch-saved dict of label arrays, found unreadable data (File is not a "
          "zip file)",),
         argv=("--set", "ingest.dataset=cifar10n", "--set", "ingest.path=data/cifar10", "--set",
               "ingest.human_labels=CIFAR-10_human.pt")),
    Case("clothing1m-bad-label-line", FILES, "ingest", "a Clothing1M label line with three fields",
         lambda: Path("data/clothing1m/noisy_label_kv.txt").write_text("images/0/00/train0.jpg 1\na b c\n"),
         ("noisy_label_kv.txt line 2: expected '<image key> <label>', found 'a b c'",), argv=C1M),
    Case("clothing1m-corrupt-image", FILES, "ingest", "a Clothing1M JPEG replaced by random bytes",
         lambda: f.garbage("data/clothing1m/images/1/01/val1.jpg"),
         ("images/1/01/val1.jpg (key images/1/01/val1.jpg): expected an image file, found unreadable data",),
         argv=C1M),
    Case("clothing1m-missing-image", FILES, "ingest", "a listed Clothing1M test image deleted",
         lambda: f.delete("data/clothing1m/images/0/00/test0.jpg"),
         ("clean_test_key_list.txt line 1: expected the image images/0/00/test0.jpg, found no such file",),
         argv=C1M),
    Case("imagefolder-csv-header", FILES, "ingest", "an image folder's `labels.csv` without a label column",
         lambda: Path("data/imagefolder/labels.csv").write_text("file,class\nred/0.png,red\n"),
         ("labels.csv: expected a header with filename and label, found ['file', 'class']",),
         argv=("--set", "ingest.dataset=imagefolder", "--set", "ingest.path=data/imagefolder")),
    Case("imagefolder-one-class", FILES, "ingest", "an image folder with one class folder left",
         lambda: shutil.rmtree("data/imagefolder/blue"),
         ("data/imagefolder: expected at least 2 classes to tell apart, found 1: 'red'",),
         argv=("--set", "ingest.dataset=imagefolder", "--set", "ingest.path=data/imagefolder")),
    Case("shard-truncated", FILES, "validate", "a Clothing1M shard written by ingest, then cut short",
         _clothing1m_ingested, ("artifacts/ingest/shards/train-00001.tar: expected", "bytes with sha256",
                                "(index.json), found", "; it holds images/", "re-run the ingest step")),
    Case("ingested-images-3d", FILES, "validate", "`train.npz` images without a channel axis",
         lambda: f.edit_npz("artifacts/ingest/train.npz", lambda a: a.update(images=a["images"][..., 0])),
         ("artifacts/ingest/train.npz: expected images of shape [N, H, W, C], found [400, 28, 28]",)),
    Case("ingested-npz-truncated", FILES, "noise", "`train.npz` cut to half its bytes",
         lambda: f.truncate("artifacts/ingest/train.npz"),
         ("artifacts/ingest/train.npz: expected an .npz file written by the ingest step, found unreadable data",)),
    Case("ingested-npz-is-npy", FILES, "noise", "`train.npz` replaced by a single `.npy` array",
         lambda: f.as_npy("artifacts/ingest/train.npz"),
         ("artifacts/ingest/train.npz: expected an .npz file written by the ingest step, found a single .npy array",)),
    Case("ingested-npz-missing-array", FILES, "noise", "`train.npz` without its `labels` array",
         lambda: f.edit_npz("artifacts/ingest/train.npz", lambda a: a.pop("labels")),
         ("artifacts/ingest/train.npz: expected the array 'labels' written by the ingest step, found ['images']",)),
    Case("ingested-manifest-garbage", FILES, "noise", "`manifest.json` cut to its first byte",
         lambda: f.truncate("artifacts/ingest/manifest.json", keep=0.0001),
         ("artifacts/ingest/manifest.json: expected JSON written by the ingest step, found invalid JSON",)),
    Case("labels-index-out-of-range", FILES, "baseline", "`labels.npz` pointing at image 1000000 of 400",
         lambda: f.edit_npz("artifacts/noise/labels.npz", lambda a: a["index"].__setitem__(0, 1_000_000)),
         ("artifacts/noise/labels.npz: expected indices of the 400 ingested images, 0 to 399, found 1000000",)),
    Case("labels-from-another-ingest", FILES, "baseline", "the training set ingested again with other labels after "
         "the noise step (`train.npz`'s labels reversed)",
         lambda: f.edit_npz("artifacts/ingest/train.npz", lambda a: a.__setitem__("labels", a["labels"][::-1].copy())),
         ("artifacts/noise/labels.npz: expected labels drawn from the training set ingested now in artifacts/ingest, "
          "found labels the noise step drew from another ingest (re-run the noise step)",)),
    Case("labels-out-of-range", FILES, "mlnt", "`labels.npz` giving a row class 12 of 10",
         lambda: f.edit_npz("artifacts/noise/labels.npz", lambda a: a["label"].__setitem__(0, 12)),
         ("artifacts/noise/labels.npz: expected labels of the 10 classes of artifacts/ingest/manifest.json, 0 to 9, "
          "found 12 (re-run the noise step)",)),
    Case("ingested-manifest-wrong-shape", FILES, "noise", "`manifest.json` valid JSON of the wrong shape (wrapped in "
         "a list)", lambda: f.wrap_json("artifacts/ingest/manifest.json"),
         ("artifacts/ingest/manifest.json: expected the key 'dataset' written by the ingest step, found list",)),
    Case("data-source-incomplete", FILES, "data", "`make data` from a `--source` folder that lacks a file "
         "(one is missing in `data/`)", lambda: f.delete(f"{FM}/t10k-labels-idx1-ubyte.gz"),
         ("data/nowhere/t10k-labels-idx1-ubyte.gz: expected a Fashion-MNIST file, found no such file",),
         argv=("--source", "data/nowhere")),
    Case("data-no-record", FILES, "data", "`make data` outside the repository: no `data.dvc`", nothing,
         ("data.dvc: expected the DVC record of data/, found no such file",)),
    Case("report-missing-artifact", FILES, "report", "`make results` without the gate's decision",
         lambda: f.delete("artifacts/gate/decision.json"),
         ("artifacts/gate/decision.json: expected the output of `dvc repro`, found no such file",)),
    Case("report-garbage-json", FILES, "report", "`make results` over a `metrics.json` cut to one byte",
         lambda: f.truncate("artifacts/evaluate/metrics.json", keep=0.0001),
         ("artifacts/evaluate/metrics.json: expected JSON written by `dvc repro`, found invalid JSON",)),
    Case("labels-missing", FILES, "mlnt", "the noise step's `labels.npz` deleted",
         lambda: f.delete("artifacts/noise/labels.npz"),
         ("artifacts/noise/labels.npz: expected the output of the noise step, found no such file "
          "(run python -m components.noise first)",)),
]

PARAMS = [
    Case("params-missing-file", "params", "noise", "`--params` names no file", nothing,
         ("nowhere.yaml: expected a params file, found none",), argv=("--params", "nowhere.yaml"), code=2),
    Case("params-bad-yaml", "params", "noise", "`params.yaml` with an unclosed bracket",
         lambda: Path("params.yaml").write_text("noise: [rate: 0.5\n"),
         ("params.yaml: expected valid YAML, found a syntax error",), code=2),
    Case("params-section-not-mapping", "params", "noise", "`noise: 3` in `params.yaml`",
         lambda: Path("params.yaml").write_text("noise: 3\n"),
         ("params.yaml: expected a mapping of sections to mappings, found section 'noise': int",), code=2),
    Case("params-unknown-key", "params", "noise", "a misspelt key `noise.ratee` in `params.yaml`",
         lambda: f.edit_params(lambda p: p["noise"].update(ratee=0.4)),
         ("params.yaml: noise: unknown key(s) ratee. Valid: class_map, human_labels, kind,",), code=2),
    Case("params-unknown-section", "params", "noise", "`--set nois.seed=1`", nothing,
         ("--set 'nois.seed=1': unknown section 'nois'. Valid: noise",), argv=("--set", "nois.seed=1"), code=2),
    Case("params-override-syntax", "params", "noise", "`--set noise.rate` without a value", nothing,
         ("--set 'noise.rate': expected section.key=value",), argv=("--set", "noise.rate"), code=2),
    Case("params-wrong-type", "params", "noise", "`--set noise.rate=high`", nothing,
         ("noise.rate: expected float, found 'high' (str)",), argv=("--set", "noise.rate=high"), code=2),
    Case("params-out-of-range", "params", "noise", "`--set noise.rate=1.5`", nothing,
         ("noise: rate: expected a number in [0, 1], found 1.5",), argv=("--set", "noise.rate=1.5"), code=2),
    Case("params-unknown-choice", "params", "mlnt", "`--set mlnt.mode=fast`", nothing,
         ("mlnt.mode: expected one of 'auto', 'exact', 'first_order', 'head', found 'fast'",),
         argv=("--set", "mlnt.mode=fast"), code=2),
    Case("params-inconsistent", "params", "mlnt", "more neighbours (64) than the batch holds (32)", nothing,
         ("neighbours: expected fewer than batch_size (32), found 64",), argv=("--set", "mlnt.neighbours=64"),
         code=2),
    Case("serving-bad-option", "params", "serving", "`--max-batch 0` for the predictor", nothing,
         ("serving: --max-batch: expected at least 1, found 0",), argv=("--model", LATEST, "--max-batch", "0"),
         code=2),
    Case("params-batch-over-data", "params", "baseline", "a batch of 100000 from 360 training images", nothing,
         ("batch_size: expected at most the number of training samples (360), found 100000",),
         argv=("--set", "baseline.batch_size=100000"), may_write=("artifacts/baseline/checkpoints",)),
]


def _every_checkpoint(step: str, damage: Callable[[str], None]) -> None:
    for path in sorted(f.run_folder(step).glob("round0*.pt")):
        damage(str(path))


def _only_checkpoint_runs_code() -> None:
    folder = f.run_folder("baseline")
    f.delete(str(folder / "round0.prev.pt"))
    f.checkpoint_with_code(str(folder / "round0.pt"))


CHECKPOINTS = [
    Case("checkpoint-all-corrupt", "checkpoints", "baseline", "the run's checkpoint and its `.prev` both truncated",
         lambda: _every_checkpoint("baseline", f.truncate),
         ("no usable checkpoint", "round0.pt: expected a checkpoint with a matching sha256 trailer, found a corrupt "
          "or truncated file", "round0.prev.pt: expected a checkpoint", "delete artifacts/baseline/checkpoints/")),
    Case("checkpoint-start-garbage", "checkpoints", "mlnt", "the run's `start.pt` replaced by random bytes",
         lambda: f.garbage(str(f.run_folder("mlnt") / "start.pt")),
         ("start.pt: expected a checkpoint with a matching sha256 trailer, found a corrupt or truncated file",)),
    Case("checkpoint-other-config", "checkpoints", "mlnt", "a valid checkpoint of another config (`lr` 0.5) in "
         "the run's folder", lambda: f.resave_checkpoint("mlnt", lambda s: s["config"].update(lr=0.5)),
         ("expected the same training config to resume, found differences: lr: checkpoint 0.5, now 0.02",)),
    Case("checkpoint-runs-code", "checkpoints", "baseline", "the only checkpoint: a valid trailer over a pickle "
         "that calls `os.mkdir`", _only_checkpoint_runs_code,
         ("round0.pt: expected a torch checkpoint, found unreadable data (refused by the weights-only loader: "
          "Trying to load unsupported GLOBAL posix.mkdir",)),
]

MODELS = [
    Case("model-garbage", "model files", "evaluate", "`teacher.pt` replaced by random bytes",
         lambda: f.garbage("artifacts/mlnt/teacher.pt"),
         ("artifacts/mlnt/teacher.pt: expected a model file written by this project, found unreadable data",)),
    Case("model-truncated", "model files", "export", "`teacher.pt` cut to half its bytes",
         lambda: f.truncate("artifacts/mlnt/teacher.pt"),
         ("artifacts/mlnt/teacher.pt: expected a model file written by this project, found unreadable data",)),
    Case("model-runs-code", "model files", "evaluate", "`student.pt`: a torch pickle that calls `os.mkdir`",
         lambda: f.torch_pickle_with_code("artifacts/mlnt/student.pt"),
         ("artifacts/mlnt/student.pt: expected a model file written by this project, found unreadable data "
          "(refused by the weights-only loader: Trying to load unsupported GLOBAL posix.mkdir",)),
    Case("model-wrong-format", "model files", "mlnt", "the baseline's `model.pt` claims format 99",
         lambda: f.edit_model("artifacts/baseline/model.pt", lambda m: m.update(format=99)),
         ("artifacts/baseline/model.pt: expected model format 1, found 99",)),
    Case("model-missing-field", "model files", "evaluate", "`final.pt` without its `network` field",
         lambda: f.edit_model("artifacts/baseline/final.pt", lambda m: m.pop("network")),
         ("artifacts/baseline/final.pt: expected a model file with network, num_classes, in_channels, image_size, "
          "normalisation and state_dict, found one without 'network'",)),
    Case("model-wrong-shape", "model files", "evaluate", "`teacher.pt` claims 3 classes over 10-class weights",
         lambda: f.edit_model("artifacts/mlnt/teacher.pt", lambda m: m.update(num_classes=3)),
         ("artifacts/mlnt/teacher.pt: expected weights that fit a small_cnn with 3 classes, found others "
          "(size mismatch",)),
    Case("model-other-dataset", "model files", "export", "`teacher.pt` a 14-class model whose weights fit it",
         lambda: f.edit_model("artifacts/mlnt/teacher.pt", f.with_classes(14)),
         ("artifacts/mlnt/teacher.pt: expected a model for the dataset of artifacts/ingest/manifest.json (10 "
          "classes, 1 channel, image size 28), found one with 14 classes (re-run the training steps on this "
          "dataset)",)),
    Case("model-other-network", "model files", "evaluate", "`student.pt` claims to be a `preact_resnet32`",
         lambda: f.edit_model("artifacts/mlnt/student.pt", lambda m: m.update(network="preact_resnet32")),
         ("artifacts/mlnt/student.pt: expected weights that fit a preact_resnet32 with 10 classes, found others (",
          "missing keys: ", "unexpected keys: ", ", ...): the file holds another network")),
    Case("metrics-garbage", "model files", "export", "the evaluate step's `metrics.json` replaced by random bytes",
         lambda: f.garbage("artifacts/evaluate/metrics.json"),
         ("artifacts/evaluate/metrics.json: expected JSON written by the evaluate step, found invalid JSON",)),
    Case("metrics-missing-key", "model files", "export", "the mlnt step's `metrics.json` without "
         "`val_accuracy`", lambda: f.edit_json("artifacts/mlnt/metrics.json", lambda m: m.pop("val_accuracy")),
         ("artifacts/mlnt/metrics.json: expected the key 'val_accuracy' written by the mlnt step, found "
          "keys [",)),
]

GATE = "artifacts/gate"
GATE_FAIL = "gate: FAIL: not released"
ONNX_CARD = [
    Case("gate-parity-failed", "ONNX files and model card", "gate", "`parity.json` says parity failed",
         lambda: f.edit_json("artifacts/export/parity.json", lambda p: p.update(passed=False)),
         (GATE_FAIL, "fail: ONNX parity"), argv=ENFORCE, may_write=(GATE,)),
    Case("gate-parity-not-boolean", "ONNX files and model card", "gate", "`parity.json` says `\"passed\": "
         "\"false\"` (a string, true to Python)",
         lambda: f.edit_json("artifacts/export/parity.json", lambda p: p.update(passed="false")),
         (GATE_FAIL, "fail: ONNX parity"), argv=ENFORCE, may_write=(GATE,)),
    Case("gate-parity-missing", "ONNX files and model card", "gate", "`parity.json` deleted",
         lambda: f.delete("artifacts/export/parity.json"),
         (GATE_FAIL, "fail: inputs missing or unreadable: artifacts/export/parity.json"), argv=ENFORCE,
         may_write=(GATE,)),
    Case("gate-metrics-missing", "ONNX files and model card", "gate", "the evaluate step's `metrics.json` deleted",
         lambda: f.delete("artifacts/evaluate/metrics.json"),
         (GATE_FAIL, "fail: inputs missing or unreadable: artifacts/evaluate/metrics.json"), argv=ENFORCE,
         may_write=(GATE,)),
    Case("gate-metrics-no-accuracy", "ONNX files and model card", "gate", "`metrics.json` without the teacher's "
         "accuracy", lambda: f.edit_json("artifacts/evaluate/metrics.json", lambda m: m["teacher"].pop("accuracy")),
         (GATE_FAIL, "fail: clean-test accuracy of the exported model (teacher) is None in "
          "artifacts/evaluate/metrics.json"), argv=ENFORCE, may_write=(GATE,)),
    Case("gate-onnx-truncated", "ONNX files and model card", "gate", "`model.onnx` cut short after the card was "
         "written", lambda: f.truncate("artifacts/export/model.onnx"),
         (GATE_FAIL, "fail: model card sha256"), argv=ENFORCE, may_write=(GATE,)),
    Case("gate-onnx-missing", "ONNX files and model card", "gate", "`model.onnx` deleted",
         lambda: f.delete("artifacts/export/model.onnx"),
         (GATE_FAIL, "fail: inputs missing or unreadable: artifacts/export/model.onnx"), argv=ENFORCE,
         may_write=(GATE,)),
    Case("gate-card-no-hash", "ONNX files and model card", "gate", "`model_card.json` without `onnx_sha256`",
         lambda: f.edit_json("artifacts/export/model_card.json", lambda c: c.pop("onnx_sha256")),
         (GATE_FAIL, "fail: model card sha256 None vs model.onnx"), argv=ENFORCE, may_write=(GATE,)),
    Case("gate-card-not-object", "ONNX files and model card", "gate", "`model_card.json` holds a JSON list",
         lambda: f.wrap_json("artifacts/export/model_card.json"),
         (GATE_FAIL, "fail: inputs missing or unreadable: artifacts/export/model_card.json"), argv=ENFORCE,
         may_write=(GATE,)),
    Case("gate-below-min-accuracy", "ONNX files and model card", "gate", "clean-test accuracy 0.5 against "
         "`min_accuracy` 0.8", lambda: f.edit_json("artifacts/evaluate/metrics.json",
                                                  lambda m: m["teacher"].update(accuracy=0.5)),
         (GATE_FAIL, "fail: accuracy 0.5000, required at least min_accuracy 0.8"),
         argv=("--enforce", "--set", "gate.min_accuracy=0.8"), may_write=(GATE,)),
    Case("gate-regression", "ONNX files and model card", "gate", "accuracy 0.95 against the champion's 1.0",
         lambda: f.edit_json("artifacts/evaluate/metrics.json", lambda m: m["teacher"].update(accuracy=0.95)),
         (GATE_FAIL, "fail: accuracy 0.9500, required at least the champion's 1.0000 minus max_regression 0.01"),
         argv=ENFORCE, may_write=(GATE,)),
    Case("serving-onnx-truncated", "ONNX files and model card", "serving", "a release's `model.onnx` cut short",
         lambda: f.truncate(f"{LATEST}/model.onnx"),
         ("model.onnx: sha256 does not match the model card: expected",), argv=("--model", LATEST), code=2),
    Case("serving-onnx-garbage", "ONNX files and model card", "serving", "random bytes as `model.onnx`, with a "
         "card and a decision that vouch for them",
         lambda: (f.garbage(f"{LATEST}/model.onnx"), f.match_card_to_onnx(LATEST)),
         ("model.onnx: expected a model onnxruntime can load, found",), argv=("--model", LATEST), code=2),
    Case("serving-card-no-input", "ONNX files and model card", "serving", "a release's card without `input`",
         lambda: f.edit_json(f"{LATEST}/model_card.json", lambda c: c.pop("input")),
         ("model_card.json: expected input.name, input.shape [batch, C, H, W]",), argv=("--model", LATEST), code=2),
]

def _half_written_version() -> None:
    Path("releases/v-half").mkdir()
    Path("releases/v-half/model.onnx").write_bytes(Path(LATEST, "model.onnx").read_bytes())


REGISTRY = [
    Case("registry-latest-dangling", "registry contents", "gate", "`releases/latest` points at no folder",
         lambda: f.relink(LATEST, "v-deleted"),
         (GATE_FAIL, "fail: champion releases/latest/model_card.json: expected a released model card with "
          "metrics.accuracy, found none"), argv=ENFORCE, may_write=(GATE,)),
    Case("registry-champion-garbage", "registry contents", "gate", "the champion's model card holds a string "
         "accuracy", lambda: f.edit_json(f"{LATEST}/model_card.json", lambda c: c["metrics"].update(accuracy="0.9")),
         (GATE_FAIL, "fail: champion releases/latest/model_card.json: expected a released model card with "
          "metrics.accuracy, found '0.9'"), argv=ENFORCE, may_write=(GATE,)),
    Case("registry-not-a-folder", "registry contents", "gate", "`gate.registry` names a file", lambda: Path(
        "registry-file").write_text("x"),
         ("registry-file: expected a registry folder, found a file",), argv=("--set", "gate.registry=registry-file"),
         may_write=(GATE,)),
    Case("serving-half-written", "registry contents", "serving", "a version folder holding `model.onnx` and no "
         "card (a copy cut short)", _half_written_version,
         ("releases/v-half/model_card.json: expected a readable file, found no such file or directory",),
         argv=("--model", "releases/v-half"), code=2),
    Case("serving-latest-dangling", "registry contents", "serving", "`releases/latest` points at no folder",
         lambda: f.relink(LATEST, "v-deleted"),
         ("releases/latest: expected a release folder with model.onnx and model_card.json, found nothing",),
         argv=("--model", LATEST), code=2),
    Case("serving-decision-garbage", "registry contents", "serving", "a release's `decision.json` cut to one byte",
         lambda: f.truncate(f"{LATEST}/decision.json", keep=0.001),
         ("decision.json: expected a JSON object, found invalid JSON",), argv=("--model", LATEST), code=2),
]

CASES = [*DATA, *PARAMS, *CHECKPOINTS, *MODELS, *ONNX_CARD, *REGISTRY]
