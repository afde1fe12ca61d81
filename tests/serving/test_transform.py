"""The predictor prepares an encoded image exactly as training and evaluate prepared theirs: the model card's
``input.transform`` (written by ``components.export.input_transform`` from the ingest manifest) is read by
``serving.release`` and applied by ``serving.inputs.decode_image``; the images compared here are the ones the
pipeline's own code produced (the shards decoded by ``components.common.streaming``, an image folder ingested by
``components.formats.images.load_image``), pixel for pixel."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.fixtures import write_clothing1m
from components import ingest
from components.common.streaming import decode, open_split
from components.export import input_transform, interface
from components.formats.images import load_image
from serving.inputs import decode_image, decode_images
from serving.release import SHORT_SIDE, STRETCH, ReleaseError, Transform, spec_from_card

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# non-square, both orientations; 640x480 is the auditor's; 1600x1200 and 1000x700 decode at a JPEG draft scale
# (1/4, 1/2) at resize 256; 702x500 at 256/224 and 37x23 at 24 put the crop's corner at a half (round and floor
# differ by a pixel)
SIZES = [(640, 480), (480, 640), (1600, 1200), (1000, 700), (702, 500), (37, 23), (23, 61), (101, 50), (31, 31)]


def gradient_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG with a gradient across it and some texture, so that any shift, crop or stretch shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).normal(0.0, 20.0, (height, width, 1))
    pixels = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1) + noise
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def card_for(manifest: dict, size: int, channels: int = 3, normalisation: dict = IMAGENET) -> dict:
    """The fields of a model card the predictor reads, written by export's own functions."""
    meta = {"in_channels": channels, "image_size": size, "num_classes": 2, "normalisation": normalisation}
    return interface("small_cnn", ["a", "b"], meta, transform=input_transform(manifest, size))


def test_clothing1m_card_images_are_decoded_as_training_decodes_them():
    """A Clothing1M-style card (shards, resize 256, crop 224): every image, whatever its size or orientation, is the
    one ``streaming.decode`` gives training and evaluate (centre crop), where stretching it was far off."""
    card = card_for({"format": "shards", "transform": {"resize": 256, "crop": 224, **IMAGENET}}, 224)
    assert card["input"]["transform"] == {
        "method": SHORT_SIDE, "resize": 256, "crop": 224, "filter": "bilinear", "offset": "round",
        "jpeg_draft": True, "note": card["input"]["transform"]["note"]}
    spec = spec_from_card(card, Path("model_card.json"))
    assert spec.transform == Transform(SHORT_SIDE, "bilinear", 256, 224, "round", True)
    for width, height in SIZES[:5]:
        jpeg = gradient_jpeg(width, height)
        trained = decode(jpeg, resize=256, crop=224).permute(1, 2, 0).numpy()
        served = decode_image(jpeg, spec, "image 0")
        assert served.shape == (224, 224, 3) and np.array_equal(served, trained), (width, height)
        stretched = decode_image(jpeg, spec_from_card({**card, "input": _without_transform(card)}, Path("c")), "i")
        assert np.abs(stretched.astype(int) - trained).mean() > 5  # what the predictor served before


def test_served_images_equal_the_shards_evaluate_reads(tmp_path):
    """Through the real ingest: a Clothing1M fixture (JPEGs of varied sizes, some decoded at a draft scale) ingested
    into shards; the card export writes from that manifest makes the predictor's tensor of each test image equal to
    the one evaluate streams from the shards, uint8 pixels and normalised values."""
    root = write_clothing1m(tmp_path / "clothing1m", per_split=8, train=8)
    manifest = ingest.run(ingest.IngestConfig(dataset="clothing1m", path=str(root), image_size=16, resize=18,
                                              shard_size=64), out=tmp_path / "ingest")
    spec = spec_from_card(card_for(manifest, 16), tmp_path / "model_card.json")
    source = open_split(tmp_path / "ingest", "test", workers=0)
    blobs = [source.images.index.read(row) for row in range(len(source))]
    assert all(min(Image.open(io.BytesIO(b)).size) >= 2 * 18 for b in blobs)  # each decoded at a draft scale
    for row, blob in enumerate(blobs):
        pixels, _ = source.images[row, -1]
        assert np.array_equal(decode_image(blob, spec, f"image {row}"), pixels.permute(1, 2, 0).numpy()), row
    evaluated = np.concatenate([x.numpy() for x, _ in source.eval_batches(64)])
    np.testing.assert_allclose(decode_images(blobs, spec, 10**8), evaluated, rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [3, 1])
