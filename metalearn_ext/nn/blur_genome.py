"""BLUR's genome (specs/blur.md §1): the few numbers that define the forward pass, the backward pass
and the synapse update of a whole network, shared by every synapse (one per network or one per layer).

Names (spec symbol → parameter):  f → ``f``, η → ``eta``, ν → ``nu``, μ → ``mu`` (the neuron updates);
f̃ → ``f_hebb``, η̃ → ``eta_hebb``, ν̃ → ``nu_hebb``, μ̃ → ``mu_hebb`` (the synapse update). Scalars are of
shape (G,), matrices (G, k, k), with G = 1 (one genome) or the number of layers (one per layer).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GENOME_INITS", "GENOME_NAMES", "GENOME_SCALARS", "BLURGenome", "backprop_genome_values"]

GENOME_SCALARS = ("f", "eta", "f_hebb", "eta_hebb")
GENOME_MATRICES = ("nu", "mu", "nu_hebb", "mu_hebb")
GENOME_NAMES = GENOME_SCALARS + GENOME_MATRICES
GENOME_INITS = ("backprop", "random")


def backprop_genome_values(states: int, lr: float) -> dict[str, Tensor]:
    """The genome with which BLUR is SGD on ½Σ_b‖y − ŷ‖² (float64 tensors, scalars () and matrices (k, k)).

    State 0 carries activations, state 1 a target. Forward (ν: both states of a neuron receive
    Σ_i w_ij a_i,0): h = W x in state 0 and state 1. The label y is written into state 1 of the
    output. Backward (μ: state 1 of a hidden neuron adds Σ_j w_ij (a_j,1 − a_j,0), state 0 keeps
    its value, f = η = 1): state 1 of a hidden neuron becomes h + Wᵀ-propagated error, i.e. its
    target, and state 1 − state 0 is exactly backprop's error signal. Update (ν̃ reads the
    pre-synaptic activation, μ̃ forms state 1 − state 0 of the post-synaptic neuron, on every
    channel): Δw_ij = lr Σ_b a_i (t_j − a_j) = −lr ∂L/∂w_ij.

    Exact for any depth when the activations are the identity, normalization is off, the initial
    synapses are equal on channels 0 and 1 (the update keeps them equal) and the extra states of
    k > 2 are zero (their rows and columns are zero here).
    """
    k = states
    if k < 2:
        raise ValueError(f"backprop_genome_values: states must be >= 2 (activation and target), got {k}")
    z = lambda: torch.zeros(k, k, dtype=torch.float64)
    nu, mu, nu_hebb, mu_hebb = z(), z(), z(), z()
    nu[0, 0] = nu[1, 0] = 1.0
    mu[1, 0], mu[1, 1] = -1.0, 1.0
    nu_hebb[0, 0] = nu_hebb[0, 1] = 1.0
    mu_hebb[0, 0] = mu_hebb[1, 0] = -1.0
    mu_hebb[0, 1] = mu_hebb[1, 1] = 1.0
    one = torch.tensor(1.0, dtype=torch.float64)
    return {"f": one, "eta": one.clone(), "f_hebb": one.clone(), "eta_hebb": torch.tensor(float(lr), dtype=torch.float64),
            "nu": nu, "mu": mu, "nu_hebb": nu_hebb, "mu_hebb": mu_hebb}


class BLURGenome(nn.Module):
    """The meta-parameters f, η, f̃, η̃ (G,) and ν, μ, ν̃, μ̃ (G, k, k) of G genomes.

    Args:
        states: k, neuron states per neuron and channels per synapse.
        genomes: G (1: one genome for the whole network; L: one per layer).
        init: "backprop" (:func:`backprop_genome_values` with η̃ = ``lr``, plus N(0, noise²) on every
            entry, so meta-training starts from an SGD-like rule) or "random" (f = η = f̃ = 1,
            η̃ = ``lr``, matrices N(0, 1/k)).
        lr: the initial η̃.
        noise: std of the perturbation of the "backprop" init (drawn from torch's global RNG).
    """

    def __init__(self, states: int, genomes: int = 1, init: str = "backprop", lr: float = 0.05,
                 noise: float = 0.1) -> None:
        super().__init__()
        if init not in GENOME_INITS:
            raise ValueError(f"BLURGenome: init must be one of {GENOME_INITS}, got {init!r}")
        if states < 2:
            raise ValueError(f"BLURGenome: states must be >= 2 (the label goes into state 1), got {states}")
        if genomes < 1:
            raise ValueError(f"BLURGenome: genomes must be >= 1, got {genomes}")
        k, G = states, genomes
        base = backprop_genome_values(k, lr)
        for name in GENOME_NAMES:
            shape = (G,) + tuple(base[name].shape)
            if init == "backprop":
                value = base[name].float().expand(shape) + noise * torch.randn(shape)
            elif name in GENOME_SCALARS:
                value = base[name].float().expand(shape).clone()
            else:
                value = torch.randn(shape) / k**0.5
            setattr(self, name, nn.Parameter(value.contiguous()))
        self.states, self.genomes = k, G

    def load_values(self, values: dict[str, Tensor]) -> None:
        """Set every genome to ``values`` (scalars (), matrices (k, k); e.g. :func:`backprop_genome_values`)."""
        with torch.no_grad():
            for name in GENOME_NAMES:
                p = getattr(self, name)
                p.copy_(values[name].to(p).expand_as(p))

    def shared(self) -> dict[str, Tensor]:
        """name -> the parameter itself, (G,) or (G, k, k)."""
        return {name: getattr(self, name) for name in GENOME_NAMES}
