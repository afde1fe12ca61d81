"""export: the model chosen on the validation set -> ONNX, checked against PyTorch, with a model card.

Chooses between the CE baseline's best epoch (``baseline_best_epoch``) and the MLNT teacher by validation accuracy.
Writes ``artifacts/export/model.onnx`` (input ``images``: float32 ``[batch, C, H, W]``, normalised with the card's
mean and std; output ``probabilities`` ``[batch, K]``; dynamic batch axis, weights embedded, opset 18; class names,
normalisation and the input transform in the metadata), ``parity.json`` (onnxruntime against PyTorch on clean test
images) and ``model_card.json`` (classes, input spec with ``input.transform``: how an image is resized and cropped
exactly as training and evaluate saw it, which the predictor applies to encoded images; metrics, data hashes, the
params of every step up to export and their digest, git commit, the ONNX file's sha256, ``model_sha256``: the
sha256 of the model file exported, which must be the file evaluate scored (its metrics.json records each; export
refuses another), ``train_class_distribution``: the share of each class among the noisy training labels the model
learnt from, ``predicted_class_distribution``: the
share of each class among the released model's predictions on the test set, the reference the predictor's drift
gauge compares live predictions with (it compares predictions: under class-dependent noise the noisy labels' shares
differ from what a noise-robust model predicts on unchanged data, and the gauge read that as drift), and
``calibration``: the temperature fitted on the validation set (clean, or as noisy as training with a warning:
``calibration.fitted_on`` says which), baked into the graph, with the ECE before and after on that set and on the
test set (``test_ece_after``: the released model's; ``metrics.ece`` is the
uncalibrated network's); ``validation``: where that set came from and whether its labels are clean, with evaluate's
warning when not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.common.artifacts import fraction, read_json, read_manifest, sha256_file, wrong_type
from components.common.atomic import atomic_set, prepare_output, write_atomic, write_json
from components.common.calibration import (
    ANCHOR_PERCENTILE,
    MIN_ANCHORS,
    anchors_per_class,
    at_bound,
    fewest_for_anchors,
    fit_temperature,
    fit_temperature_on_noisy_labels,
)
from components.common.config import CONFIG_FILE, as_record, cli
from components.common.errors import DataError
from components.common.model_file import check_fits, load_model
from components.common.splits import load_split, read_noise_labels, test_set
from components.common.steps import FOLDERS, STEPS
from components.evaluate import expected_calibration_error
from model.progress import progress
from model.trainer import RESULT_NEUTRAL, Source

BASELINE_OUT = FOLDERS["baseline"]
EVALUATE_OUT = FOLDERS["evaluate"]
INGEST_OUT = FOLDERS["ingest"]
MLNT_OUT = FOLDERS["mlnt"]
NOISE_OUT = FOLDERS["noise"]

OUT = FOLDERS["export"]
OPSET = 18
MADE_BY = STEPS[:STEPS.index("export") + 1]  # the steps whose settings the model card records
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """The ``export`` section of params.yaml: ``parity_images`` (clean test images compared between PyTorch and
    onnxruntime), ``max_abs_diff`` (the largest difference of any probability the parity check allows), ``calibrate``
    (fit a temperature on the validation set and bake it into the graph) and ``workers`` (the DataLoader processes
    decoding a sharded dataset)."""

    parity_images: int = 256  # clean test images compared between PyTorch and onnxruntime
    max_abs_diff: float = 1e-4  # largest allowed difference of any probability
    calibrate: bool = True  # temperature scaling fitted on the validation set (predictions unchanged)
    workers: int = 2  # DataLoader processes decoding a sharded dataset

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0, found {self.workers}")
        if self.parity_images < 1 or self.max_abs_diff <= 0:
            raise ValueError(f"parity_images, max_abs_diff: expected >= 1 and > 0, found {self.parity_images}, "
                             f"{self.max_abs_diff}")


class Probabilities(nn.Module):
    """The exported graph: the network, its logits divided by the calibration temperature, a softmax."""

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.net, self.temperature = net, float(temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``softmax(net(images) / temperature)`` over the classes: probabilities ``[batch, K]``."""
        return torch.softmax(self.net(images) / self.temperature, dim=1)


