"""The KServe model: a released ONNX classifier run with onnxruntime on the CPU, one session call per request.

The event loop answers health checks and every other request, so nothing expensive runs on it: encoded images are
decoded on a pool of ``decode_threads`` threads (so at most that many decodes run at once, whatever the number of
requests; Pillow releases the GIL while it decodes and resizes), and onnxruntime runs in KServe's executor.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kserve import InferRequest, Model

from serving.clients import CLIENT
from serving.inputs import FORMATS, BadRequest, Encoded, decode_images, v1_batch, v2_batch
from serving.metrics import PredictorMetrics
from serving.outputs import check_requested, output_types, v1_response, v2_response
from serving.release import InputSpec, Release, ReleaseError

MAX_DECODE_PIXELS = 4 * 4096 * 4096  # per request: four images of the largest size, or 256 of 512 x 512
PLATFORM = "onnxruntime_onnx"  # the model metadata's platform: the Open Inference Protocol's name for ONNX Runtime
ENCODED_INPUT = "image"  # the name the metadata gives the input of encoded images (serving.inputs takes any name)
FLOAT = "tensor(float)"  # onnxruntime's name for float32: what the predictor sends the graph and reads from it


@dataclass(frozen=True)
class Batch:
    """One request on its way through preprocess -> predict -> postprocess."""

    protocol: str  # "v1" or "v2"
    images: np.ndarray  # float32 [N, C, H, W], normalised
    request: InferRequest | None = None  # v2 only
    probabilities: np.ndarray | None = None
    client: str = ""  # who sent it (serving.clients), for the drift window's per-client cap


class Classifier(Model):
    """The KServe model of one release: checks and decodes requests (``serving.inputs``), runs ``model.onnx`` with
    onnxruntime on the CPU, and answers v1 or v2, recording every prediction in ``metrics`` (if given)."""

    platform = PLATFORM

    def __init__(self, name: str, release: Release, *, max_batch: int = 256, threads: int = 0,
                 metrics: PredictorMetrics | None = None, max_decode_pixels: int = MAX_DECODE_PIXELS,
                 decode_threads: int = 2):
        super().__init__(name)
        self.release, self.spec, self.max_batch = release, release.spec, max_batch
        self.threads, self.metrics, self.max_decode_pixels = threads, metrics, max_decode_pixels
        self.decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        """Start the onnxruntime session from the release's verified bytes (``threads``: intra-op threads, 0 its
        default) and set ``ready``; a ``ReleaseError`` when onnxruntime cannot load the model or its graph differs
        from the card (``check_graph``)."""
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(self.release.onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, ...: they share no base but Exception
            raise ReleaseError(f"{self.release.folder / 'model.onnx'}: expected a model onnxruntime can load, "
                               f"found {type(exc).__name__}: {exc}") from None
        check_graph(self.session, self.spec, self.release.folder / "model.onnx")
        self.ready = True
        return self.ready

    def validate(self, payload):
        """``payload`` unchanged: ``preprocess`` checks the request (``serving.inputs``)."""
        return payload  # preprocess has validated it (serving.inputs); KServe's check knows no Batch

    async def tensor(self, found: np.ndarray | Encoded) -> np.ndarray:
        """A request's tensor; encoded images decoded on the decode pool, within the pixel budget."""
        if isinstance(found, Encoded):
            return await asyncio.get_running_loop().run_in_executor(
                self.decoder, decode_images, found.blobs, self.spec, self.max_decode_pixels)
        return found

    async def preprocess(self, payload, headers: dict | None = None) -> Batch:
        """The request as a ``Batch``: a v2 ``InferRequest`` or a v1 body checked and turned into the normalised
        tensor (encoded images decoded on the decode pool), with its client; a ``BadRequest`` when it is malformed
        or names an output the model does not have."""
        if isinstance(payload, InferRequest):
            check_requested(payload)
            x = await self.tensor(v2_batch(payload, self.spec, self.max_batch))
            return Batch("v2", x, request=payload, client=CLIENT.get())
        return Batch("v1", await self.tensor(v1_batch(payload, self.spec, self.max_batch)), client=CLIENT.get())

    async def predict(self, payload: Batch, headers: dict | None = None) -> Batch:
        """The batch with its probabilities ``[N, K]``, from onnxruntime in KServe's executor; a ``BadRequest`` when
        any is not finite (``finite``), before ``postprocess`` counts anything."""
        # onnxruntime releases the GIL: run it in the executor so the event loop keeps answering.
        probabilities = await asyncio.get_running_loop().run_in_executor(None, self.probabilities, payload.images)
        return replace(payload, probabilities=probabilities)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """One onnxruntime run: the card's output (probabilities ``[N, K]``) for ``images`` (float32
        ``[N, C, H, W]``); a ``BadRequest`` naming the images whose probabilities are not all finite (``finite``)."""
        return finite(self.session.run([self.spec.output], {self.spec.name: images})[0])

    async def postprocess(self, result: Batch, headers: dict | None = None, response_headers: dict | None = None):
        """Record the batch's predictions in ``metrics`` (if given) and answer: a v2 ``InferResponse`` or a v1
        ``predictions`` dict."""
        if self.metrics is not None:
            self.metrics.predicted(result.probabilities, client=result.client, digests=digests(result.images))
        if result.protocol == "v2":
            return v2_response(result.request, self.name, result.probabilities, self.spec.class_names,
                               version=self.release.version)
        return v1_response(result.probabilities, self.spec.class_names)

    def get_input_types(self) -> list[dict]:
        """The inputs the v2 metadata lists: the card's FP32 tensor ``[-1, C, H, W]`` alone. The metadata's inputs
        are those a request sends, all of them (clients build requests from it); encoded images are an alternative
        to the tensor, never sent with it, so they are described in ``metadata_parameters`` instead."""
        return [{"name": self.spec.name, "datatype": "FP32", "shape": [-1, *self.spec.shape]}]

    def metadata_parameters(self) -> dict[str, str]:
        """The v2 metadata's ``parameters`` (REST; gRPC's message has no such field): the alternative input of
        encoded images, ``ENCODED_INPUT`` BYTES ``[-1]``, as Open Inference Protocol parameters (string values)."""
        return {"encoded_image_input": ENCODED_INPUT, "encoded_image_input_datatype": "BYTES",
                "encoded_image_input_shape": "[-1]",
                "encoded_image_input_use": f"instead of '{self.spec.name}', never with it: {FORMATS} files, as "
                                           "base64 text in JSON, as the files' bytes with the binary tensor extension "
                                           "or over gRPC; decoded, resized and normalised as in training"}

    def get_output_types(self) -> list[dict]:
        """The outputs the v2 metadata lists: ``probabilities`` FP32 ``[-1, K]``, ``class`` BYTES and ``class_index``
        INT64 ``[-1]`` (``serving.outputs.output_types``, the answer's own table)."""
        return output_types(len(self.spec.class_names))


