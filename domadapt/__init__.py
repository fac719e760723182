"""domadapt: unsupervised domain adaptation of mitochondria segmentation in EM volumes."""

__version__ = "0.1.0"
