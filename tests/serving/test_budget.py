"""The per-request budget (``serving.budget``) and the binary extension checked against it, without a server: what
a request declares is refused before anything is unpacked, parsed by KServe or decoded."""

from __future__ import annotations

import json
import struct

import pytest

from serving.binary import unpack
from serving.budget import MAX_RANK, Budget, check_v1, check_v2, count
from serving.inputs import BadRequest, elements

BUDGET = Budget.for_input((1, 8, 8), images=16, pixels=4096 * 4096, body_bytes=65536)  # 1024 values


def v2(shape: object, datatype: object = "FP32", **tensor: object) -> dict:
    return {"inputs": [{"name": "images", "shape": shape, "datatype": datatype, **tensor}]}


def test_the_budget_of_a_model_counts_its_input_shape():
    assert (BUDGET.images, BUDGET.values, BUDGET.pixels, BUDGET.body_bytes) == (16, 1024, 4096 * 4096, 65536)
    rgb = Budget.for_input((3, 224, 224), images=256, pixels=1, body_bytes=1)  # every axis counts, channels too
    assert rgb.values == 256 * 3 * 224 * 224


@pytest.mark.parametrize("shape", [[16, 1, 8, 8], [0, 1, 8, 8], [1024], [2, 3, 8, 8], [1] * MAX_RANK])
def test_shapes_within_the_budget_pass_to_the_finer_checks(shape):
    check_v2(v2(shape), BUDGET)  # the wrong ones among them are refused later, with the input's own message


@pytest.mark.parametrize(("shape", "found"), [
    ([17, 1, 8, 8], "expected at most 1024 values in one request, found shape [17, 1, 8, 8] (1088 values)"),
    ([2**62, 2**62, 0], "expected the shape as a list of at most 8 integers from 0 to 1024, found [46116860184"),
    ([10**30], "found shape [1000000000000000000000000000000] (more than 10^18 values)"),
    ([-1, -64], "integers from 0 to 1024, found [-1, -64]"),
    ([0, 1025], "integers from 0 to 1024, found [0, 1025]"),  # declares nothing, but no dimension is over the budget
    ([1.0, 1, 8, 8], "found [1.0, 1, 8, 8]"),
    ([True, 1, 8, 8], "found [True, 1, 8, 8]"),
    ([1] * (MAX_RANK + 1), "found [1, 1, 1, 1, 1, 1, 1, 1, 1]"),
    ("1,1,8,8", "found '1,1,8,8'"),
    (None, "found None"),
])
def test_a_shape_that_declares_too_much_or_is_not_a_shape_is_refused(shape, found):
    with pytest.raises(BadRequest, match="input 'images': ") as refused:
        check_v2(v2(shape), BUDGET)
    assert found in str(refused.value)


def test_bytes_tensors_count_images_and_their_data_is_counted_too():
    check_v2(v2([16], "BYTES", data=["x"] * 16), BUDGET)
    with pytest.raises(BadRequest, match=r"expected at most 16 images in one request, found shape \[17\]"):
        check_v2(v2([17], "BYTES"), BUDGET)
    with pytest.raises(BadRequest, match="expected at most 16 images in one request, found more in its data"):
        check_v2(v2([1], "BYTES", data=[""] * 10**6), BUDGET)
    with pytest.raises(BadRequest, match="expected at most 1024 values in one request, found more in its data"):
        check_v2(v2([1, 1, 8, 8], data=[[0.0] * 64] * 17), BUDGET)


@pytest.mark.parametrize("datatype", [["FP32"], {"t": "FP32"}, 32, None, True])
def test_a_datatype_that_is_not_a_string_is_refused(datatype):
    with pytest.raises(BadRequest, match="input 'images': expected the datatype as a string such as FP32 or BYTES"):
        check_v2(v2([1, 1, 8, 8], datatype), BUDGET)


def test_v1_instances_are_counted_before_numpy_sees_them():
    check_v1({"instances": [[[[0.0] * 8] * 8]] * 16}, BUDGET)
    with pytest.raises(BadRequest, match="expected a batch of 1 to 16 images, found 17"):
        check_v1({"instances": [[0]] * 17}, BUDGET)
    with pytest.raises(BadRequest, match="expected at most 1024 values in one request's instances, found more"):
        check_v1({"instances": [[0.0] * 2000]}, BUDGET)
    check_v1({"instances": 5}, BUDGET)  # not a list: the v1 parser's own message


class FirstOnly(list):
    """A list of which counting may read the length and the first element only: walking it, or reading any other
    element, fails the test."""

    def __iter__(self):
        raise AssertionError("count walked a list: it may read its length and first element only")

    def __getitem__(self, index):
        if index != 0:
            raise AssertionError(f"count read element {index!r}: it may read the first element only")
        return super().__getitem__(0)

    def __reversed__(self):
        raise AssertionError("count walked a list backwards")

    def __contains__(self, item):
        raise AssertionError("count searched a list")