def check_graph(session: ort.InferenceSession, spec: InputSpec, where: Path) -> None:
    """A ``ReleaseError`` naming ``where`` unless the graph takes and gives what the card says, as requests and
    answers need it: the input ``spec.name`` float32 ``[batch, C, H, W]`` and the output ``spec.output`` float32
    ``[batch, classes]``, each batch axis dynamic, and the class names in its metadata (where export put them)
    the card's, in order."""
    _check_tensor("input", session.get_inputs(), spec.name, list(spec.shape), where)
    _check_tensor("output", session.get_outputs(), spec.output, [len(spec.class_names)], where)
    found = session.get_modelmeta().custom_metadata_map.get("class_names")
    names = None if found is None else _json(found)
    if found is not None and names != list(spec.class_names):
        raise ReleaseError(f"{where}: expected the card's class_names {list(spec.class_names)} in its metadata, "
                           f"found {names}")


def _check_tensor(kind: str, tensors: list, name: str, shape: list[int], where: Path) -> None:
    tensor = next((t for t in tensors if t.name == name), None)
    if tensor is None or tensor.type != FLOAT or len(tensor.shape) != 1 + len(shape) \
            or isinstance(tensor.shape[0], int) or list(tensor.shape[1:]) != shape:
        found = ", ".join(f"'{t.name}' {t.type} {t.shape}" for t in tensors)
        raise ReleaseError(f"{where}: expected {kind} '{name}' of type {FLOAT} (float32) and shape "
                           f"[batch, {', '.join(map(str, shape))}] (the batch axis dynamic) as in the card, found "
                           f"{found}")


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def finite(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities`` if every one is finite; else a 400 ``BadRequest`` naming the images that are not. Inputs are
    checked to be finite (``serving.inputs``), but finite numbers far outside the normalised range (3e38) overflow
    inside the network, and onnxruntime answers NaN: refused here, before inference or feedback counts anything (a
    NaN confidence would make the histogram's sum NaN for the life of the process, and its argmax is class 0)."""
    bad = np.flatnonzero(~np.isfinite(probabilities).all(axis=1))
    if bad.size:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
        raise BadRequest(f"expected inputs the model computes finite probabilities for, found NaN or infinite "
                         f"probabilities for image(s) [{shown}] of {len(probabilities)} (numbers far outside the "
                         "normalised range overflow inside the network)")
    return probabilities


def digests(images: np.ndarray) -> list[bytes]:
    """One digest per image of a normalised batch: the same pixels, however sent, give the same digest."""
    return [hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest() for row in images]
