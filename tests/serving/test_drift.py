"""The drift window (``serving.drift``): total variation to the training shares, on a window no one client fills."""

from __future__ import annotations

import pytest

from serving.drift import DriftWindow

SHARES = [0.25, 0.25, 0.25, 0.25]


def digests(*names: str) -> list[bytes]:
    return [name.encode() for name in names]


def test_a_window_still_filling_counts_its_empty_slots_as_the_training_distribution():
    drift = DriftWindow(SHARES, size=10)
    assert drift.add([0]) == pytest.approx(0.1 * 0.75)  # one slot of ten holds class 0: 1/10 of TV 0.75
    assert drift.add([0] * 9) == pytest.approx(0.75)  # full, all class 0


def test_one_client_holds_at_most_its_share_of_the_window():
    drift = DriftWindow(SHARES, size=100, client_share=0.1)
    for _ in range(50):  # 500 distinct images, all class 0, from one client
        drift.add([0] * 10, client="10.0.0.9")
    assert len(drift.entries) == 10 and drift.distance() == pytest.approx(0.1 * 0.75)
    for k in range(20):  # twenty other clients, each sending the training mix
        drift.add([0, 1, 2, 3], client=f"10.0.1.{k}")
    assert len(drift.entries) == 90 and drift.distance() <= 0.1


def test_a_clients_new_predictions_replace_its_own_oldest():
    drift = DriftWindow(SHARES, size=10, client_share=0.3)
    drift.add([1, 1, 1], client="a")
    drift.add([2, 2], client="b")
    drift.add([0], client="a")  # a is at its cap of 3: its oldest 1 goes, b keeps both
    assert drift.counts.tolist() == [1, 2, 2, 0] and len(drift.entries) == 5


def test_the_same_image_is_counted_once_while_it_is_in_the_window():
    drift = DriftWindow(SHARES, size=8)
    for _ in range(100):
        drift.add([3, 3], digests=digests("boot", "boot"))
    assert drift.counts.tolist() == [0, 0, 0, 1]
    drift.add([0] * 8, digests=digests(*"abcdefgh"))  # slides the boot out of the window
    drift.add([3], digests=digests("boot"))  # and so it counts again
    assert drift.counts.tolist() == [7, 0, 0, 1]


def test_many_clients_see_the_whole_drift():
    drift = DriftWindow(SHARES, size=100, client_share=0.1)
    for k in range(20):
        drift.add([0] * 5, client=f"c{k}")
    assert drift.distance() == pytest.approx(0.75)  # a real shift to class 0, reported in full


def test_the_window_slides_and_keeps_its_bookkeeping():
    drift = DriftWindow(SHARES, size=5, client_share=0.4)
    for k in range(40):
        drift.add([k % 4], client=f"c{k % 3}", digests=[bytes([k])])
        assert drift.counts.sum() == len(drift.entries) == sum(len(q) for q in drift.by_client.values())
        assert len(drift.digests) == len(drift.entries) <= 5
        assert all(len(q) <= 2 for q in drift.by_client.values())


@pytest.mark.parametrize(("size", "share", "message"), [
    (0, 0.1, "expected at least 1 prediction, found 0"),
    (10, 0.0, r"expected a client share in \(0, 1\], found 0.0"),
    (10, 1.5, r"expected a client share in \(0, 1\], found 1.5"),
])
def test_bad_settings_are_refused(size, share, message):
    with pytest.raises(ValueError, match=message):
        DriftWindow(SHARES, size=size, client_share=share)


def test_the_predictor_hands_each_images_digest_to_the_window(release):
    """The same image sent again moves the drift gauge once: the model passes every image's digest to the window,
    which the window's own tests take as given."""
    from tests.serving.inprocess import NAME, InProcess  # noqa: PLC0415

    predictor = InProcess(release[0])
    image = {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}
    assert predictor.request("POST", f"/v2/models/{NAME}/infer", json=image).status_code == 200
    once = predictor.sample("mlnt_prediction_drift")
    assert predictor.request("POST", f"/v2/models/{NAME}/infer", json=image).status_code == 200
    assert predictor.sample("mlnt_prediction_drift") == once
