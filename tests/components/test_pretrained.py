import logging
import urllib.error

import torch
from torchvision.models import ResNet50_Weights, resnet50

from components.pretrained import imagenet_weights
from model.networks import build_network


def test_without_network_or_cache_training_starts_from_random_init_and_says_how_to_fix_it(monkeypatch, caplog):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", offline)
    with caplog.at_level(logging.WARNING):
        assert imagenet_weights("resnet50") is None
    assert "ImageNet weights for resnet50 are not available" in caplog.text
    assert "random initialisation" in caplog.text and "resnet50-11ad3fa6.pth" in caplog.text


def test_cached_weights_are_used(monkeypatch):
    state = resnet50(weights=None).state_dict()
    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", lambda *a, **k: state)
    net = build_network("resnet50", 3, pretrained=imagenet_weights("resnet50"))
    torch.testing.assert_close(net.body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_networks_without_imagenet_weights():
    assert imagenet_weights("small_cnn") is None and imagenet_weights("preact_resnet32") is None