def test_imagefolder_card_images_equal_the_ingested_ones(tmp_path, channels):
    """An image folder of non-square JPEGs ingested at image_size 24: the predictor's image of each file is the
    ``train.npz`` image training and evaluate used (``load_image``: short side, centre crop at the floor)."""
    root = tmp_path / "folder"
    for k, (width, height) in enumerate(SIZES):
        for split in ("train", "test"):
            path = root / split / f"class{k % 2}" / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gradient_jpeg(width, height, seed=k))
    manifest = ingest.run(ingest.IngestConfig(dataset="imagefolder", path=str(root), image_size=24,
                                              channels=channels), out=tmp_path / "ingest")
    card = card_for(manifest, 24, channels, {"mean": [0.5] * channels, "std": [0.25] * channels})
    assert card["input"]["transform"]["offset"] == "floor" and card["input"]["transform"]["jpeg_draft"] is False
    spec = spec_from_card(card, tmp_path / "model_card.json")
    with np.load(tmp_path / "ingest" / "train.npz") as saved:
        images, keys = saved["images"], [str(key) for key in saved["keys"]]
    assert len(keys) == len(SIZES)
    for image, key in zip(images, keys, strict=True):
        assert np.array_equal(decode_image((root / key).read_bytes(), spec, key), image), key


def test_imagefolder_card_at_224_matches_load_image_for_the_auditors_jpeg(tmp_path):
    """The auditor's case: a 640x480 JPEG, image folder ingested at 224."""
    path = tmp_path / "x.jpg"
    path.write_bytes(gradient_jpeg(640, 480))
    spec = spec_from_card(card_for({"dataset": "imagefolder", "format": "arrays"}, 224), tmp_path / "card.json")
    assert np.array_equal(decode_image(path.read_bytes(), spec, "image 0"), load_image(path, channels=3, size=224))


def test_cards_without_a_crop_resize_images_as_before():
    """A dataset stored at its final size (Fashion-MNIST) and a card written before ``input.transform`` existed:
    an image of the input size is used as it is, any other resized to it (bilinear), as the predictor always did."""
    stretch = card_for({"dataset": "fashion-mnist", "format": "arrays"}, 28, 1, {"mean": [0.3], "std": [0.35]})
    assert stretch["input"]["transform"]["method"] == STRETCH
    old = {**stretch, "input": _without_transform(stretch)}
    jpeg = gradient_jpeg(40, 30)
    want = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    for card in (stretch, old):
        spec = spec_from_card(card, Path("model_card.json"))
        assert spec.transform == Transform()
        assert np.array_equal(decode_image(jpeg, spec, "image 0")[..., 0], want)
    same = io.BytesIO()
    Image.fromarray(want).save(same, "PNG")
    assert np.array_equal(decode_image(same.getvalue(), spec, "image 0")[..., 0], want)


@pytest.mark.parametrize("name", ["nearest", "bicubic", "lanczos"])
def test_a_cards_resize_filter_is_the_one_the_predictor_uses(name):
    card = card_for({"dataset": "fashion-mnist", "format": "arrays"}, 28, 1, {"mean": [0.3], "std": [0.35]})
    card["input"]["transform"]["filter"] = name
    spec = spec_from_card(card, Path("model_card.json"))
    jpeg = gradient_jpeg(40, 30)
    want = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L").resize((28, 28), Image.Resampling[name.upper()]))
    assert np.array_equal(decode_image(jpeg, spec, "image 0")[..., 0], want)


