"""nn.Module layers and models built on the ops: VSML (more methods follow), and the meta-RNN baseline."""
from metalearn_ext.nn.conv4 import Conv4
from metalearn_ext.nn.maml import MAML
from metalearn_ext.nn.meta_rnn import MetaRNN
from metalearn_ext.nn.mlp import MLP
from metalearn_ext.nn.protonet import ProtoNet
from metalearn_ext.nn.vsml import FEEDBACK_MODES, VSML, VSMLState
from metalearn_ext.nn.vsml_layer import VSMLLayer

__all__ = ["FEEDBACK_MODES", "MAML", "MLP", "VSML", "Conv4", "MetaRNN", "ProtoNet", "VSMLLayer", "VSMLState"]
