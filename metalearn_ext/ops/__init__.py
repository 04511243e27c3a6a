"""Kernels with a reference beside each: `vsml_step`."""
from metalearn_ext.ops.vsml_step import vsml_step

__all__ = ["vsml_step"]
