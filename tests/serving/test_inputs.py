"""Request decoding and validation without a server: the same preprocessing as training, one-sentence errors."""

from __future__ import annotations

import base64
import io
import json
import re
import struct

import numpy as np
import pytest
from kserve import InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from PIL import Image

from components.common.splits import normalise as training_normalise
from serving.binary import unpack as unpack_within
from serving.budget import Budget, check_v2
from serving.drift import DriftWindow
from serving.inputs import (
    BadRequest,
    Encoded,
    decode_image,
    decode_images,
    elements,
    image_size,
    normalise,
    v1_batch,
    v2_batch,
)
from serving.release import SHORT_SIDE, InputSpec, Transform
from tests.serving.conftest import CORRUPT_PNGS, png_chunk

GREY = InputSpec(name="images", channels=1, height=8, width=8, mean=(0.3,), std=(0.35,), output="probabilities",
                 class_names=("a", "b"))
RGB = InputSpec(name="images", channels=3, height=4, width=4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                output="probabilities", class_names=("a", "b"))
CLOTHING1M = InputSpec(name="images", channels=3, height=224, width=224, mean=(0.5,) * 3, std=(0.25,) * 3,
                       output="probabilities", class_names=("a", "b"),
                       transform=Transform(SHORT_SIDE, "bilinear", 256, 224, "round", True))


BUDGET = Budget.for_input(GREY.shape, images=4, pixels=10_000, body_bytes=65536)


def unpack(body: bytes, declared: bytes) -> tuple[bytes, int]:
    return unpack_within(body, declared, BUDGET)


@pytest.mark.parametrize("spec", [GREY, RGB])
def test_normalisation_is_trainings_bit_for_bit(spec):
    pixels = np.random.default_rng(0).integers(0, 256, (5, spec.height, spec.width, spec.channels), dtype=np.uint8)
    want = training_normalise(pixels, list(spec.mean), list(spec.std)).numpy()
    assert np.array_equal(normalise(pixels, spec), want)


