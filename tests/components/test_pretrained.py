import urllib.error

import pytest
import torch
from torchvision.models import ResNet50_Weights, resnet50

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
