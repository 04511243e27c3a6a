"""metalearn-ext: fast model-based meta-learning for PyTorch.

Importing never fails because a kernel backend is missing: `backends()` says what is usable.
"""
from metalearn_ext._backends import BackendStatus, backends
from metalearn_ext import ops
from metalearn_ext.ops import vsml_step

__version__ = "0.1.0"
__all__ = ["BackendStatus", "backends", "ops", "vsml_step", "__version__"]