def test_images_are_converted_to_the_cards_channels_and_size():
    rgb = np.random.default_rng(1).integers(0, 256, (10, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    grey = decode_image(buffer.getvalue(), GREY, "image 0")
    want = np.asarray(Image.fromarray(rgb).convert("L").resize((8, 8), Image.Resampling.BILINEAR))
    assert grey.shape == (8, 8, 1) and np.array_equal(grey[..., 0], want)
    assert decode_image(buffer.getvalue(), RGB, "image 0").shape == (4, 4, 3)


def test_other_image_formats_are_refused():
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "BMP")
    with pytest.raises(BadRequest, match="image 0: expected a PNG, JPEG or WEBP image of at most 16777216 pixels, "
                                         "found BMP 8x8"):
        decode_image(buffer.getvalue(), GREY, "image 0")


def test_v2_and_v1_tensors_are_checked():
    x = np.ones((2, 1, 8, 8), np.float32)
    request = InferRequest("m", [InferInput("images", [2, 1, 8, 8], "FP32", data=x.ravel().tolist())])
    assert np.array_equal(v2_batch(request, GREY, 4), x)
    assert np.array_equal(v1_batch({"instances": x.tolist()}, GREY, 4), x)
    two = InferRequest("m", [request.inputs[0], request.inputs[0]])
    with pytest.raises(BadRequest, match=r"expected one input \('images' FP32 \[N, 1, 8, 8\] or a BYTES \[N\] input "
                                         r"of base64 PNG/JPEG/WEBP images\), found 2"):
        v2_batch(two, GREY, 4)
    with pytest.raises(BadRequest, match="expected a batch of 1 to 1 images, found 2"):
        v1_batch({"instances": x.tolist()}, GREY, 1)
    with pytest.raises(BadRequest, match="expected instances all of one kind"):
        v1_batch({"instances": [x[0].tolist(), {"image": {"b64": ""}}]}, GREY, 4)
    with pytest.raises(BadRequest, match="expected finite numbers, found NaN or infinity"):
        v1_batch({"instances": np.full((1, 1, 8, 8), 1e39).tolist()}, GREY, 4)  # beyond float32: infinity
    with pytest.raises(BadRequest, match=r"expected a JSON object with an 'instances' list, found a JSON list"):
        v1_batch(b"[1, 2]", GREY, 4)


def test_encoded_images_are_decoded_within_the_pixel_budget():
    blobs = []
    for size in ((8, 8), (20, 10)):
        buffer = io.BytesIO()
        Image.new("L", size).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    assert decode_images(blobs, GREY, 8 * 8 + 20 * 10).shape == (2, 1, 8, 8)
    with pytest.raises(BadRequest, match=r"expected encoded images of at most 263 pixels in one request \(width x "
                                         r"height summed\), found 264 in 2 images"):
        decode_images(blobs, GREY, 263)
    with pytest.raises(BadRequest, match="image 1: expected PNG, JPEG or WEBP bytes, found 5 bytes"):
        decode_images([blobs[0], b"hello"], GREY, 10**6)  # every header is read before anything is decoded


BROKEN_CHUNK = r"broken PNG file \(chunk b'\\x01\\x02\\x03\\x04'\)"  # Pillow's SyntaxError, quoting the junk type


@pytest.mark.parametrize(("case", "why"), [("IHDR of 4 bytes", "Truncated IHDR chunk"),
                                          ("IDAT cut, junk chunk", BROKEN_CHUNK)])
def test_a_png_with_a_corrupt_body_is_bytes_that_are_not_a_readable_image(case, why):
    blob = CORRUPT_PNGS[case]
    with pytest.raises(BadRequest, match=rf"^image 0: expected PNG, JPEG or WEBP bytes, found {len(blob)} bytes that "
                                         rf"are not a readable image \(starting .*: {why}\)$"):
        decode_images([blob], GREY, 10**6)
    if case == "IDAT cut, junk chunk":  # its header reads well: it fails in the decoding, after the pixel budget
        assert image_size(blob, "image 0") == (8, 8)
        with pytest.raises(BadRequest, match="image 3: expected PNG, JPEG or WEBP bytes"):
            decode_image(blob, RGB, "image 3")


@pytest.mark.parametrize(("data", "found"), [(["0.5"] * 64, "strings"), ([True] * 64, "booleans"),
                                             ([0.5] * 63 + [False], "booleans"), ([0.5] * 63 + [None], "nulls"),
                                             ([[0.5] * 32, ["0.5"] * 32], "strings"), ("0.5", "strings")])
def test_values_that_are_not_json_numbers_are_refused_though_numpy_would_read_them(data, found):
    message = f"expected numbers in nested lists of equal length, found other values \\({found}\\)"
    with pytest.raises(BadRequest, match=f"^input 'images': {message}$"):
        v2_batch(InferRequest("m", [InferInput("images", [1, 1, 8, 8], "FP32", data=data)]), GREY, 4)
    if isinstance(data, list) and len(data) == 64:
        with pytest.raises(BadRequest, match=f"^instances: {message}$"):
            v1_batch({"instances": [[data[i * 8:(i + 1) * 8] for i in range(8)]]}, GREY, 4)
    assert v2_batch(InferRequest("m", [InferInput("images", [1, 1, 8, 8], "FP32", data=[0, 1.5] * 32)]), GREY,
                    4).dtype == np.float32  # JSON integers are numbers


def test_the_drift_window_slides_and_measures_total_variation():
    drift = DriftWindow([0.5, 0.5], size=4)
    assert drift.distance() == 0.0
    assert drift.add([0, 1]) == 0.0
    assert drift.add([0, 0]) == pytest.approx(0.25)  # window 0 1 0 0: shares 0.75, 0.25
    assert drift.add([0, 0]) == pytest.approx(0.5)  # window 0 0 0 0
    assert drift.add([1, 1, 1, 1]) == pytest.approx(0.5)  # window 1 1 1 1
    with pytest.raises(ValueError, match="drift window: expected at least 1 prediction, found 0"):
        DriftWindow([1.0], size=0)


def binary_body(raw_bytes: bytes, raw_floats: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    header = json.dumps({"inputs": [
        {"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw_bytes)}},
        {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": len(raw_floats)}}]})
    return header.encode() + raw_bytes + raw_floats + extra, str(len(header)).encode()


def test_binary_bytes_tensors_move_into_the_json_header():
    one = np.float32(1.0).tobytes()
    body, length = unpack(*binary_body(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c", one))
    inputs = json.loads(body[:length])["inputs"]
    assert inputs[0]["data"] == ["YWI=", "Yw=="] and "binary_data_size" not in inputs[0]["parameters"]
    assert inputs[1]["parameters"] == {"binary_data_size": 4} and body[length:] == one
    with pytest.raises(BadRequest, match="expected BYTES elements each prefixed by its 4-byte little-endian length, "
                                         "found an element of 100 bytes with 3 left"):
        unpack(*binary_body(struct.pack("<I", 100) + b"abc", one))
    with pytest.raises(BadRequest, match=r"input 'x': expected 4 bytes for FP32 \[1\], found 8"):
        unpack(*binary_body(b"", one + one))
    with pytest.raises(BadRequest, match="expected 4 bytes of binary tensor data after the JSON header, found 5"):
        unpack(*binary_body(b"", one, b"!"))


def grpc_request(datatype: str, shape: list[int], raw: bytes, name: str = "images") -> InferRequest:
    """What KServe's servicer hands the model for a gRPC message with raw_input_contents."""
    return InferRequest.from_grpc(pb.ModelInferRequest(model_name="m", raw_input_contents=[raw], inputs=[
        pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)]))


def test_grpc_raw_contents_are_read_and_checked_like_json_data():
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(v2_batch(grpc_request("FP32", [2, 1, 8, 8], x.tobytes()), GREY, 4), x)
    with pytest.raises(BadRequest, match=r"input 'images': expected 512 bytes of raw FP32 contents for shape "
                                         r"\[2, 1, 8, 8\], found 511"):
        v2_batch(grpc_request("FP32", [2, 1, 8, 8], x.tobytes()[:-1]), GREY, 4)
    with pytest.raises(BadRequest, match=r"expected a batch of 1 to 1 images, found 2"):
        v2_batch(grpc_request("FP32", [2, 1, 8, 8], x.tobytes()), GREY, 1)
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, "PNG")
    raw = struct.pack("<I", len(png.getvalue())) + png.getvalue()
    encoded = v2_batch(grpc_request("BYTES", [1], raw, name="image"), GREY, 4)
    assert encoded == Encoded((png.getvalue(),)) and decode_images(encoded.blobs, GREY, 64).shape == (1, 1, 8, 8)
    with pytest.raises(BadRequest, match=r"input 'image': expected 2 elements for shape \[2\], found 1"):
        v2_batch(grpc_request("BYTES", [2], raw, name="image"), GREY, 4)


def test_a_v2_request_with_no_input_is_refused_as_one():
    with pytest.raises(BadRequest, match=r"expected one input \('images' FP32 \[N, 1, 8, 8\] or a BYTES \[N\] input "
                                         r"of base64 PNG/JPEG/WEBP images\), found 0"):
        v2_batch(InferRequest("m", []), GREY, 4)


@pytest.mark.parametrize("shape", [[0], [5]])
def test_a_bytes_input_holds_1_to_max_batch_images_over_grpc_too(shape):
    raw = struct.pack("<I", 1) + b"x"  # never read: the shape alone is refused
    with pytest.raises(BadRequest, match=f"^expected a batch of 1 to 4 images, found {shape[0]}$"):
        v2_batch(grpc_request("BYTES", shape, raw * max(shape[0], 1), name="image"), GREY, 4)


def test_more_raw_bytes_elements_than_the_shape_declares_are_refused_as_soon_as_seen():
    raw = struct.pack("<I", 1) + b"x" + struct.pack("<I", 0)
    with pytest.raises(BadRequest, match=r"^input 'image': expected 1 elements as its shape declares, found more$"):
        v2_batch(grpc_request("BYTES", [1], raw, name="image"), GREY, 4)


def test_a_v2_bytes_element_that_is_not_base64_is_named_by_its_index():
    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, "PNG")
    good = base64.b64encode(png.getvalue()).decode()
    request = InferRequest("m", [InferInput("image", [2], "BYTES", data=[good, "not base64!"])])
    with pytest.raises(BadRequest, match=r"^input 'image' element 1: expected base64 text of a PNG, JPEG or WEBP "
                                         r"image, found str that is not base64$"):
        v2_batch(request, GREY, 4)


@pytest.mark.parametrize(("body", "found"), [({"instances": 5}, "'instances' as a JSON number"),
                                             ({"instances": 0.5}, "'instances' as a JSON number"),
                                             ({"instances": "x"}, "'instances' as a JSON string"),
                                             ({"instances": {"image": {"b64": ""}}}, "'instances' as a JSON object"),
                                             ({"instances": None}, "'instances' as a JSON null"),
                                             ({"instances": True}, "'instances' as a JSON boolean"),
                                             ({"instances": "x", "z": []}, "'instances' as a JSON string"),
                                             ({"z": [], "a": []}, "keys ['a', 'z']")])
def test_a_v1_body_without_an_instances_list_is_refused_naming_what_it_has(body, found):
    """Without 'instances', its keys, sorted; with 'instances' of another type than a list, that type."""
    message = f"expected a JSON object with an 'instances' list, found {found}"
    with pytest.raises(BadRequest, match=f"^{re.escape(message)}$"):
        v1_batch(body, GREY, 4)


GRPC_READABLE = {"BOOL", "UINT8", "INT32", "FP16", "FP64"}  # among those below (kserve.protocol.infer_type.get_content)


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "fp16", "INT32", "FP64", "UINT8", "BOOL", "STRING"])
def test_a_datatype_the_model_does_not_take_gets_one_message_as_json_binary_or_grpc(datatype):
    """FP16 sent as JSON was KServe's own 400, advising the binary format (which the model refuses too), logged with a
    traceback: the datatype is checked before KServe parses the body (``check_v2``, the JSON body and the binary
    header alike), with the message the model's own check gives a gRPC request."""
    message = (f"^input 'images': expected datatype FP32 \\(a preprocessed tensor\\) or BYTES \\(encoded images\\), "
               f"found {datatype}$")
    tensor = {"name": "images", "shape": [1, 1, 8, 8], "datatype": datatype}
    with pytest.raises(BadRequest, match=message):
        check_v2({"inputs": [{**tensor, "data": [0.0] * 64}]}, BUDGET)
    with pytest.raises(BadRequest, match=message):
        unpack(*binary_header({**tensor, "data": [0.0] * 64}))  # data in the header: KServe's FP16 refusal too
    with pytest.raises(BadRequest, match=message):
        unpack(*binary_header({**tensor, "parameters": {"binary_data_size": 128}}, b"\0" * 128))
    if datatype in GRPC_READABLE:  # the others KServe's gRPC servicer refuses itself, before the model
        with pytest.raises(BadRequest, match=message):
            v2_batch(grpc_request(datatype, [1, 1, 8, 8], b"\0" * 128), GREY, 4)


@pytest.mark.parametrize("datatype", ["FP32", "fp32", "BYTES", "bytes"])
def test_the_datatypes_the_model_takes_pass_in_any_case_as_kserve_reads_them(datatype):
    shape = [1] if datatype.upper() == "BYTES" else [1, 1, 8, 8]
    check_v2({"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": []}]}, BUDGET)


def binary_header(tensor: dict, raw: bytes = b"") -> tuple[bytes, bytes]:
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + raw, str(len(header)).encode()


@pytest.mark.parametrize(("chunk", "items", "refused"), [
    (struct.pack("<I", 0), [b""], None),  # an empty element, last: four bytes of length, none of data
    (struct.pack("<I", 1) + b"a" + struct.pack("<I", 0), [b"a", b""], None),
    (struct.pack("<I", 1) + b"a" + b"!", None, r"found 1 byte\(s\) at byte 5, too few for a length"),  # one byte over
    (b"ab", None, r"found 2 byte\(s\) at byte 0, too few for a length"),  # a length cut short
    (struct.pack("<I", 3) + b"ab", None, r"found an element of 3 bytes with 2 left"),
])
def test_binary_bytes_elements_are_read_to_the_last_byte(chunk, items, refused):
    if refused is None:
        assert elements(chunk, "image", limit=2) == items
    else:
        with pytest.raises(BadRequest, match=rf"^input 'image': expected BYTES elements each prefixed by its 4-byte "
                                             rf"little-endian length, {refused}$"):
            elements(chunk, "image", limit=2)


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR (8-bit greyscale) with an empty IDAT: enough for its size to be read."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", b"") + png_chunk(b"IEND", b""))


