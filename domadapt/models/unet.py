"""2D U-Net and Attention U-Net for binary mitochondria segmentation.

Small by default (width 16, depth 4: about 0.5 M parameters) so that the
cpu-quick profile trains at useful speed on two CPU cores; width and depth
scale it up for the GPU ``paper`` profile. The encoder and decoders are
separate attributes so that other models (the Y-Net, self-supervised
pretraining) can reuse or swap them.
"""

from __future__ import annotations

import torch
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation chosen by config; group norm degrades gracefully at batch size 1."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


#: Under ``norm: ibn`` the encoder's first levels normalise each image by its own statistics
#: and the rest of the network uses batch norm (IBN-Net, Pan et al. 2018): appearance, which
#: differs between EM domains, lives in shallow features; what tells objects apart, deeper.
IBN_LEVELS = 2


def level_norm(norm: str, level: int, encoder: bool) -> str:
    """The normalisation of one level's conv block; only ``ibn`` differs between levels."""
    if norm != "ibn":
        return norm
    return "instance" if encoder and level < IBN_LEVELS else "batch"


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), norm_layer(norm, cout), nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), norm_layer(norm, cout), nn.ReLU(True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): the decoder signal weights the skip."""

    def __init__(self, skip_channels: int, gate_channels: int) -> None:
        super().__init__()
        inter = max(1, skip_channels // 2)
        self.skip = nn.Conv2d(skip_channels, inter, 1)
        self.gate = nn.Conv2d(gate_channels, inter, 1)
        self.score = nn.Sequential(nn.ReLU(True), nn.Conv2d(inter, 1, 1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.score(self.skip(skip) + self.gate(gate))


class Encoder(nn.Module):
    """Contracting path; returns the skip features of every level, deepest last."""

    def __init__(self, in_channels: int, width: int, depth: int, norm: str) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.channels = chans
        self.blocks = nn.ModuleList([ConvBlock(in_channels, chans[0], level_norm(norm, 0, True))])
        self.blocks.extend(ConvBlock(chans[i], chans[i + 1], level_norm(norm, i + 1, True))
                           for i in range(depth))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            features.append(block(self.pool(features[-1])))
        return features


class Decoder(nn.Module):
    """Expanding path; ``use_skips=False`` makes it a plain decoder from the bottleneck.

    Without skips a reconstruction decoder cannot copy its input through the
    shallow features, which forces the encoder to represent the image.
    """

    def __init__(self, channels: list[int], out_channels: int, norm: str,
                 attention: bool = False, use_skips: bool = True) -> None:
        super().__init__()
        self.use_skips = use_skips
        norm = level_norm(norm, 0, encoder=False)
        ups, blocks, gates = [], [], []
        for deep, shallow in zip(channels[:0:-1], channels[-2::-1]):
            ups.append(nn.ConvTranspose2d(deep, shallow, 2, stride=2))
            blocks.append(ConvBlock(shallow * (2 if use_skips else 1), shallow, norm))
            gates.append(AttentionGate(shallow, shallow) if attention and use_skips else None)
        self.ups, self.blocks = nn.ModuleList(ups), nn.ModuleList(blocks)
        self.gates = nn.ModuleList([g or nn.Identity() for g in gates])
        self.attention = attention and use_skips
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i, (up, block) in enumerate(zip(self.ups, self.blocks)):
            x = up(x)
            if self.use_skips:
                skip = features[-2 - i]
                if self.attention:
                    skip = self.gates[i](skip, x)
                x = torch.cat([skip, x], dim=1)
            x = block(x)
        return self.head(x)


class UNet(nn.Module):
    """Encoder + decoder with skips; outputs logits (B, out_channels, H, W).

    H and W must be multiples of ``2**depth``; tiled inference pads to that.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16,
                 depth: int = 4, norm: str = "batch", attention: bool = False) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, width, depth, norm)
        self.decoder = Decoder(self.encoder.channels, out_channels, norm, attention)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_unet(arch: str = "unet", width: int = 16, depth: int = 4, norm: str = "batch",
               in_channels: int = 1, out_channels: int = 1) -> UNet:
    """Build the segmentation network described by a ModelConfig's fields."""
    return UNet(in_channels, out_channels, width, depth, norm, attention=arch == "attention_unet")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
