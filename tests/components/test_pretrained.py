import hashlib
import socket
import urllib.error

import pytest
import torch
from torchvision.models import ResNet50_Weights, resnet50

from components.common import pretrained
from components.common.pretrained import PretrainedWeightsError, imagenet_weights, weights_file
from model.networks import build_network


def test_without_network_or_cache_the_step_fails_naming_the_file_and_where_to_put_it(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsError) as caught:
        imagenet_weights("resnet50")
    message = str(caught.value)
    assert "\n" not in message
    assert str(weights_file("resnet50")) in message and "resnet50-0676ba61.pth" in message  # the V1 file
    assert "pretrained: false" in message


def test_cached_weights_are_used(monkeypatch):
    state = resnet50(weights=None).state_dict()
    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", lambda *a, **k: state)
    net = build_network("resnet50", 3, pretrained=imagenet_weights("resnet50"))
    torch.testing.assert_close(net.body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_networks_without_imagenet_weights():
    assert imagenet_weights("small_cnn") is None and imagenet_weights("preact_resnet32") is None


@pytest.mark.parametrize("failure", [None, urllib.error.URLError("offline"), TimeoutError("timed out")],
                         ids=["cached", "offline", "read-timed-out"])
def test_the_weights_are_hash_checked_with_a_timeout_and_the_timeout_is_put_back(monkeypatch, failure):
    """torchvision checks the downloaded file's hash, a stalled download times out after TIMEOUT_S (a read that
    times out is a TimeoutError, an OSError, not a URLError) and becomes the same clear error, and the process's
    socket timeout is what it was before."""
    calls = []

    def get_state_dict(_weights, **kwargs):
        calls.append((kwargs, socket.getdefaulttimeout()))
        if failure is not None:
            raise failure
        return {}

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", get_state_dict)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(3.5)
    try:
        if failure is None:
            assert imagenet_weights("resnet50") == {}
        else:
            with pytest.raises(PretrainedWeightsError, match=r"pretrained: false"):
                imagenet_weights("resnet50")
        assert socket.getdefaulttimeout() == 3.5
    finally:
        socket.setdefaulttimeout(previous)
    assert calls == [({"progress": False, "check_hash": True}, pretrained.TIMEOUT_S)]


def test_hand_placed_weights_whose_sha256_differs_from_their_name_are_refused(tmp_path, monkeypatch):
    """torchvision checks the hash only when it downloads: a file put in the cache by hand is checked here against
    the sha256 prefix in its name (``resnet50-0676ba61.pth``) before it is loaded."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = weights_file("resnet50")
    path.parent.mkdir(parents=True)
    torch.save(resnet50(weights=None).state_dict(), path)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(PretrainedWeightsError) as caught:
        imagenet_weights("resnet50")
    assert str(caught.value) == (f"{path}: expected ImageNet weights whose sha256 starts with 0676ba61 (the prefix "
                                 f"in the file's name), found sha256 {found}; delete the file to download it again, "
                                 f"or put the file from {ResNet50_Weights.IMAGENET1K_V1.url} there")


def test_hand_placed_weights_whose_sha256_matches_their_name_pass_the_check(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"weights")
    named = path.rename(tmp_path / f"net-{hashlib.sha256(b'weights').hexdigest()[:10]}.pth")
    pretrained.check_named_hash(named, url="https://example.org/net.pth")
