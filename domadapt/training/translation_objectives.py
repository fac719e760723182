"""CUT and CycleGAN losses as :class:`~domadapt.training.trainer.Objective` lists.

Each method is two objectives run in order by the shared trainer within one
step: the generator objective (optimiser ``"G"``) translates the batch, stores
its fakes *detached* in ``scratch``, and the discriminator objective
(optimiser ``"D"``) judges real images against those stored fakes. Reusing the
fakes saves a second generator pass, and detaching them keeps the
discriminator's loss from reaching the generator. The generator objective's
gradients do reach the discriminator's parameters (through ``D(fake)``), but the
trainer zero-grads the ``"D"`` optimiser before the discriminator objective, so
they are discarded.

A batch is ``{"a": (B, 1, H, W), "b": (B, 1, H, W)}``: unpaired images of the
domain translated from (a) and to (b), in the [0, 1] convention of
:mod:`domadapt.models.translation`.

Both methods run a generator more than once before one backward pass (CUT
through :meth:`~domadapt.models.translation.ResnetGenerator.features`, CycleGAN
for the cycle). Under torchrun this is fine: the trainer runs each objective
whole inside one DistributedDataParallel forward
(:func:`~domadapt.training.distributed.objective_runner`), on the plain modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from domadapt.errors import ConfigError
from domadapt.models.translation import (
    DEFAULT_NCE_LAYERS,
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    init_weights,
    lsgan_loss,
    patch_nce_loss,
)
from domadapt.training.trainer import Batch, LossOutput, Objective

TRANSLATORS = ("cut", "cyclegan")


@dataclass
class TranslationLossWeights:
    """Loss weights; the defaults are those of the CUT and CycleGAN papers.

    ``identity`` is relative to ``cycle`` as in CycleGAN (0.5 * 10 = 5 on each
    identity L1 term); it keeps a generator from changing images that already
    look like the target domain, which in EM preserves the overall intensity
    of membranes and cytoplasm. ``nce_identity`` is CUT's counterpart: PatchNCE
    between b and G(b), which discourages needless changes the same way.
    """

    gan: float = 1.0
    nce: float = 1.0
    nce_identity: bool = True
    cycle: float = 10.0
    identity: float = 0.5
    nce_tau: float = 0.07

    def __post_init__(self) -> None:
        bad = {k: getattr(self, k) for k in ("gan", "nce", "cycle", "identity") if getattr(self, k) < 0}
        if bad:
            raise ValueError(f"Translation loss weights must be >= 0, got {bad}.")
        if self.nce_tau <= 0:
            raise ValueError(f"The PatchNCE temperature must be > 0, got {self.nce_tau}.")


def _split(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:n], x[n:]


def _stored(scratch: dict, key: str) -> torch.Tensor:
    if key not in scratch:
        raise RuntimeError(f"scratch['{key}'] is missing: the generator objective must run before the "
                           f"discriminator objective in the same step.")
    return scratch[key]


# ---------------------------------------------------------------------- CUT


def _nce(generator: ResnetGenerator, head: nn.Module, source_feats: list[torch.Tensor],
         translated: torch.Tensor, layers: Sequence[int], tau: float,
         rng: torch.Generator | None) -> torch.Tensor:
    """PatchNCE between ``translated`` (queries) and its source's features (keys), averaged over layers."""
    keys, ids = head(source_feats, generator=rng)
    queries, _ = head(generator.features(translated, layers), patch_ids=ids)
    batch = translated.shape[0]
    losses = [patch_nce_loss(q, k, batch, tau) for q, k in zip(queries, keys)]
    return torch.stack(losses).mean()