def choose(baseline: Path, mlnt: Path) -> tuple[str, Path, float]:
    """The model with the higher validation accuracy: ``(name, file, validation accuracy)``; a ``DataError`` naming
    the file when either accuracy is not a finite number in [0, 1] (a NaN would win every comparison)."""
    base = _val_accuracy(Path(baseline), "baseline")
    teacher = _val_accuracy(Path(mlnt), "mlnt")  # the released one
    if teacher >= base:
        return "teacher", Path(mlnt) / "teacher.pt", teacher
    return "baseline_best_epoch", Path(baseline) / "model.pt", base  # named as in evaluate's metrics.json


def _val_accuracy(folder: Path, producer: str) -> float:
    """``val_accuracy`` of the ``metrics.json`` that ``producer`` wrote into ``folder``, a finite number in [0, 1]."""
    path = folder / "metrics.json"
    value = read_json(path, producer, "val_accuracy")["val_accuracy"]
    if not fraction(value):
        raise DataError(f"{path}: expected val_accuracy as a finite number in [0, 1] written by the {producer} step, "
                        f"found {value!r}")
    return value


EVALUATED_SHAPES = {"ece_bins": int, "validation": dict, "test": dict, "label_issues": dict}  # what the card copies


def read_evaluated(evaluate: Path, name: str, model_file: Path) -> tuple[dict, str]:
    """evaluate's metrics.json, holding the scores of the model ``name`` and every record the card copies in its JSON
    type, and the sha256 of ``model_file``: the file evaluate scored as ``name`` (its ``model_sha256``; metrics
    written before evaluate recorded it are not checked). A ``DataError`` naming the file, the key, the expected
    and the found otherwise, before any work."""
    path = Path(evaluate) / "metrics.json"
    evaluated = read_json(path, "evaluate", "ece_bins", name)
    problem = wrong_type(path, evaluated, {name: dict, **EVALUATED_SHAPES}, "evaluate")
    if problem:
        raise DataError(f"{problem} (re-run python -m components.evaluate)")
    scored, digest = evaluated[name].get("model_sha256"), sha256_file(model_file)
    if scored is not None and scored != digest:
        raise DataError(f"{model_file}: expected the model file evaluate scored (sha256 {scored}, {path} "
                        f"{name}.model_sha256), found sha256 {digest}: the file changed since evaluate ran, and the "
                        f"card would carry another model's accuracy; re-run python -m components.evaluate, then "
                        f"export")
    return evaluated, digest


def to_onnx(net: nn.Module, example: torch.Tensor, metadata: dict[str, str], *, temperature: float = 1.0) -> bytes:
    """The ONNX bytes of ``Probabilities(net, temperature)``, traced with the dynamo exporter at ``OPSET`` on the
    first two images of ``example`` (its one image twice, copied: one image laid out as the data pipeline gives it,
    NHWC permuted to NCHW, fails to export with a dynamic batch axis, "Invalid ranges [2:1]"): input ``images`` with
    a dynamic batch axis, output ``probabilities``, ``metadata`` as metadata properties. ``onnx.checker`` (full
    check) raises on an invalid model; writes nothing."""
    import onnx  # noqa: PLC0415 - export-only dependency

    wrapped = Probabilities(net, temperature).eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    # A slice of a larger batch and a fresh tensor trace to the same graph under other value names (a different
    # file): slicing, as before one-image examples were taken, keeps the bytes of the models released since.
    traced = example[:2] if example.shape[0] >= 2 else example.expand(2, *example.shape[1:]).contiguous()
    program = torch.onnx.export(wrapped, (traced,), input_names=["images"], output_names=["probabilities"],
                                dynamic_shapes={"images": {0: batch}}, opset_version=OPSET, dynamo=True,
                                verbose=False)
    model = program.model_proto
    strip_provenance(model)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def strip_provenance(model) -> None:
    """Remove, in place, what the exporter records of how it was called: per node, value and graph, the Python stack
    trace (absolute source paths and line numbers), the FX node and the module path (``__main__.`` under ``python
    -m``, the module's name in a KFP step). The same weights then give the same bytes wherever and however export
    runs, and no path of the build machine ships in the release. The model's own metadata is left alone."""
    graph = model.graph
    for item in (*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer, graph):
        del item.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""


