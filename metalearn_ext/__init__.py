"""metalearn-ext: fast model-based meta-learning for PyTorch.

Importing never fails because a kernel backend is missing: `backends()` says what is usable.
"""
from metalearn_ext import ops  # first: registers every op, which _backends iterates
from metalearn_ext._backends import BackendStatus, backends, load_extension
from metalearn_ext.allocator import keep_freed_memory
from metalearn_ext.ops import *  # noqa: F403  every op's function: vsml_step, ...

# torch.ops.metalearn_ext.* with their fakes and autograd, right after `import metalearn_ext`.
load_extension()

__version__ = "0.1.0"


def load_run(run_dir):
    """The trained model of a run directory, in eval mode, its config at ``.config`` (see
    :func:`metalearn_ext.train.load_run`)."""
    from metalearn_ext.train.run_dir import load_run as _load_run

    return _load_run(run_dir)


__all__ = ["BackendStatus", "backends", "keep_freed_memory", "load_run", "ops", *ops.__all__, "__version__"]