def cut_objectives(weights: TranslationLossWeights,
                   layers: Sequence[int] = DEFAULT_NCE_LAYERS) -> list[Objective]:
    """CUT (Park et al. 2020): LSGAN + PatchNCE; modules "G" (a->b), "F" (PatchSampleMLP), "D" (judges b).

    One-sided: there is no inverse generator, so it costs about half of
    CycleGAN per step, and PatchNCE ties each output patch to the input patch
    at the same place instead of demanding an invertible mapping, which EM
    domain pairs (e.g. different membrane contrast) often do not have.
    The caller builds optimiser "G" over the parameters of G and F and
    optimiser "D" over D's (see :func:`translator_param_groups`).
    """
    layers = tuple(layers)

    def generator_loss(modules: dict[str, nn.Module], batch: Batch, scratch: dict) -> LossOutput:
        g, head, disc = modules["G"], modules["F"], modules["D"]
        a, b = batch["a"], batch["b"]
        n = a.shape[0]
        run_nce = weights.nce > 0
        use_idt = run_nce and weights.nce_identity
        if use_idt and a.shape[1:] == b.shape[1:]:  # one pass over a and b: same result, less overhead
            out, feats = g.forward_with_features(torch.cat([a, b]), layers)
            fake, idt = _split(out, n)
            feats_a = [f[:n] for f in feats]
            feats_b = [f[n:] for f in feats]
        else:
            fake, feats_a = g.forward_with_features(a, layers)
            if use_idt:
                idt, feats_b = g.forward_with_features(b, layers)
        g_gan = lsgan_loss(disc(fake), real=True)
        parts = {"g_gan": g_gan.item()}
        total = weights.gan * g_gan
        if run_nce:
            rng = scratch.get("generator")
            nce = _nce(g, head, feats_a, fake, layers, weights.nce_tau, rng)
            parts["nce"] = nce.item()
            if use_idt:
                nce_idt = _nce(g, head, feats_b, idt, layers, weights.nce_tau, rng)
                parts["nce_idt"] = nce_idt.item()
                nce = 0.5 * (nce + nce_idt)
            total = total + weights.nce * nce
        scratch["fake"] = fake.detach()
        parts["g_loss"] = total.item()
        return total, parts

    def discriminator_loss(modules: dict[str, nn.Module], batch: Batch, scratch: dict) -> LossOutput:
        disc = modules["D"]
        d_real = lsgan_loss(disc(batch["b"]), real=True)
        d_fake = lsgan_loss(disc(_stored(scratch, "fake")), real=False)
        total = 0.5 * (d_real + d_fake)
        return total, {"d_real": d_real.item(), "d_fake": d_fake.item(), "d_loss": total.item()}

    return [Objective(generator_loss, "G"), Objective(discriminator_loss, "D")]


# ---------------------------------------------------------------------- CycleGAN


