"""nn.Module layers and models built on the ops: VSML (more methods follow)."""
from metalearn_ext.nn.vsml import FEEDBACK_MODES, VSML, VSMLState
from metalearn_ext.nn.vsml_layer import VSMLLayer

__all__ = ["FEEDBACK_MODES", "VSML", "VSMLLayer", "VSMLState"]
