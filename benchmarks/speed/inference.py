"""Benchmark: onnxruntime (CPU) against eager PyTorch for the exported classifier, on the same inputs and model.

The network is the one the export step chose (``components.export.choose``: the baseline or the MLNT teacher) and
the ONNX file is the one it wrote; their outputs are compared before timing. The ONNX graph divides the logits by the
calibration temperature that the export step fitted, so the eager model is ``Probabilities(net, temperature)`` with
the temperature its model card records (``--card``, ``calibration.temperature``): the difference printed is then
the runtimes', not the calibration's. Calls alternate between the runtimes and each is reported as its median over
``--repeats`` calls; the ratio (PyTorch time / onnxruntime time) is what to compare across machines, not the
absolute times.

    python -m benchmarks.speed.inference [--onnx artifacts/export/model.onnx] [--card artifacts/export/model_card.json]
                                   [--batch 1 --batch 64] [--repeats 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from components.common.artifacts import read_json
from components.common.model_file import load_model
from components.common.steps import FOLDERS
from components.export import Probabilities, choose

BASELINE_OUT = FOLDERS["baseline"]
EXPORT_OUT = FOLDERS["export"]
MLNT_OUT = FOLDERS["mlnt"]


def _elapsed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def compare_runtimes(net: nn.Module, onnx_bytes: bytes, shape: tuple[int, int, int], *,
                     batches: tuple[int, ...] = (1, 64), repeats: int = 100, threads: int = 1, seed: int = 0,
                     temperature: float = 1.0) -> dict:
    """Median milliseconds per call of eager PyTorch (``Probabilities(net, temperature)``, inference mode) and
    onnxruntime at each batch size, their ratio and the largest difference of any probability; ``threads`` for
    both. ``temperature``: the one ``onnx_bytes`` was exported with (``components.export.to_onnx``), as the export
    step's parity check passes it; another measures the calibration, not the runtimes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    model, previous = Probabilities(net, temperature).eval(), torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for batch in batches:
            x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
            feed = {session.get_inputs()[0].name: x.numpy()}

            def eager(x=x):
                with torch.inference_mode():
                    return model(x)

            def onnx(feed=feed):
                return session.run(None, feed)[0]

            diff = float((eager() - torch.from_numpy(onnx())).abs().max())
            for _ in range(3):  # warm-up
                eager(), onnx()
            times = [(_elapsed_ms(eager), _elapsed_ms(onnx)) for _ in range(repeats)]
            pytorch_ms, onnx_ms = (statistics.median(t) for t in zip(*times, strict=True))
            rows.append({"batch": batch, "pytorch_ms": round(pytorch_ms, 4), "onnxruntime_ms": round(onnx_ms, 4),
                         "pytorch_over_onnxruntime": round(pytorch_ms / onnx_ms, 2), "max_abs_diff": diff})
    finally:
        torch.set_num_threads(previous)
    return {"threads": threads, "repeats": repeats, "temperature": float(temperature), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(), "results": rows}


def card_temperature(card: Path, onnx_bytes: bytes) -> float:
    """The calibration temperature that the model card at ``card`` records for ``onnx_bytes``; a ``ValueError`` if
    the card is missing, has no temperature, or describes another ONNX file (its ``onnx_sha256``)."""
    found = read_json(card, "export", "calibration")
    calibration = found["calibration"]
    temperature = calibration.get("temperature") if isinstance(calibration, dict) else None
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"{card}: expected a positive calibration.temperature, found {temperature!r}")
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if found.get("onnx_sha256") != digest:
        raise ValueError(f"{card}: describes the ONNX file with sha256 {found.get('onnx_sha256')}, not the one given "
                         f"(sha256 {digest}); pass the card that export wrote beside it")
    return float(temperature)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.inference", description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=EXPORT_OUT / "model.onnx")
    parser.add_argument("--card", type=Path, default=EXPORT_OUT / "model_card.json",
                        help="the model card export wrote with --onnx: its calibration temperature")
    parser.add_argument("--batch", type=int, action="append", help="batch size; repeat for several (1, 64)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    onnx_bytes = args.onnx.read_bytes()
    try:
        temperature = card_temperature(args.card, onnx_bytes)
    except ValueError as exc:
        parser.error(str(exc))
    name, model_file, _ = choose(BASELINE_OUT, MLNT_OUT)
    net, saved = load_model(model_file)
    shape = (saved["in_channels"], saved["image_size"], saved["image_size"])
    report = compare_runtimes(net.eval(), onnx_bytes, shape, batches=tuple(args.batch or (1, 64)),
                              repeats=args.repeats, threads=args.threads, temperature=temperature)
    print(json.dumps({"model": name, "checkpoint": str(model_file), "onnx": str(args.onnx), "card": str(args.card),
                      **report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