def test_an_image_over_4096_x_4096_pixels_is_refused_from_its_header():
    assert image_size(png_header(4096, 4096), "image 0") == (4096, 4096)
    with pytest.raises(BadRequest, match=r"^image 2: expected a PNG, JPEG or WEBP image of at most 16777216 pixels, "
                                         r"found PNG 4097x4096$"):
        image_size(png_header(4097, 4096), "image 2")


def test_bytes_that_are_not_an_image_are_quoted_by_their_first_8():
    with pytest.raises(BadRequest, match=r"^image 0: expected PNG, JPEG or WEBP bytes, found 11 bytes that are not a "
                                         r"readable image \(starting b'hello wo'\)$"):
        decode_images([b"hello world"], GREY, 10**6)


def test_encoded_images_need_a_model_of_1_or_3_channels():
    four = InputSpec(name="images", channels=4, height=8, width=8, mean=(0.5,) * 4, std=(0.5,) * 4,
                     output="probabilities", class_names=("a", "b"))
    png = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(png, "PNG")
    with pytest.raises(BadRequest, match=r"^image 0: expected a model with 1 or 3 channels for encoded images, "
                                         r"found 4; send a preprocessed tensor instead$"):
        decode_image(png.getvalue(), four, "image 0")


@pytest.mark.parametrize("body", [True, False])
def test_a_v1_body_that_is_a_json_boolean_is_named_so(body):
    with pytest.raises(BadRequest, match=r"^expected a JSON object with an 'instances' list, found a JSON boolean$"):
        v1_batch(body, GREY, 4)


