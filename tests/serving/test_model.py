"""Loading the model (``serving.model.Classifier.load``): the ONNX graph must take and give what its card says, or
the predictor refuses to start, before it reports ready."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.release import ReleaseError
from tests.serving.conftest import CLASSES, VERSION, write_release
from tests.serving.inprocess import NAME, InProcess


def tiny_onnx(*, dtype: int = TensorProto.FLOAT, batch: str | int = "batch", classes: int = 4,
              class_names: list[str] = CLASSES) -> bytes:
    """A classifier graph of the card's input (``images`` [batch, 1, 8, 8]) and output (``probabilities``
    [batch, classes]): flatten, one matrix, softmax; an input of another ``dtype`` is cast to float first."""
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT)] if dtype != TensorProto.FLOAT else []
    nodes += [helper.make_node("Flatten", ["x" if nodes else "images"], ["flat"], axis=1),
              helper.make_node("MatMul", ["flat", "w"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, classes)).astype(np.float32), "w")
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", dtype, [batch, 1, 8, 8])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, classes])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.metadata_props.add(key="class_names", value=json.dumps(class_names))
    return model.SerializeToString()


def release_of(folder: Path, onnx: bytes | None = None, edit=None) -> Path:
    """A release (``write_release``) with ``onnx`` as its model and its card changed by ``edit``, rehashed: a card
    that vouches for its model's bytes, whatever else it says."""
    folder = write_release(folder)[0]
    if onnx is not None:
        (folder / "model.onnx").write_bytes(onnx)
    card = json.loads((folder / "model_card.json").read_text())
    if edit is not None:
        edit(card)
    card["onnx_sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def three_classes(card: dict) -> None:
    card["class_names"] = CLASSES[:3]
    del card["predicted_class_distribution"], card["train_class_distribution"]


def test_a_graph_that_takes_and_gives_what_its_card_says_is_served(tmp_path):
    predictor = InProcess(release_of(tmp_path / VERSION, tiny_onnx()))
    x = np.zeros((2, 1, 8, 8), np.float32)
    answer = predictor.request("POST", f"/v2/models/{NAME}/infer", json={"inputs": [
        {"name": "images", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert answer.status_code == 200, answer.text


GRAPH = re.escape("'probabilities' tensor(float) ['batch', 4]")


@pytest.mark.parametrize(("onnx", "edit", "message"), [
    (None, lambda c: c["output"].__setitem__("name", "probs"),
     rf"expected output 'probs' of type tensor\(float\) \(float32\) and shape \[batch, 4\] \(the batch axis dynamic\) "
     rf"as in the card, found {GRAPH}$"),
    (None, three_classes,
     r"expected output 'probabilities' of type tensor\(float\) \(float32\) and shape \[batch, 3\] \(the batch axis "
     rf"dynamic\) as in the card, found {GRAPH}$"),
    (tiny_onnx(classes=5), None,
     r"expected output 'probabilities' .* shape \[batch, 4\] .*, found 'probabilities' tensor\(float\) "
     r"\['batch', 5\]$"),
    (tiny_onnx(batch=1), None,
     r"expected input 'images' of type tensor\(float\) \(float32\) and shape \[batch, 1, 8, 8\] \(the batch axis "
     r"dynamic\) as in the card, found 'images' tensor\(float\) \[1, 1, 8, 8\]$"),
    (tiny_onnx(dtype=TensorProto.DOUBLE), None,
     r"expected input 'images' of type tensor\(float\) .*, found 'images' tensor\(double\) \['batch', 1, 8, 8\]$"),
    (tiny_onnx(class_names=CLASSES[::-1]), None,
     r"expected the card's class_names \['ant', 'bee', 'cat', 'dog'\] in its metadata, found "
     r"\['dog', 'cat', 'bee', 'ant'\]$"),
], ids=["output name", "fewer classes in the card", "more classes in the graph", "static batch", "float64 input",
        "classes reordered"])
def test_a_graph_that_differs_from_its_card_refuses_to_load_naming_both(tmp_path, onnx, edit, message):
    folder = release_of(tmp_path / VERSION, onnx, edit)
    with pytest.raises(ReleaseError, match=rf"^{folder / 'model.onnx'}: {message}"):
        InProcess(folder)