@pytest.mark.parametrize("transform, found", [
    ("crop", "found str"),
    ({"method": "letterbox"}, "found method 'letterbox', filter 'bilinear'"),
    ({"method": SHORT_SIDE, "filter": "sinc"}, "found method 'short side, then centre crop', filter 'sinc'"),
    ({"method": SHORT_SIDE, "resize": 256, "crop": 200, "offset": "round", "jpeg_draft": True},
     "found resize 256, crop 200, offset 'round', jpeg_draft True"),
    ({"method": SHORT_SIDE, "resize": 200, "crop": 224, "offset": "round", "jpeg_draft": True},
     "found resize 200, crop 224"),
    ({"method": SHORT_SIDE, "resize": 256, "crop": 224, "offset": "ceil", "jpeg_draft": True}, "offset 'ceil'"),
    ({"method": SHORT_SIDE, "resize": 256, "crop": 224, "offset": "round"}, "jpeg_draft None"),
])
def test_a_transform_the_predictor_cannot_apply_is_refused_at_load(transform, found):
    """Serving a model with images unlike its training images would be silently wrong: the release is refused."""
    card = card_for({"format": "shards", "transform": {"resize": 256, "crop": 224, **IMAGENET}}, 224)
    card["input"]["transform"] = transform
    with pytest.raises(ReleaseError, match=r"model_card\.json: expected input\.transform") as err:
        spec_from_card(json.loads(json.dumps(card)), Path("model_card.json"))
    assert found in str(err.value)


def _without_transform(card: dict) -> dict:
    return {k: v for k, v in card["input"].items() if k != "transform"}


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_png_is_served_as_ingest_reads_it(tmp_path, channels):
    """A 16-bit image keeps its high byte in the predictor as in ingest (``to_8_bits``); ``convert`` alone clipped
    it at 255, so most of it came out white."""
    ramp = (np.arange(24 * 24, dtype=np.uint32).reshape(24, 24) * 65535 // (24 * 24 - 1)).astype(np.uint16)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    card = card_for({"format": "npz"}, 24, channels, {"mean": [0.0] * channels, "std": [1.0] * channels})
    served = decode_image(path.read_bytes(), spec_from_card(card, Path("model_card.json")), "image 0")
    ingested = load_image(path, channels=channels, size=24)
    assert np.array_equal(served, ingested.reshape(served.shape))
    assert served.max() == 255 and served.mean() == pytest.approx(127.5, abs=1)


def _webp(frames: list[Image.Image], **options) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=len(frames) > 1, append_images=frames[1:], **options)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [3, 1])
def test_a_webp_is_served_as_ingest_reads_it(tmp_path, channels):
    """WEBP, the web's usual format for product photos, which ingest reads from an image folder, is taken by the
    predictor too, prepared pixel for pixel as ``load_image`` prepared the training images: lossy, lossless with an
    alpha channel (dropped, the colour under it kept), and animated (its first frame)."""
    photo = Image.open(io.BytesIO(gradient_jpeg(61, 37)))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    cases = {"lossy": _webp([photo], quality=80), "alpha": _webp([rgba], lossless=True),
             "animated": _webp([photo, Image.new("RGB", photo.size, "white")], duration=100, loop=0)}
    card = card_for({"dataset": "imagefolder", "format": "arrays"}, 24, channels,
                    {"mean": [0.5] * channels, "std": [0.25] * channels})
    spec = spec_from_card(card, tmp_path / "model_card.json")
    for name, blob in cases.items():
        path = tmp_path / f"{name}.webp"
        path.write_bytes(blob)
        served = decode_image(blob, spec, "image 0")
        assert np.array_equal(served, load_image(path, channels=channels, size=24)), name
    assert decode_image(cases["animated"], spec, "image 0").std() > 10  # the gradient, not the white second frame


@pytest.mark.parametrize("channels", [1, 3])
def test_a_jpeg_with_a_multi_picture_segment_is_served_as_ingest_reads_it(tmp_path, channels):
    """Pillow names a JPEG carrying a Multi-Picture segment (cameras' large thumbnails, HDR gain maps) MPO: ingest
    read such a .jpg, and the predictor refused it as 'found MPO', the client's JPEG not a JPEG to it."""
    photo = Image.open(io.BytesIO(gradient_jpeg(61, 37)))
    buffer = io.BytesIO()
    photo.save(buffer, "MPO", save_all=True, append_images=[photo.rotate(90)])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    path = tmp_path / "camera.jpg"
    path.write_bytes(buffer.getvalue())
    card = card_for({"dataset": "imagefolder", "format": "arrays"}, 24, channels,
                    {"mean": [0.5] * channels, "std": [0.25] * channels})
    served = decode_image(buffer.getvalue(), spec_from_card(card, tmp_path / "model_card.json"), "image 0")
    assert np.array_equal(served, load_image(path, channels=channels, size=24))