@pytest.mark.parametrize("instance", [{"image": {"url": "x"}}, {"image": {}}, {"picture": {"b64": ""}}])
def test_a_v1_encoded_instance_without_its_b64_field_is_refused(instance):
    keys = re.escape(str(sorted(instance)))
    with pytest.raises(BadRequest, match=rf'^instance 0: expected {{"image": {{"b64": "<base64 PNG/JPEG/WEBP>"}}}}, '
                                         rf"found keys {keys}$"):
        v1_batch({"instances": [instance]}, GREY, 4)


def test_v2_json_numbers_beyond_float32_are_refused_like_v1_ones():
    request = InferRequest("m", [InferInput("images", [1, 1, 8, 8], "FP32", data=[1e39] + [0.0] * 63)])
    with pytest.raises(BadRequest, match=r"^expected finite numbers, found NaN or infinity$"):
        v2_batch(request, GREY, 4)


@pytest.mark.parametrize("count", [63, 65])
def test_v2_data_must_fill_its_shape_exactly(count):
    request = InferRequest("m", [InferInput("images", [1, 1, 8, 8], "FP32", data=[0.5] * count)])
    with pytest.raises(BadRequest, match=rf"^input 'images': expected 64 values for shape \[1, 1, 8, 8\], "
                                         rf"found {count}$"):
        v2_batch(request, GREY, 4)


