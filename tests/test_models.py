"""Tests for robustlab.models: shapes, features, Normalize, sizes, weight loading, configs."""

from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from robustlab.models import (
    Normalize,
    PreActResNet18,
    ResNetCIFAR,
    SmallCNN,
    WideResNet,
    load_weights,
)
from robustlab.models.resnet_cifar import BasicBlock, Bottleneck

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

# (in_channels, image_size) of digits, MNIST-like, CIFAR-like and Tiny-ImageNet-like data.
SHAPES = {"digits": (1, 8), "mnist": (1, 28), "cifar": (3, 32), "tiny": (3, 64)}

# Small variants of the big nets keep forward checks cheap on a shared CPU.
BUILDERS = {
    "smallcnn": lambda **kw: SmallCNN(**kw),
    "preact_resnet18": lambda **kw: PreActResNet18(**kw),
    "resnet_cifar": lambda **kw: ResNetCIFAR(blocks=[1, 1, 1], widths=[8, 16, 32], **kw),
    "resnet_basic": lambda **kw: ResNetCIFAR(block="basic", blocks=[1, 1], widths=[8, 16], **kw),
    "wide_resnet": lambda **kw: WideResNet(depth=10, widen_factor=1, **kw),
}
CASES = [
    (model, shape)
    for model in BUILDERS
    for shape in SHAPES
    if shape != "digits" or model in ("smallcnn", "preact_resnet18")
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forwards are several times faster on one thread when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dataset_kwargs(channels: int, size: int, num_classes: int = 10) -> dict:
    return dict(
        in_channels=channels,
        num_classes=num_classes,
        image_size=size,
        mean=[0.5] * channels,
        std=[0.25] * channels,
    )


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("model", "shape"), CASES)
def test_logits_and_features(model, shape):
    channels, size = SHAPES[shape]
    torch.manual_seed(0)
    net = BUILDERS[model](**dataset_kwargs(channels, size, num_classes=7)).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        logits = net(x)
        fmap, logits_f = net.forward_features(x)
    assert logits.shape == (2, 7)
    assert torch.equal(logits, logits_f)
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, net.feature_channels)
    assert min(fmap.shape[2:]) >= 1


def test_normalize_is_first_and_correct():
    norm = Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack(
        [(x[:, c] - m) / s for c, (m, s) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)])], dim=1
    )
    assert torch.allclose(norm(x), expected)
    assert {"mean", "std"} <= dict(norm.named_buffers()).keys()
    for build in BUILDERS.values():
        first = next(iter(build(**dataset_kwargs(3, 32)).children()))
        assert isinstance(first, Normalize)


def test_channel_mismatch_is_one_line():
    with pytest.raises(ValueError, match="in_channels=3") as err:
        SmallCNN(**{**dataset_kwargs(3, 32), "mean": [0.5]})
    assert "\n" not in str(err.value)


def test_smallcnn_keeps_a_map_on_8x8():
    net = SmallCNN(**dataset_kwargs(1, 8), widths=[8, 8, 8])
    fmap, _ = net.forward_features(torch.rand(2, 1, 8, 8))
    assert fmap.shape == (2, 8, 2, 2)


def test_resnet50_cifar_default_size_and_blocks():
    net = ResNetCIFAR(**dataset_kwargs(3, 32))
    bottlenecks = [m for m in net.stages if isinstance(m, Bottleneck)]
    assert len(bottlenecks) == 15 == len(net.stages)
    assert [b.conv3.out_channels for b in bottlenecks[::5]] == [256, 512, 1024]
    assert n_params(net) == 7_849_546
    assert net.feature_channels == 1024


def test_resnet18_is_the_standard_basic_block_net():
    net = ResNetCIFAR(
        name="resnet18",
        block="basic",
        blocks=[2, 2, 2, 2],
        widths=[64, 128, 256, 512],
        **dataset_kwargs(3, 32),
    )
    assert all(isinstance(m, BasicBlock) for m in net.stages) and len(net.stages) == 8
    assert net.feature_channels == 512
    assert n_params(net) == 11_173_962  # the usual count of the CIFAR ResNet-18


def test_resnet_bad_block_is_one_line():
    with pytest.raises(ValueError, match=r"block='wide' is not one of \['basic', 'bottleneck'\]"):
        ResNetCIFAR(block="wide", **dataset_kwargs(3, 32))


def test_wide_resnet_bad_depth():
    with pytest.raises(ValueError, match="depth=30") as err:
        WideResNet(**dataset_kwargs(3, 32), depth=30)
    assert "\n" not in str(err.value)


def test_load_weights_plain_round_trip(tmp_path):
    src = SmallCNN(**dataset_kwargs(1, 8))
    dst = SmallCNN(**dataset_kwargs(1, 8))
    path = tmp_path / "plain.pt"
    torch.save(src.state_dict(), path)
    load_weights(dst, path)
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key])


def test_load_weights_lightning_checkpoint(tmp_path):
    src = SmallCNN(**dataset_kwargs(1, 8))
    dst = SmallCNN(**dataset_kwargs(1, 8))
    state = {f"net.{k}": v for k, v in src.state_dict().items()}
    state["estimator.weight"] = torch.zeros(3)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    load_weights(dst, path)
    assert torch.equal(src.head[-1].weight, dst.head[-1].weight)


def test_load_weights_missing_and_corrupt(tmp_path):
    net = SmallCNN(**dataset_kwargs(1, 8))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_weights(net, tmp_path / "nope.pt")
    path = tmp_path / "corrupt.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="corrupt.pt") as err:
        load_weights(net, path)
    assert "\n" not in str(err.value)


def test_load_weights_mismatch(tmp_path):
    path = tmp_path / "ten.pt"
    torch.save(SmallCNN(**dataset_kwargs(1, 8)).state_dict(), path)
    with pytest.raises(ValueError, match="ten.pt.*smallcnn.*shape") as err:
        load_weights(SmallCNN(**dataset_kwargs(1, 8, num_classes=3)), path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="missing keys") as err:
        load_weights(WideResNet(**dataset_kwargs(1, 8), depth=10, widen_factor=1), path)
    assert "\n" not in str(err.value)


# Exact parameter counts with 10 classes and 3 input channels; WRNs are counted, not run.
PARAMS = {
    "smallcnn": 151_882,
    "preact_resnet18": 11_172_170,
    "resnet50_cifar": 7_849_546,
    "resnet18": 11_173_962,
    "wide_resnet": 36_479_194,  # WRN-28-10
    "wrn34_10": 46_160_474,  # the paper's 46.2M
}


@pytest.mark.parametrize("file", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_instantiates(file):
    dataset = {"name": "stub", **dataset_kwargs(3, 32)}
    cfg = OmegaConf.create({"dataset": dataset, "model": OmegaConf.load(file)})
    net = hydra.utils.instantiate(cfg.model)
    assert net.name == cfg.model.name == file.stem
    assert n_params(net) == PARAMS[file.stem]
    if file.stem not in ("wide_resnet", "wrn34_10"):
        with torch.no_grad():
            assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_all_model_configs_present():
    expected = {
        "smallcnn",
        "preact_resnet18",
        "resnet18",
        "resnet50_cifar",
        "wide_resnet",
        "wrn34_10",
    }
    assert {p.stem for p in CONF.glob("*.yaml")} == expected