def tensor(*shape: int, leaf: object = 0.0) -> object:
    """Nested ``FirstOnly`` lists of ``shape`` (each level one list repeated, so a million rows cost nothing)."""
    return leaf if not shape else FirstOnly([tensor(*shape[1:], leaf=leaf)] * shape[0])


def test_counting_costs_the_depth_not_the_size():
    """Only the length and the first element of each level are read: the cost is the depth, whatever the size."""
    assert count([[1, 2], [3, 4], [5, 6]], 10) == 6
    assert count([], 10) == 0 and count(5.0, 10) == 1 and count(["png", "png"], 10) == 2
    assert count(tensor(3, 2), 10) == 6 and count(tensor(2, leaf="png"), 10) == 2 and count(tensor(0), 10) == 0
    assert count(tensor(10**6), 5) == 6  # longer than the budget: over it at once
    assert count(FirstOnly([FirstOnly()] * 10**6), 100) == 101  # a million empty lists: over the budget, not walked
    assert count(tensor(16, 1, 8, 8), 1024) == 1024  # a nested tensor of exactly the budget fits
    assert count(tensor(17, 1, 8, 8), 1024) > 1024
    assert count(tensor(200_704), 200_704) == 200_704  # a full Fashion-MNIST batch of 256, flat
    assert count(tensor(256, 1, 28, 28), 200_704) == 200_704  # and nested


def binary(meta: dict, raw: bytes, declared: str | None = None) -> tuple[bytes, bytes]:
    header = json.dumps({"inputs": [meta]}).encode()
    return header + raw, (declared if declared is not None else str(len(header))).encode("latin-1")


def test_a_binary_body_of_empty_elements_is_refused_after_the_declared_count():
    meta = {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 * 10**6}}
    with pytest.raises(BadRequest, match="input 'image': expected 1 elements as its shape declares, found more"):
        unpack(*binary(meta, b"\0" * 4 * 10**6), BUDGET)
    with pytest.raises(BadRequest, match=r"expected at most 16 images in one request, found shape \[1000000\]"):
        unpack(*binary({**meta, "shape": [10**6]}, b"\0" * 4 * 10**6), BUDGET)
    with pytest.raises(BadRequest, match="expected 2 elements as its shape declares, found more"):
        elements(struct.pack("<I", 0) * 3, "image", limit=2)


@pytest.mark.parametrize("declared", ["²", "³", "¹", "٣".encode().decode("latin-1"), "1e3", "-1", " 12"])
def test_a_binary_length_header_of_anything_but_ascii_digits_is_refused(declared):
    meta = {"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
    with pytest.raises(BadRequest, match="expected inference-header-content-length to be a byte count"):
        unpack(*binary(meta, b"\0" * 256, declared), BUDGET)


@pytest.mark.parametrize(("meta", "raw", "refused"), [
    ({"name": "images", "shape": [1, 1, 8, 8], "datatype": ["FP32"], "parameters": {"binary_data_size": 256}}, 256,
     "input 'images': expected the datatype as a string such as FP32 or BYTES, found list"),
    ({"name": "images", "shape": [2**62, 2**62, 0], "datatype": "FP32", "parameters": {"binary_data_size": 0}}, 0,
     r"input 'images': expected the shape as a list of at most 8 integers from 0 to 1024, found \[4611686018427387904"),
    ({"name": "images", "shape": [-2, -32, 1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 256}}, 256,
     r"input 'images': expected the shape as a list of at most 8 integers from 0 to 1024, found \[-2, -32, 1, 1\]"),
    ({"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": True}}, 256,
     "input 'images': expected binary_data_size to be at most the 256 bytes left after the JSON header, found True"),
    ({"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": -4}}, 256,
     "input 'images': expected binary_data_size to be at most the 256 bytes left after the JSON header, found -4"),
    ({"name": "images", "shape": [1, 1, 8, 8], "datatype": "BF16", "parameters": {"binary_data_size": 128}}, 128,
     r"input 'images': expected datatype FP32 \(a preprocessed tensor\) or BYTES \(encoded images\), found BF16"),
], ids=["datatype-list", "astronomical", "negative", "bool-size", "negative-size", "unknown-datatype"])
def test_a_binary_header_that_would_make_kserve_fail_is_a_client_error(meta, raw, refused):
    """Each body holds the raw bytes its header declares (``binary_data_size``): only the named flaw is wrong."""
    with pytest.raises(BadRequest, match=refused):
        unpack(*binary(meta, b"\0" * raw), BUDGET)
