"""nn.Module layers and models built on the ops: VSML (more methods follow), and the meta-RNN baseline."""
from metalearn_ext.nn.meta_rnn import MetaRNN
from metalearn_ext.nn.vsml import FEEDBACK_MODES, VSML, VSMLState
from metalearn_ext.nn.vsml_layer import VSMLLayer

__all__ = ["FEEDBACK_MODES", "VSML", "MetaRNN", "VSMLLayer", "VSMLState"]
