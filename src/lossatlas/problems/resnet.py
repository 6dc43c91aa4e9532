"""CIFAR ResNets (He et al. 2016) as used by PyHessian and Li et al. 2018, with or without skips.

``skip=False`` removes every shortcut, the 1x1 downsampling ones included (PyHessian's
``residual_not``, Li et al.'s "NS", Xie, Geniesse et al.'s "without residual connections").
"""
from __future__ import annotations

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.skip = skip
        self.shortcut = None
        if skip and (stride != 1 or in_planes != planes):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out)


class CifarResNet(nn.Module):
    """3 stages of (depth - 2) / 6 basic blocks with 16, 32, 64 (x width) channels."""

    def __init__(self, skip: bool = True, depth: int = 20, width: int = 1, in_channels: int = 3,
                 num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110); got {depth}.")
        if width < 1:
            raise ValueError(f"width must be a positive int; got {width}.")
        blocks = (depth - 2) // 6
        planes = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU()
        layers, in_planes = [], planes[0]
        for stage, width_ in enumerate(planes):
            stage_blocks = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                stage_blocks.append(BasicBlock(in_planes, width_, stride, skip))
                in_planes = width_
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[2], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions, unit BatchNorm, default linear (as PyHessian's models)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()
            elif isinstance(module, nn.Linear) and module is not self:
                module.reset_parameters()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.pool(out).flatten(1))


def resnet20(skip: bool = True, depth: int = 20, width: int = 1, in_channels: int = 3,
             num_classes: int = 10) -> CifarResNet:
    return CifarResNet(skip=skip, depth=depth, width=width, in_channels=in_channels, num_classes=num_classes)
