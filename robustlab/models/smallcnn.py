"""A small, CPU-fast conv net for 8x8 (digits), 28x28 (MNIST) and 32x32 inputs."""

from collections.abc import Sequence

from torch import Tensor, nn

from robustlab.models.normalize import input_normalize


class SmallCNN(nn.Module):
    """Conv3x3-MaxPool-ReLU blocks, then a hidden fully connected layer.

    A block max-pools only while the map stays at least 2x2, so 8x8 inputs keep a spatial map.
    The final map is average-pooled to at most 4x4 before the classifier head.
    """

    def __init__(
        self,
        *,
        name: str = "smallcnn",
        in_channels: int,
        num_classes: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        normalization: str = "dataset",
        widths: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.normalize = input_normalize(name, normalization, in_channels, mean, std)
        self.name = name
        layers: list[nn.Module] = []
        size, channels = image_size, in_channels
        for width in widths:
            layers.append(nn.Conv2d(channels, width, 3, padding=1))
            if size // 2 >= 2:  # max-pool before ReLU: the same function, 4x fewer activations
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.features = nn.Sequential(*layers)
        self.feature_channels = channels
        pooled = min(size, 4)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(pooled),
            nn.Flatten(),
            nn.Linear(channels * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(last conv feature map, logits)."""
        fmap = self.features(self.normalize(x))
        return fmap, self.head(fmap)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]