@pytest.mark.parametrize("size", [252, 260, 258])
def test_grpc_raw_fp32_contents_must_fill_their_shape_exactly(size):
    with pytest.raises(BadRequest, match=rf"^input 'images': expected 256 bytes of raw FP32 contents for shape "
                                         rf"\[1, 1, 8, 8\], found {size}$"):
        v2_batch(grpc_request("FP32", [1, 1, 8, 8], b"\0" * size), GREY, 4)


def test_a_string_deep_in_a_full_batch_of_nested_lists_is_refused():
    x = np.zeros((16, 1, 8, 8)).tolist()
    x[15][0][7][7] = "0.5"  # numpy would read it as a number
    with pytest.raises(BadRequest, match=r"^instances: expected numbers in nested lists of equal length, found other "
                                         r"values \(strings\)$"):
        v1_batch({"instances": x}, GREY, 16)
    with pytest.raises(BadRequest, match=r"^input 'images': expected numbers in nested lists"):
        v2_batch(InferRequest("m", [InferInput("images", [16, 1, 8, 8], "FP32", data=x)]), GREY, 16)


def _jpeg_header(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    return bytes(data)


def _webp_header(width: int, height: int) -> bytes:
    """A small lossless WEBP whose header (VP8L: 14 bits each for width - 1 and height - 1) declares ``width`` x
    ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    at = data.index(b"VP8L") + 9  # past the chunk's tag, its size and the signature byte 0x2f
    kept = struct.unpack_from("<I", data, at)[0] & 0xF0000000  # the alpha bit and the version
    struct.pack_into("<I", data, at, kept | (width - 1) | (height - 1) << 14)
    return bytes(data)


@pytest.mark.parametrize(("blob", "found"), [(png_header(14000, 14000), "PNG 14000x14000"),
                                             (_jpeg_header(20000, 15000), "JPEG 20000x15000"),
                                             (_webp_header(5000, 4000), "WEBP 5000x4000"),
                                             (_webp_header(16383, 16383), "268402689 pixels")])
def test_an_image_over_pillows_own_limit_gets_the_same_answer_as_any_image_over_4096_x_4096(blob, found):
    """Pillow refuses a header of more than 2 x its ``MAX_IMAGE_PIXELS`` (about 179 megapixels) itself, before
    ``_check_header`` sees it: docs/serving.md promises the one answer for every image over 4096 x 4096, whether its
    size is read or the image decoded. A WEBP's plugin refuses such a header itself, so its answer names the pixels
    Pillow counted (16383 x 16383, the largest a WEBP can declare)."""
    message = rf"^image 0: expected a PNG, JPEG or WEBP image of at most 16777216 pixels, found {found}$"
    with pytest.raises(BadRequest, match=message):
        image_size(blob, "image 0")
    with pytest.raises(BadRequest, match=message):
        decode_image(blob, RGB, "image 0")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_thin_image_is_refused_before_its_short_side_resize_makes_gigabytes():
    """An 8192 x 1 PNG is 8192 pixels to decode, but its short side resized to 256 makes 2097152 x 256 before the crop
    (1.5 GiB): each image counts the pixels its resize makes where they are more than its own, before any decoding."""
    with pytest.raises(BadRequest, match=r"^image 1: expected an image whose short side resized to 256 makes at most "
                                         r"16777216 pixels, found 8192x1 \(2097152x256 = 536870912 pixels\)$"):
        decode_images([png(8, 8), png_header(8192, 1)], CLOTHING1M, 4 * 4096 * 4096)
    thin = png(64, 1)  # 16384 x 256 = 4194304 pixels once resized
    assert decode_images([thin], CLOTHING1M, 4194304).shape == (1, 3, 224, 224)
    with pytest.raises(BadRequest, match=r"^expected encoded images of at most 4194303 pixels in one request \(width x "
                                         r"height summed, or what resizing the short side to 256 makes where more\), "
                                         r"found 4194304 in 1 images$"):
        decode_images([thin], CLOTHING1M, 4194303)
    assert decode_images([png(640, 480)], CLOTHING1M, 640 * 480).shape == (1, 3, 224, 224)  # resized to 341 x 256
