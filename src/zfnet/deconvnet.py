"""``zfnet.deconvnet.Deconvnet``: the deconvnet of the paper's §2.1 (it lives in ``zfnet.visualize``)."""

from .visualize.deconvnet import KEEP_MODES, SUPPORTED_MODULES, Deconvnet

__all__ = ["Deconvnet", "KEEP_MODES", "SUPPORTED_MODULES"]
