"""Public CIFAR checkpoints load into robustlab's nets: each layout is rebuilt here with the
public module names and forward (kuangliu/pytorch-cifar and RobustBench's model zoo), saved,
loaded with load_weights and compared logit for logit."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from robustlab.models import PreActResNet18, ResNetCIFAR, SmallCNN, WideResNet, load_weights

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
WIDTHS = [8, 16, 32, 64]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- kuangliu/pytorch-cifar models/resnet.py (= RobustBench architectures/resnet.py ResNet) ---
class KuangliuBasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class KuangliuResNet(nn.Module):
    def __init__(self, widths, num_blocks=(2, 2, 2, 2), num_classes=10):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[0], num_blocks[0], 1)
        self.layer2 = self._make_layer(widths[1], num_blocks[1], 2)
        self.layer3 = self._make_layer(widths[2], num_blocks[2], 2)
        self.layer4 = self._make_layer(widths[3], num_blocks[3], 2)
        self.linear = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(KuangliuBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


# --- RobustBench architectures/resnet.py PreActResNet(PreActBlockV2, bn_before_fc=True) ---
class RobustBenchPreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class RobustBenchPreActResNet18(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), num_classes=10):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(widths[0], 1)
        self.layer2 = self._make_layer(widths[1], 2)
        self.layer3 = self._make_layer(widths[2], 2)
        self.layer4 = self._make_layer(widths[3], 2)
        self.bn = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes, stride):
        layers = []
        for s in (stride, 1):
            layers.append(RobustBenchPreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


# --- RobustBench architectures/wide_resnet.py WideResNet (from TRADES), sub_block1=True ---
class RobustBenchWideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RobustBenchNetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                RobustBenchWideBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1
                )
                for i in range(nb_layers)
            ]
        )

    def forward(self, x):
        return self.layer(x)


class RobustBenchWideResNet(nn.Module):
    def __init__(self, depth=16, widen_factor=2, num_classes=10):
        super().__init__()
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.block1 = RobustBenchNetworkBlock(n, channels[0], channels[1], 1)
        self.sub_block1 = RobustBenchNetworkBlock(n, channels[0], channels[1], 1)  # never run
        self.block2 = RobustBenchNetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = RobustBenchNetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


def cifar_kwargs(normalization: str = "identity") -> dict:
    return dict(
        in_channels=3,
        num_classes=10,
        image_size=32,
        mean=[0.49, 0.48, 0.45],
        std=[0.25, 0.24, 0.26],
        normalization=normalization,
    )


# layout -> (public net, matching robustlab net for given kwargs)
LAYOUTS = {
    "resnet": (
        lambda: KuangliuResNet(WIDTHS),
        lambda **kw: ResNetCIFAR(block="basic", blocks=[2, 2, 2, 2], widths=WIDTHS, **kw),
    ),
    "preact_resnet": (RobustBenchPreActResNet18, lambda **kw: PreActResNet18(**kw)),
    "wide_resnet": (
        RobustBenchWideResNet,
        lambda **kw: WideResNet(depth=16, widen_factor=2, **kw),
    ),
}


def trained_like(net: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so every buffer matters; eval mode."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.num_batches_tracked.fill_(7)
    return net.eval()


def public_checkpoint(layout: str, tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    src = trained_like(LAYOUTS[layout][0]())
    path = tmp_path / f"{layout}.pt"
    torch.save(src.state_dict(), path)
    return src, path


def same_logits(a: nn.Module, b: nn.Module, transform=lambda x: x) -> bool:
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        return torch.allclose(a(transform(x)), b.eval()(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_public_layout_gives_the_same_logits(layout, tmp_path):
    src, path = public_checkpoint(layout, tmp_path)
    dst = LAYOUTS[layout][1](**cifar_kwargs())
    load_weights(dst, path)
    assert same_logits(src, dst)


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_prefixed_keys_in_a_container(prefix, tmp_path):
    """kuangliu's ckpt.pth: {"net": DataParallel state_dict, "acc", "epoch"}."""
    src, _ = public_checkpoint("resnet", tmp_path)
    path = tmp_path / "ckpt.pth"
    state = {prefix + k: v for k, v in src.state_dict().items()}
    torch.save({"net": state, "acc": 93.0, "epoch": 199}, path)
    dst = LAYOUTS["resnet"][1](**cifar_kwargs())
    load_weights(dst, path)
    assert same_logits(src, dst)


def test_robustbench_mu_sigma_become_the_normalization(tmp_path):
    src, _ = public_checkpoint("wide_resnet", tmp_path)
    mu, sigma = torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1) + 0.1
    path = tmp_path / "mu_sigma.pt"
    torch.save({**src.state_dict(), "mu": mu, "sigma": sigma}, path)
    dst = LAYOUTS["wide_resnet"][1](**cifar_kwargs("dataset"))
    load_weights(dst, path)
    assert same_logits(src, dst, transform=lambda x: (x - mu) / sigma)


def test_wrong_architecture_is_one_line(tmp_path):
    _, path = public_checkpoint("resnet", tmp_path)
    with pytest.raises(
        ValueError, match=r"resnet\.pt \(read as ResNet.*wide_resnet.*missing keys"
    ) as err:
        load_weights(LAYOUTS["wide_resnet"][1](**cifar_kwargs()), path)
    assert "\n" not in str(err.value)


def test_preact_without_final_bn_is_refused(tmp_path):
    """kuangliu's PreActResNet (no final BN) runs a different function: refused, not guessed."""
    state = RobustBenchPreActResNet18(WIDTHS).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("bn.")}
    path = tmp_path / "kuangliu_preact.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"PreActResNet.*missing keys \['bn\.weight'") as err:
        load_weights(PreActResNet18(**cifar_kwargs()), path)
    assert "\n" not in str(err.value)


def test_raw_pixel_checkpoint_needs_identity_normalization(tmp_path):
    _, path = public_checkpoint("resnet", tmp_path)
    with pytest.raises(ValueError, match=r"resnet\.pt.*model\.normalization=identity") as err:
        load_weights(LAYOUTS["resnet"][1](**cifar_kwargs("dataset")), path)
    assert "\n" not in str(err.value)


def test_normalization_option(tmp_path):
    kw = dict(in_channels=1, num_classes=3, image_size=8, mean=[0.3], std=[0.4])
    own = SmallCNN(**kw)
    identity = SmallCNN(**kw, normalization="identity")
    assert own.state_dict().keys() == identity.state_dict().keys()
    assert identity.normalize.mean.flatten().tolist() == [0.0]
    assert identity.normalize.std.flatten().tolist() == [1.0]
    with pytest.raises(ValueError, match=r"normalization='raw' is not one of") as err:
        SmallCNN(**kw, normalization="raw")
    assert "\n" not in str(err.value)
    # A robustlab checkpoint carries its normalization: it wins over the declared one.
    path = tmp_path / "own.pt"
    torch.save(own.state_dict(), path)
    load_weights(identity, path)
    assert torch.equal(identity.normalize.std, own.normalize.std)


@pytest.mark.parametrize("file", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_default_to_dataset_normalization(file):
    assert OmegaConf.load(file).normalization == "dataset"