def cyclegan_objectives(weights: TranslationLossWeights) -> list[Objective]:
    """CycleGAN (Zhu et al. 2017): LSGAN both ways + cycle L1 + identity L1.

    Modules "G" (a->b), "G_inv" (b->a), "D" (judges b) and "D_inv" (judges a);
    optimiser "G" covers G and G_inv, optimiser "D" covers D and D_inv. The
    fakes are stored detached as ``scratch["fake"]`` (a->b) and
    ``scratch["fake_inv"]`` (b->a). No history pool of past fakes is kept: the
    discriminators see the current step's fakes only.
    """

    def generator_loss(modules: dict[str, nn.Module], batch: Batch, scratch: dict) -> LossOutput:
        g, g_inv = modules["G"], modules["G_inv"]
        a, b = batch["a"], batch["b"]
        n = a.shape[0]
        use_idt = weights.identity > 0 and weights.cycle > 0
        if use_idt and a.shape[1:] == b.shape[1:]:
            fake, idt_b = _split(g(torch.cat([a, b])), n)
            fake_inv, idt_a = _split(g_inv(torch.cat([b, a])), b.shape[0])
        else:
            fake, fake_inv = g(a), g_inv(b)
            if use_idt:
                idt_b, idt_a = g(b), g_inv(a)
        g_gan = lsgan_loss(modules["D"](fake), real=True)
        g_gan_inv = lsgan_loss(modules["D_inv"](fake_inv), real=True)
        total = weights.gan * (g_gan + g_gan_inv)
        parts = {"g_gan": g_gan.item(), "g_gan_inv": g_gan_inv.item()}
        if weights.cycle > 0:
            cycle = F.l1_loss(g_inv(fake), a) + F.l1_loss(g(fake_inv), b)
            total = total + weights.cycle * cycle
            parts["cycle"] = cycle.item()
        if use_idt:
            idt = F.l1_loss(idt_b, b) + F.l1_loss(idt_a, a)
            total = total + weights.cycle * weights.identity * idt
            parts["identity"] = idt.item()
        scratch["fake"], scratch["fake_inv"] = fake.detach(), fake_inv.detach()
        parts["g_loss"] = total.item()
        return total, parts

    def discriminator_loss(modules: dict[str, nn.Module], batch: Batch, scratch: dict) -> LossOutput:
        d, d_inv = modules["D"], modules["D_inv"]
        loss_b = 0.5 * (lsgan_loss(d(batch["b"]), True) + lsgan_loss(d(_stored(scratch, "fake")), False))
        loss_a = 0.5 * (lsgan_loss(d_inv(batch["a"]), True)
                        + lsgan_loss(d_inv(_stored(scratch, "fake_inv")), False))
        total = loss_b + loss_a
        return total, {"d_loss": loss_b.item(), "d_inv_loss": loss_a.item()}

    return [Objective(generator_loss, "G"), Objective(discriminator_loss, "D")]


# ---------------------------------------------------------------------- modules


def translator_modules(kind: str, width: int, n_blocks: int, disc_width: int, seed: int, *,
                       n_down: int = 2, disc_layers: int = 3,
                       layers: Sequence[int] = DEFAULT_NCE_LAYERS, nce_dim: int = 256,
                       num_patches: int = 256) -> dict[str, nn.Module]:
    """Freshly initialised modules for ``kind`` "cut" or "cyclegan" (reproducible for a seed).

    For CUT the PatchNCE head is built eagerly for ``layers`` (pass the same
    layers to :func:`cut_objectives`); ``nce_dim`` and ``num_patches`` default
    to CUT's 256.
    """
    if kind not in TRANSLATORS:
        raise ConfigError(f"Unknown translator '{kind}'; valid translators: {', '.join(TRANSLATORS)}.")
    torch.manual_seed(seed)

    def fresh(module: nn.Module) -> nn.Module:  # initialised at once: G's weights depend on G alone
        init_weights(module)
        return module

    modules: dict[str, nn.Module] = {"G": fresh(ResnetGenerator(width, n_blocks, n_down))}
    if kind == "cyclegan":
        modules["G_inv"] = fresh(ResnetGenerator(width, n_blocks, n_down))
    modules["D"] = fresh(PatchDiscriminator(disc_width, disc_layers))
    if kind == "cyclegan":
        modules["D_inv"] = fresh(PatchDiscriminator(disc_width, disc_layers))
    else:
        channels = modules["G"].feature_channels(layers)
        modules["F"] = fresh(PatchSampleMLP(channels, nce_dim, num_patches))
    return modules


def translator_param_groups(kind: str, modules: dict[str, nn.Module]) -> dict[str, list[nn.Parameter]]:
    """{"G": generator-side parameters, "D": discriminator parameters} for the two optimisers."""
    if kind not in TRANSLATORS:
        raise ConfigError(f"Unknown translator '{kind}'; valid translators: {', '.join(TRANSLATORS)}.")
    names = {"cut": (("G", "F"), ("D",)), "cyclegan": (("G", "G_inv"), ("D", "D_inv"))}[kind]
    return {group: [p for key in keys for p in modules[key].parameters()]
            for group, keys in zip(("G", "D"), names)}
