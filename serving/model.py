"""The KServe model: a released ONNX classifier run with onnxruntime on the CPU, one session call per request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort
from kserve import InferRequest, Model

from serving.inputs import v1_batch, v2_batch
from serving.metrics import PredictorMetrics
from serving.outputs import v1_response, v2_response
from serving.release import Release, ReleaseError


@dataclass(frozen=True)
class Batch:
    """One request on its way through preprocess -> predict -> postprocess."""

    protocol: str  # "v1" or "v2"
    images: np.ndarray  # float32 [N, C, H, W], normalised
    request: InferRequest | None = None  # v2 only
    probabilities: np.ndarray | None = None


class Classifier(Model):
    def __init__(self, name: str, release: Release, *, max_batch: int = 256, threads: int = 0,
                 metrics: PredictorMetrics | None = None):
        super().__init__(name)
        self.release, self.spec, self.max_batch = release, release.spec, max_batch
        self.threads, self.metrics = threads, metrics
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(self.release.onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, ...: they share no base but Exception
            raise ReleaseError(f"{self.release.folder / 'model.onnx'}: expected a model onnxruntime can load, "
                               f"found {type(exc).__name__}: {exc}") from None
        graph = {i.name: i.shape[1:] for i in self.session.get_inputs()}
        if graph.get(self.spec.name) != list(self.spec.shape):
            raise ReleaseError(f"{self.release.folder / 'model.onnx'}: expected input '{self.spec.name}' of shape "
                               f"[batch, {', '.join(map(str, self.spec.shape))}] as in the card, found {graph}")
        self.ready = True
        return self.ready

    def validate(self, payload):
        return payload  # preprocess has validated it (serving.inputs); KServe's check knows no Batch

    async def preprocess(self, payload, headers: dict | None = None) -> Batch:
        if isinstance(payload, InferRequest):
            return Batch("v2", v2_batch(payload, self.spec, self.max_batch), request=payload)
        return Batch("v1", v1_batch(payload, self.spec, self.max_batch))

    async def predict(self, payload: Batch, headers: dict | None = None) -> Batch:
        # onnxruntime releases the GIL: run it in the executor so the event loop keeps answering.
        probabilities = await asyncio.get_running_loop().run_in_executor(None, self.probabilities, payload.images)
        return replace(payload, probabilities=probabilities)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.spec.output], {self.spec.name: images})[0]

    async def postprocess(self, result: Batch, headers: dict | None = None, response_headers: dict | None = None):
        if self.metrics is not None:
            self.metrics.predicted(result.probabilities)
        if result.protocol == "v2":
            return v2_response(result.request, self.name, result.probabilities, self.spec.class_names)
        return v1_response(result.probabilities, self.spec.class_names)

    def get_input_types(self) -> list[dict]:
        return [{"name": self.spec.name, "datatype": "FP32", "shape": [-1, *self.spec.shape]},
                {"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.spec.class_names)]},
                {"name": "class", "datatype": "BYTES", "shape": [-1]},
                {"name": "class_index", "datatype": "INT64", "shape": [-1]}]
