import pytest
import torch
from torchvision.models import resnet50

from model.networks import NETWORKS, PreActResNet32, ResNet50, SmallCNN, build_network


@pytest.mark.parametrize(("name", "channels", "size"), [("small_cnn", 1, 28), ("small_cnn", 3, 32),
                                                        ("preact_resnet32", 3, 32), ("resnet50", 3, 64)])
def test_every_network_exposes_features_and_head(name, channels, size):
    torch.manual_seed(0)
    net = build_network(name, 7, in_channels=channels, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    features = net.features(x)
    assert features.ndim == 2 and features.shape[1] == net.head.in_features
    assert net.head.out_features == 7
    torch.testing.assert_close(net(x), net.head(features))


def test_preact_resnet32_has_32_weighted_layers():
    net = PreActResNet32(10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 32  # 31 3x3 convolutions and the classifier
    maps = net.body[:-2](torch.zeros(1, 3, 32, 32))  # before pooling: He et al.'s 32, 16, 8 stages end at 8 x 8
    assert maps.shape == (1, 64, 8, 8)


def test_preact_blocks_add_the_pre_activated_shortcut():
    """Pre-activation residual blocks: with conv2 zeroed a block returns its shortcut, the input itself or, where the
    block changes shape, the 1x1 convolution of the pre-activated input relu(bn1(x))."""
    torch.manual_seed(0)
    net = PreActResNet32(10).eval()
    same, down = net.body[1], net.body[6]  # stage 1's first block; stage 2's first block (stride 2, 16 -> 32)
    for block in (same, down):
        torch.nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(same(x), x)
    torch.testing.assert_close(down(x), down.shortcut(torch.relu(down.bn1(x))))


def test_resnet50_loads_imagenet_style_weights_and_replaces_the_head():
    reference = resnet50(weights=None)
    net = ResNet50(5, pretrained=reference.state_dict())
    torch.testing.assert_close(net.body.conv1.weight, reference.conv1.weight)
    assert net.head.out_features == 5
    with pytest.raises(ValueError, match=r"pretrained: expected a torchvision ResNet-50 state dict"):
        ResNet50(5, pretrained={"nonsense": torch.zeros(1)})
    partial = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match=r"pretrained: expected a torchvision ResNet-50 state dict, found missing "
                                         r"keys \[.*'layer4"):
        ResNet50(5, pretrained=partial)  # a truncated state dict would leave layer4 at its random initialisation


def test_bad_network_arguments():
    with pytest.raises(ValueError, match=r"Unknown network 'vgg'. Valid: " + ", ".join(NETWORKS)):
        build_network("vgg", 10)
    with pytest.raises(ValueError, match=r"num_classes: expected a positive integer, found 0"):
        SmallCNN(0)
    with pytest.raises(ValueError, match=r"image_size: expected a multiple of 4 \(e.g. 28 or 32\), found 30"):
        SmallCNN(10, image_size=30)
    with pytest.raises(ValueError, match=r"in_channels: resnet50 expects 3 \(RGB\), found 1"):
        build_network("resnet50", 10, in_channels=1)