def parity(onnx_bytes: bytes, net: nn.Module, images: torch.Tensor, max_abs_diff: float, *,
           temperature: float = 1.0) -> dict:
    """``onnx_bytes`` run by onnxruntime (CPU) beside ``Probabilities(net, temperature)`` on ``images``: the image
    count, the largest absolute difference of any probability, the share of equal argmaxes, the allowed
    ``max_abs_diff`` and ``passed`` (within it, every argmax equal). A failure is reported, not raised."""
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"images": images.numpy()})[0]
    with torch.no_grad():
        want = Probabilities(net, temperature).eval()(images).numpy()
    diff = float(np.abs(got - want).max())
    same = float((got.argmax(1) == want.argmax(1)).mean())
    return {"images": int(images.shape[0]), "max_abs_diff": diff, "argmax_agreement": same,
            "max_abs_diff_allowed": max_abs_diff, "passed": bool(diff <= max_abs_diff and same == 1.0)}


def run(config: ExportConfig, *, ingest: Path = INGEST_OUT, noise: Path = NOISE_OUT, baseline: Path = BASELINE_OUT,
        mlnt: Path = MLNT_OUT, evaluate: Path = EVALUATE_OUT, out: Path = OUT,
        params: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """Reads ``baseline``'s and ``mlnt``'s metrics.json (to choose) and the chosen model file, ``ingest``'s test set
    and manifest, ``noise``'s validation set and labels.npz and ``evaluate``'s metrics.json; writes ``model.onnx``,
    ``parity.json`` and ``model_card.json`` to ``out``; returns the card. ``params``: the params sections the run's
    steps up to this one were given (``MADE_BY``), recorded in the card with their digest (``params_digest``); None
    records none. A failed parity check is recorded in the card (the gate refuses it), not raised."""
    out, recorded = Path(out), made_by(params)  # incomplete params fail here, before any work
    prepare_output(out, step="export")  # so does an output folder that cannot take the files
    name, model_file, val_accuracy = choose(baseline, mlnt)
    net, saved = load_model(model_file)
    manifest = read_manifest(ingest)
    check_fits(model_file, saved, manifest, Path(ingest) / "manifest.json")
    evaluated, model_sha256 = read_evaluated(evaluate, name, model_file)  # so do evaluate's metrics and model file
    net.eval()
    norm = saved["normalisation"]
    test = test_set(ingest, norm, workers=config.workers)
    x = torch.cat([x for x, _ in test.subset(torch.arange(min(config.parity_images, len(test)))).eval_batches(256)])
    transform = input_transform(manifest, saved["image_size"])
    metadata = onnx_metadata(manifest["class_names"], norm, name, transform=transform)
    clean = evaluated.get("validation", {}).get("clean", True)
    test_logits = _logits(net, test, "predicting the test set")
    calibration = calibrate(net, load_split(ingest, noise, workers=config.workers)[1], bins=evaluated["ece_bins"],
                            clean=clean, test=(test_logits, test.labels)) if config.calibrate else {"temperature": 1.0}
    metadata["temperature"] = str(calibration["temperature"])
    onnx_bytes = to_onnx(net, x, metadata, temperature=calibration["temperature"])
    check = parity(onnx_bytes, net, x, config.max_abs_diff, temperature=calibration["temperature"])
    labels = read_noise_labels(ingest, noise)
    given, is_val = labels["label"], labels["is_val"]
    if recorded is not None:  # what each step ran with, as its outputs record it, over what the params file says
        recorded = ran_with(recorded, {"ingest": manifest.get("config"), "export": as_record(config),
                                       **{step: _ran(folder, step) for step, folder in (
                                           ("noise", noise), ("baseline", baseline), ("mlnt", mlnt),
                                           ("evaluate", evaluate))}})
    card = {"model": name, "model_sha256": model_sha256,
            **interface(saved["network"], manifest["class_names"], saved, transform=transform),
            "metrics": {"val_accuracy": val_accuracy, **{k: v for k, v in evaluated[name].items()
                                                          if k not in ("per_class_accuracy", "model_sha256")}},
            "label_issues": evaluated.get("label_issues", {}),
            "validation": evaluated.get("validation", {}), "test": evaluated.get("test", {}),
            "train_class_distribution": class_distribution(given[~is_val], saved["num_classes"]),
            "predicted_class_distribution": class_distribution(test_logits.argmax(1).numpy(), saved["num_classes"],
                                                               what="predicted_class_distribution"),
            "calibration": calibration,
            "data": {"ingest_inputs_sha256": manifest["inputs_sha256"],
                     "labels_sha256": sha256_file(Path(noise) / "labels.npz")},
            "params": recorded, "params_sha256": params_digest(recorded),
            "git_commit": git_commit(), "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": OPSET, "parity": check}
    with atomic_set():  # the three files as a set: a failure in any leaves the previous three
        write_atomic(out / "model.onnx", lambda fh: fh.write(onnx_bytes))
        write_json(out / "parity.json", check)
        write_json(out / "model_card.json", card)
    return card


def made_by(params: Mapping[str, Mapping[str, Any]] | None) -> dict | None:
    """The sections of ``params`` that made the model (``MADE_BY``: ingest to export), as given; None for None. A
    ``ValueError`` naming the missing sections when some are absent."""
    if params is None:
        return None
    missing = [step for step in MADE_BY if step not in params]
    if missing:
        raise ValueError(f"export: expected the params of every step up to export, found none for {', '.join(missing)}")
    return {step: dict(params[step]) for step in MADE_BY}


def ran_with(given: dict[str, dict], ran: Mapping[str, dict | None]) -> dict[str, dict]:
    """``given`` (the params file's sections) with each step's section replaced by the config its outputs say it
    ran with (``ran``; None: not recorded, the section as given stays). A step run by hand with ``--set`` ran with
    other settings than the file's: the card records what ran, and a warning names each setting the file gives
    otherwise (a key the file leaves out ran with its default, which is no difference). Settings that cannot change
    the result (``RESULT_NEUTRAL``: the device, workers ...) stay as the file gives them: the KFP pipeline trains on
    ``cuda`` where params.yaml says ``auto``, and the same settings give the same ``params_sha256`` either way."""
    recorded = dict(given)
    for step, ran_config in ran.items():
        if not isinstance(ran_config, dict):
            continue
        config = {key: given[step][key] if key in RESULT_NEUTRAL and key in given[step] else value
                  for key, value in ran_config.items()}
        differ = [f"{step}.{key} {value!r} (the params file: {given[step][key]!r})"
                  for key, value in config.items() if key in given[step] and given[step][key] != value]
        if differ:
            LOG.warning("the model card records the settings the steps ran with, not the params file's: %s",
                        "; ".join(differ))
        recorded[step] = config
    return recorded


def _ran(folder: Path, step: str) -> dict | None:
    """The config ``step`` ran with (its ``config.json``), or None where its outputs predate the record."""
    path = Path(folder) / CONFIG_FILE
    return read_json(path, step) if path.is_file() else None


def params_digest(params: Mapping[str, Any] | None) -> str | None:
    """The sha256 of ``params`` as canonical JSON (keys sorted, no spaces): the same for the same settings whether
    they came from params.yaml (DVC) or the pipeline's parameters (KFP), whatever the file's layout or comments."""
    if params is None:
        return None
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


SHORT_SIDE = "short side, then centre crop"  # the transform methods a card names (serving.release.METHODS)
STRETCH = "resize to the input size"


def input_transform(manifest: Mapping[str, Any], size: int) -> dict:
    """How an encoded image becomes the network's ``size`` x ``size`` input before normalisation, exactly as
    training and evaluate prepared the images of the dataset ``manifest`` (ingest's) describes; the card's
    ``input.transform``, which the predictor applies to encoded images.

    Shards (Clothing1M): the manifest's ``transform``, applied by ``components.common.streaming.decode`` when a
    step reads a shard: a JPEG decoded at Pillow's draft scale no smaller than ``resize``, the short side resized to
    ``resize`` (bilinear), the centre ``crop`` square at ``round((side - crop) / 2)`` (halves to even). An image
    folder: ``components.formats.images.load_image`` at ingest, the short side resized to ``size`` and the centre
    square at ``(side - crop) // 2``, no draft (with ``ingest.image_size`` 0 the images were already square at
    ``size``: a square request is only resized, a non-square one cropped, not stretched). Datasets stored at their
    final size (Fashion-MNIST, CIFAR-10): images of ``size`` are used as they are, any other size is resized to it
    (bilinear), the aspect ratio not kept."""
    if manifest.get("format") == "shards":
        transform = manifest.get("transform")
        if not isinstance(transform, Mapping) or not {"resize", "crop"} <= set(transform):
            raise ValueError(f"ingest manifest: expected a transform with resize and crop for a sharded dataset, "
                             f"found {transform!r}")
        resize, crop = int(transform["resize"]), int(transform["crop"])
        offset, draft = "round", True
    elif manifest.get("dataset") == "imagefolder":
        resize, crop, offset, draft = size, size, "floor", False
    else:
        return {"method": STRETCH, "filter": "bilinear",
                "note": f"the training images were stored at {size}x{size}: send images of that size; any other "
                        f"is resized to it (bilinear), its aspect ratio not kept"}
    if crop != size or resize < crop:
        raise ValueError(f"ingest manifest: expected a transform cropping {size}x{size} (the model's image_size) out "
                         f"of a short side of at least that, found resize {resize}, crop {crop}")
    corner = "round((side - crop) / 2), halves to even" if offset == "round" else "(side - crop) // 2"
    draft_note = f"a JPEG decoded at the draft scale no smaller than {resize}, " if draft else ""
    return {"method": SHORT_SIDE, "resize": resize, "crop": crop, "filter": "bilinear", "offset": offset,
            "jpeg_draft": draft,
            "note": f"as training and evaluate saw the images: {draft_note}the short side resized to {resize} "
                    f"(bilinear), then the centre {crop}x{crop} square, its corner at {corner}"}


def onnx_metadata(class_names: list[str], norm: dict, model: str, *, transform: dict | None = None) -> dict[str, str]:
    """The metadata embedded in the ONNX file: what a consumer needs to prepare inputs and name outputs;
    ``transform`` (``input_transform``'s): how an image is resized and cropped before it is normalised."""
    metadata = {"class_names": json.dumps(class_names), "normalisation": json.dumps(norm),
                "input_layout": "NCHW float32, pixels / 255 then (x - mean) / std per channel", "model": model}
    if transform is not None:
        metadata["input_transform"] = json.dumps(transform)
        metadata["input_layout"] = ("NCHW float32: each image resized and cropped as input_transform says, then "
                                    "pixels / 255 then (x - mean) / std per channel")
    return metadata


def interface(network: str, class_names: list[str], meta: dict, *, transform: dict | None = None) -> dict:
    """The model card's description of the model's input and output (what the predictor reads); ``meta``:
    ``in_channels``, ``image_size``, ``num_classes`` and ``normalisation``, as a model file records them;
    ``transform`` (``input_transform``'s), when given, becomes ``input.transform``: how the predictor prepares an
    encoded image (a card without it has its images resized to the input size)."""
    size = meta["image_size"]
    spec = {"name": "images", "shape": ["batch", meta["in_channels"], size, size], "dtype": "float32",
            "normalisation": meta["normalisation"]}
    if transform is not None:
        spec["transform"] = transform
    return {"network": network, "class_names": class_names, "input": spec,
            "output": {"name": "probabilities", "shape": ["batch", meta["num_classes"]]}}


def calibrate(net: nn.Module, val: Source, *, bins: int, clean: bool = True,
              test: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """The temperature fitted on the validation set (``clean``: whether its labels are), with its expected
    calibration error there before and after; with ``test``, also the ECE on the test set before and after
    (``test_ece_after`` is the released model's: the ONNX graph divides by the temperature; ``metrics.ece`` in the
    card is evaluate's, the uncalibrated network's, equal to ``test_ece_before``); ``test`` is the network's logits on
    the test set and its labels (the caller has them already). The temperature is fitted on validation alone; the
    test set is only scored.

    On noisy labels the temperature is fitted through their noise matrix, estimated from the network's
    probabilities on the same set (``components.common.calibration``): the card records it (row: true class,
    column: label given), the validation labels' estimated noise rate, and the temperature the labels alone would
    have given (``uncorrected_temperature``)."""
    val_logits = _logits(net, val, "calibrating on the validation set")
    anchors = anchors_per_class(len(val))
    if clean:
        temperature, method, extra = fit_temperature(val_logits, val.labels), "temperature scaling", {}
    elif anchors < MIN_ANCHORS:
        temperature, method = 1.0, "none: too few validation images to estimate the labels' noise matrix"
        extra = {"warning": f"kept T = 1: the noisy validation set's {len(val)} images give {anchors} anchor "
                            f"point(s) a class, the top {100 - ANCHOR_PERCENTILE:g} %; the noise matrix needs "
                            f"{MIN_ANCHORS} (at least {fewest_for_anchors()} images)"}
    else:
        fit = fit_temperature_on_noisy_labels(val_logits, val.labels)
        temperature, method = fit.temperature, "temperature scaling through the labels' noise matrix (anchor points)"
        extra = {"noise_matrix": np.round(fit.noise_matrix, 4).tolist(),
                 "estimated_noise_rate": round(fit.noise_rate, 4), "uncorrected_temperature": fit.uncorrected}
    if at_bound(temperature):
        extra["warning"] = (f"kept T = 1: the fit ran to the edge of its range (T = {temperature:.3g}), as it does "
                            f"where the validation set holds no error to calibrate on")
        temperature = 1.0
    if "warning" in extra:
        LOG.warning("export: calibration %s", extra["warning"])
    fitted_on = f"{'clean' if clean else 'noisy'} validation set ({len(val)} images)"
    result = {"temperature": temperature, "fitted_on": fitted_on, "method": method, **extra,
              "val_ece_before": _ece(val_logits, val.labels, 1.0, bins),
              "val_ece_after": _ece(val_logits, val.labels, temperature, bins)}
    if test is not None:
        test_logits, test_labels = test
        result |= {"test_ece_before": _ece(test_logits, test_labels, 1.0, bins),
                   "test_ece_after": _ece(test_logits, test_labels, temperature, bins)}
    return result


def _logits(net: nn.Module, source: Source, what: str) -> torch.Tensor:
    """``net``'s logits (float64) on every image of ``source``, in order."""
    with torch.no_grad():
        batches = progress(source.eval_batches(512), desc=f"export: {what}", unit="batches",
                           total=-(-len(source) // 512))
        return torch.cat([net(x) for x, _ in batches]).double()


def _ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float, bins: int) -> float:
    """The expected calibration error of ``softmax(logits / temperature)`` against ``labels``."""
    return expected_calibration_error(torch.softmax(logits / temperature, dim=1).numpy(), labels.numpy(), bins)


def class_distribution(labels: np.ndarray, num_classes: int, *, what: str = "train_class_distribution") -> list[float]:
    """The share of each of ``num_classes`` classes among ``labels`` (integer class indices); ``what``: the card's
    field, for the error."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
        found = "no labels" if labels.size == 0 else f"labels from {labels.min()} to {labels.max()}"
        raise ValueError(f"{what}: expected labels in 0..{num_classes - 1}, found {found}")
    return (np.bincount(labels, minlength=num_classes) / labels.size).tolist()


def git_commit() -> str:
    """The commit the code ran from, ``-dirty`` when a tracked file differs from it; ``dvc.lock`` aside, which
    ``dvc repro`` rewrites after each stage before export runs (a clean checkout's card said ``-dirty``). Without git
    or a repository (the image has neither), the commit the image was built from: ``$MLNT_GIT_COMMIT``, which the
    Dockerfile sets from its build argument ``GIT_COMMIT``; else ``unknown``."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)dvc.lock"], capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
        return done.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("MLNT_GIT_COMMIT", "").strip() or "unknown"


EXPORTED = {"teacher": "MLNT's released model (teacher.pt, whichever of student and teacher won on validation)",
            "baseline_best_epoch": "CE's best epoch (baseline/model.pt: it beat MLNT's released model on validation)"}


def _main(configs: dict, params: dict) -> None:
    card = run(configs["export"], params=params)
    p = card["parity"]
    verdict = "ok" if p["passed"] else "FAILED"
    model = EXPORTED.get(card["model"], card["model"])
    print(f"export: {model} -> {OUT / 'model.onnx'}; parity on {p['images']} test images: max |diff| "
          f"{p['max_abs_diff']:.2e}, argmax agreement {p['argmax_agreement']:.4f} ({verdict})")
    c = card["calibration"]
    if "fitted_on" in c:
        through = (f" through the labels' estimated noise matrix (noise rate {c['estimated_noise_rate']:.2f}; the "
                   f"labels alone give T = {c['uncorrected_temperature']:.3f})" if "noise_matrix" in c else "")
        print(f"export: temperature T = {c['temperature']:.3f}, fitted on the {c['fitted_on']}{through}; "
              f"test ECE {c['test_ece_before']:.3f} -> {c['test_ece_after']:.3f}")


main = cli("export", {"export": ExportConfig}, __doc__.splitlines()[0], _main, with_params=True)

if __name__ == "__main__":
    raise SystemExit(main())
