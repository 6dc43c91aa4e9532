"""Small networks whose landscapes a CPU can study at many sizes (Barannikov et al. 2025 §4.1-4.2):
fully connected ReLU networks of a given depth and width, and CNNs with one to three
convolutional layers, max-pooled to one spatial size before a final linear layer whose size
depends only on the channel count.

Both follow the paper's construction, so that a network embeds into a deeper or wider one of
the family with the same loss (its "barcode lowering" argument): a hidden ReLU layer can be
followed by an extra layer with identity weights and zero biases without changing the output
(tests/test_problems.py checks this for ``MLP``)."""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` ReLU units, then a linear read-out."""

    def __init__(self, in_features: int, depth: int, width: int, num_classes: int = 10):
        super().__init__()
        layers, size = [nn.Flatten()], in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class SmallCNN(nn.Module):
    """``conv_layers`` 3x3 convolutions of ``channels`` channels (padding 1), each followed by
    BatchNorm (``batchnorm``: before the activation, as the paper's variant), ReLU and, but for
    the last, 2x2 max-pooling; then adaptive max-pooling to ``pooled`` x ``pooled`` and one linear
    layer, whose size depends only on the channel count (the paper keeps it constant across depths)."""

    def __init__(self, in_channels: int, conv_layers: int, channels: int, batchnorm: bool = False,
                 pooled: int = 2, num_classes: int = 10):
        super().__init__()
        layers, size = [], in_channels
        for index in range(conv_layers):
            layers.append(nn.Conv2d(size, channels, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU())
            if index < conv_layers - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            size = channels
        layers += [nn.AdaptiveMaxPool2d(pooled), nn.Flatten(), nn.Linear(channels * pooled * pooled, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
