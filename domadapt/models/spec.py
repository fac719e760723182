"""What a checkpoint says its predictor is, and how to rebuild it without knowing the strategy.

Every segmentation checkpoint stores ``model_spec`` (the U-Net's architecture), the name
of the module that segments (``predictor``) and, when the model expects harmonized
images, ``harmonizer``: plain data (kind, arguments, tensors) that rebuilds the
harmonizer placed in front of the U-Net. Prediction, selection replay and fine-tuning
read checkpoints through this module only.
"""

from __future__ import annotations

from torch import nn

from domadapt.data import harmonize
from domadapt.models.translation import ResnetGenerator
from domadapt.models.unet import build_unet

#: Harmonizers that map intensities pixel by pixel (a lookup table).
POINTWISE = ("histogram", "meanstd", "equalize")
#: Harmonizers that are trained translators.
LEARNED = ("cut", "cyclegan")


def unet_spec(model) -> dict:
    """The ``model_spec`` of a checkpoint from a ``ModelConfig``."""
    return {"kind": "unet", **model.__dict__}


def is_unet(payload: dict) -> bool:
    return payload.get("model_spec", {}).get("kind") == "unet"


def unet_from_spec(spec: dict) -> nn.Module:
    """An untrained U-Net of the stored architecture."""
    return build_unet(spec["arch"], spec["width"], spec["depth"], spec["norm"])


def harmonizer_spec(kind: str, module: nn.Module, style=None) -> dict:
    """Plain data that :func:`harmonizer_from_spec` rebuilds (``style``: a learned
    translator's generator settings)."""
    args: dict = {}
    if kind == "fda":
        args = {"beta": module.beta}
    elif kind in LEARNED:
        args = {"width": style.generator_width, "n_blocks": style.generator_blocks}
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return {"kind": kind, "args": args, "state": state}


def harmonizer_from_spec(spec: dict) -> nn.Module:
    """The harmonizer a checkpoint stored, in eval mode."""
    from domadapt.errors import CheckpointError

    kind, args, state = spec["kind"], spec["args"], spec["state"]
    if kind in POINTWISE:
        module: nn.Module = harmonize.IntensityMap(state["xp"], state["fp"])
    elif kind == "fda":
        module = harmonize.FourierAmplitudeSwap(state["amplitude"], args["beta"])
    elif kind in LEARNED:
        module = ResnetGenerator(width=args["width"], n_blocks=args["n_blocks"])
        module.load_state_dict(state)
    else:
        raise CheckpointError(f"Unknown harmonizer kind '{kind}' in checkpoint.")
    return module.eval()


def with_harmonizer(net: nn.Module, spec: dict | None) -> nn.Module:
    """``net`` behind the harmonizer ``spec`` describes (``net`` itself when there is none)."""
    return nn.Sequential(harmonizer_from_spec(spec), net) if spec else net
