"""nn.Module layers and models built on the ops: VSML, MANN, the neural processes (CNP, NP, ANP) (more
methods follow), and the meta-RNN baseline."""
from metalearn_ext.nn.blur import BLUR
from metalearn_ext.nn.conv4 import Conv4
from metalearn_ext.nn.maml import MAML
from metalearn_ext.nn.mann import MANN
from metalearn_ext.nn.meta_rnn import MetaRNN
from metalearn_ext.nn.metanet import MetaNet
from metalearn_ext.nn.mlp import MLP
from metalearn_ext.nn.neural_process import ANP, CNP, LatentNP, NeuralProcess
from metalearn_ext.nn.protonet import ProtoNet
from metalearn_ext.nn.vsml import FEEDBACK_MODES, VSML, VSMLState
from metalearn_ext.nn.vsml_layer import VSMLLayer

__all__ = ["ANP", "BLUR", "CNP", "FEEDBACK_MODES", "LatentNP", "MAML", "MANN", "MLP", "VSML", "Conv4", "MetaNet",
           "MetaRNN", "NeuralProcess", "ProtoNet", "VSMLLayer", "VSMLState"]
