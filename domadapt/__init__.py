"""domadapt: unsupervised domain adaptation of mitochondria segmentation in EM volumes."""

__version__ = "0.1.0"


def load_model(ref):
    """The model a run folder selected, or a checkpoint's: see :mod:`domadapt.api`."""
    from domadapt.api import load_model as _load

    return _load(ref)
