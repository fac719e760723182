"""Y-Net: one shared encoder, a segmentation decoder and a reconstruction decoder.

Roels et al. 2019 (ISBI) and the Attention Y-Net of Franco-Barranco et al. 2022
train the reconstruction head on source *and* target images, so the shared
encoder must represent both domains while the segmentation head learns from
source labels only.

The segmentation half is a plain :class:`~domadapt.models.unet.UNet` (the
trainer's ``net`` module), so monitors, checkpoints and ``domadapt predict``
treat it like any other segmentation network; the reconstruction decoder is a
separate module (``recon``) that decodes ``net.encoder(x)``.

By default the reconstruction decoder has **no skip connections**: with
them, the shallowest skip carries the input almost unchanged and the decoder
can copy it without the encoder learning anything about the image
(tests/test_multitask.py shows both properties).
"""

from __future__ import annotations

import torch
from torch import nn

from domadapt.models.unet import Decoder, Encoder, UNet, build_unet


def build_recon_decoder(encoder: Encoder, norm: str = "batch", attention: bool = False,
                        use_skips: bool = False) -> Decoder:
    """A one-channel image decoder over ``encoder``'s features (linear output)."""
    return Decoder(encoder.channels, 1, norm, attention=attention, use_skips=use_skips)


class YNet(nn.Module):
    """``net`` (a UNet) plus ``recon``; ``forward`` returns (seg logits, reconstruction)."""

    def __init__(self, net: UNet, recon: Decoder) -> None:
        super().__init__()
        self.net, self.recon = net, recon

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.encoder(x)
        return self.net.decoder(features), self.recon(features)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.recon(self.net.encoder(x))


def build_ynet(arch: str = "unet", width: int = 16, depth: int = 4, norm: str = "batch",
               recon_skips: bool = False) -> YNet:
    """The Y-Net for a ModelConfig's fields; ``attention_unet`` gates every skip that exists."""
    net = build_unet(arch, width, depth, norm)
    recon = build_recon_decoder(net.encoder, norm, arch == "attention_unet", recon_skips)
    return YNet(net, recon)
