"""Unpaired image-to-image translation networks (CUT and CycleGAN building blocks).

The networks are grayscale-native: they read and write one channel. The public
CUT/CycleGAN code assumes RGB, and EM volumes fed through it are replicated to
three identical channels and averaged back afterwards, which costs input and
output convolutions for no information and lets the generator make channels
that disagree, which the final averaging then silently blurs.

Images are ``(B, 1, H, W)`` float tensors, percentile-normalised so that most
values lie in [0, 1] (clipped to [-0.5, 1.5]). The networks map ``x -> 2x - 1``
internally so that their weights see the zero-centred range the GAN literature
tunes for, and the generator's ``tanh`` output is mapped back with
``(t + 1) / 2``: a translated image therefore lies in [0, 1] like a normalised
input does, and can be fed to a segmentation network unchanged.

The generator downsamples ``n_down`` times by 2 and upsamples back, so H and W
must be multiples of ``2 ** n_down`` (4 by default); other sizes raise a
``ValueError`` instead of silently returning an image of another size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Indices into ResnetGenerator.encoder: 0 is the 7x7 input convolution, 1 and 2
# the two downsampling convolutions (n_down=2), 3.. the residual blocks. Index 4
# (after the second residual block) is the deepest tap that still exists in a
# two-block generator; CUT likewise samples mid-level features rather than the
# bottleneck alone, so that both fine texture and object layout are kept.
DEFAULT_NCE_LAYERS: tuple[int, ...] = (0, 1, 2, 4)


def _instance_norm(channels: int) -> nn.Module:
    """Per-image, per-channel normalisation without running stats: batch-size independent."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _to_signed(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * x - 1.0


class ResidualBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with a skip: the content passes through unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
            _instance_norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson-style ResNet generator for one-channel images, output in [0, 1].

    ``encoder`` is an ``nn.Sequential`` of stages (input convolution, each
    downsampling, each residual block) so that :meth:`features` can tap the
    activations CUT's PatchNCE loss compares; ``decoder`` upsamples with
    nearest-neighbour interpolation followed by a convolution rather than a
    transposed convolution, whose uneven kernel overlap paints checkerboards
    that are conspicuous on smooth EM cytoplasm.
    """

    def __init__(self, width: int = 16, n_blocks: int = 6, n_down: int = 2) -> None:
        super().__init__()
        if width < 1 or n_blocks < 0 or n_down < 0:
            raise ValueError(f"ResnetGenerator needs width >= 1, n_blocks >= 0 and n_down >= 0, "
                             f"got width={width}, n_blocks={n_blocks}, n_down={n_down}.")
        self.n_down = n_down
        stages: list[nn.Module] = [nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(1, width, 7, bias=False), _instance_norm(width),
            nn.ReLU(True))]
        channels = [width]
        for _ in range(n_down):
            c = channels[-1]
            stages.append(nn.Sequential(
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, padding_mode="reflect", bias=False),
                _instance_norm(2 * c), nn.ReLU(True)))
            channels.append(2 * c)
        for _ in range(n_blocks):
            stages.append(ResidualBlock(channels[-1]))
            channels.append(channels[-1])
        self.encoder = nn.Sequential(*stages)
        self._channels = tuple(channels)

        up: list[nn.Module] = []
        c = channels[n_down]
        for _ in range(n_down):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(c, c // 2, 3, bias=False), _instance_norm(c // 2), nn.ReLU(True)]
            c //= 2
        up += [nn.ReflectionPad2d(3), nn.Conv2d(c, 1, 7), nn.Tanh()]
        self.decoder = nn.Sequential(*up)

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"ResnetGenerator expects (B, 1, H, W) images, got shape {tuple(x.shape)}.")
        factor = 2 ** self.n_down
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"ResnetGenerator needs H and W to be multiples of {factor} "
                             f"(2**n_down), got {x.shape[-2]}x{x.shape[-1]}.")

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = list(layers)
        n = len(self.encoder)
        bad = [i for i in layers if not 0 <= i < n]
        if bad or not layers:
            raise ValueError(f"Feature layers must be a non-empty list of encoder indices in "
                             f"[0, {n - 1}], got {layers}.")
        return layers

    # ------------------------------------------------------------------ api
    def feature_channels(self, layers: Sequence[int] = DEFAULT_NCE_LAYERS) -> list[int]:
        """Channels of the activations :meth:`features` returns, to build a projection head eagerly."""
        return [self._channels[i] for i in self._check_layers(layers)]

    def features(self, x: torch.Tensor, layers: Sequence[int] = DEFAULT_NCE_LAYERS) -> list[torch.Tensor]:
        """Activations after the listed encoder stages; runs the encoder only as deep as needed."""
        self._check_input(x)
        wanted = self._check_layers(layers)
        return self._encode(_to_signed(x), wanted, max(wanted) + 1)[1]

    def forward_with_features(self, x: torch.Tensor, layers: Sequence[int] = DEFAULT_NCE_LAYERS
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(translated image, :meth:`features` of ``x``) from a single encoder pass."""
        self._check_input(x)
        wanted = self._check_layers(layers)
        h, feats = self._encode(_to_signed(x), wanted, len(self.encoder))
        return (self.decoder(h) + 1.0) / 2.0, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translated image in [0, 1], same shape as ``x``."""
        self._check_input(x)
        return (self.decoder(self.encoder(_to_signed(x))) + 1.0) / 2.0

    def _encode(self, h: torch.Tensor, wanted: list[int], depth: int
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        found: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(self.encoder[:depth]):
            h = stage(h)
            if i in wanted:
                found[i] = h
        return h, [found[i] for i in wanted]


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake logit per overlapping receptive field (70x70 for n_layers=3).

    Judging local patches rather than the whole image makes the adversarial
    signal about texture and intensity statistics, which is what differs
    between EM acquisitions, and works for any image size.
    """

    def __init__(self, width: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        if width < 1 or n_layers < 1:
            raise ValueError(f"PatchDiscriminator needs width >= 1 and n_layers >= 1, "
                             f"got width={width}, n_layers={n_layers}.")
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = width
        for i in range(1, n_layers + 1):
            out = width * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, out, 4, stride=stride, padding=1, bias=False),
                       _instance_norm(out), nn.LeakyReLU(0.2, True)]
            c = out
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) map of logits; ``x`` is a (B, 1, H, W) image in the [0, 1] convention."""
        return self.net(_to_signed(x))


class PatchSampleMLP(nn.Module):
    """Samples feature vectors at random positions and projects them for PatchNCE.

    The MLPs are built here from known channel counts (see
    :meth:`ResnetGenerator.feature_channels`) rather than lazily on the first
    forward pass as the public CUT code does: lazily created parameters are
    missing from an optimiser built before that pass and from a checkpoint's
    state dict loaded before it, so they would silently stay untrained or fail
    to restore.
    """

    def __init__(self, channels: Sequence[int], out_dim: int = 128, num_patches: int = 64) -> None:
        super().__init__()
        if not channels or num_patches < 1 or out_dim < 1:
            raise ValueError(f"PatchSampleMLP needs at least one layer, num_patches >= 1 and "
                             f"out_dim >= 1, got channels={list(channels)}, "
                             f"num_patches={num_patches}, out_dim={out_dim}.")
        self.num_patches = num_patches
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, out_dim), nn.ReLU(True), nn.Linear(out_dim, out_dim))
            for c in channels)

    def forward(self, features: list[torch.Tensor], patch_ids: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(per layer a unit-norm (B*P, out_dim) tensor, per layer the sampled positions).

        Positions are shared by all images of the batch and drawn on the CPU from
        ``generator`` (reproducible whatever the device); pass the returned ids
        back for the translated image so that row ``k`` of both outputs comes
        from the same place. P is ``min(num_patches, H*W)`` of each layer.
        """
        if len(features) != len(self.mlps):
            raise ValueError(f"PatchSampleMLP was built for {len(self.mlps)} feature layers, "
                             f"got {len(features)}.")
        if patch_ids is not None and len(patch_ids) != len(features):
            raise ValueError(f"Got {len(patch_ids)} patch id tensors for {len(features)} feature layers.")
        outs, ids_out = [], []
        for i, (feat, mlp) in enumerate(zip(features, self.mlps)):
            b, c, h, w = feat.shape
            flat = feat.flatten(2).transpose(1, 2)  # (B, H*W, C)
            if patch_ids is None:
                ids = torch.randperm(h * w, generator=generator)[: min(self.num_patches, h * w)]
            else:
                ids = patch_ids[i]
            ids = ids.to(feat.device)
            picked = flat[:, ids, :].reshape(-1, c)
            outs.append(F.normalize(mlp(picked), dim=1, eps=1e-7))
            ids_out.append(ids)
        return outs, ids_out


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, batch_size: int,
                   tau: float = 0.07) -> torch.Tensor:
    """PatchNCE (InfoNCE over positions): each translated patch must pick out its own source patch.

    ``query`` (B*P, D) comes from the translated image, ``key`` (B*P, D) from
    the input image and is detached, so the loss shapes the generator rather
    than collapsing the keys. Negatives are the other P-1 positions of the same
    image only: CUT found such internal negatives better than patches of other
    images, and crops of one EM volume often look alike, so a patch of another
    crop is a poor "different content" example. Returns the mean cross-entropy.
    """
    if query.shape != key.shape or query.dim() != 2 or query.shape[0] % batch_size:
        raise ValueError(f"patch_nce_loss needs query and key of one shape (B*P, D) with B={batch_size}, "
                         f"got {tuple(query.shape)} and {tuple(key.shape)}.")
    n_patches = query.shape[0] // batch_size
    q = query.float().reshape(batch_size, n_patches, -1)
    k = key.detach().float().reshape(batch_size, n_patches, -1)
    logits = torch.bmm(q, k.transpose(1, 2)) / tau  # (B, P, P): row = query, column = key
    target = torch.arange(n_patches, device=q.device).repeat(batch_size)
    return F.cross_entropy(logits.reshape(-1, n_patches), target)


def lsgan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: its gradient does not vanish for confidently judged fakes."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.mse_loss(logits, target)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) convolution and linear weights, zero biases (the pix2pix/CUT initialisation).

    The published CUT/CycleGAN learning rates and loss weights were tuned with
    this initialisation, not PyTorch's default Kaiming-uniform one. Seed torch
    before calling for reproducible weights.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
