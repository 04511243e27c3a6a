"""Bad input to blur_propagate and blur_hebbian raises an error naming the argument and the expected shape,
from Python and from C++ (torch.ops called directly)."""
from __future__ import annotations

import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.blur_hebbian import blur_hebbian
from metalearn_ext.ops.blur_propagate import blur_propagate
from metalearn_ext.ops.blur_propagate.inputs import hebbian_inputs, propagate_inputs

T, B, I, J, k = 2, 3, 5, 4, 3
PROP = ["a", "weight", "mix"]
HEBB = ["weight", "pre", "post", "pre_mix", "post_mix", "decay", "lr"]

PROP_CASES = {  # case -> (argument, replacement, transpose, pattern)
    "a_rank": ("a", torch.zeros(T, B, I), False, r"a must be of shape \(T, batch, I, k\) = \(2, batch, 5, 3\)"),
    "a_I": ("a", torch.zeros(T, B, I + 1, k), False, r"a must be of shape \(T, batch, I, k\)"),
    "a_J_transpose": ("a", torch.zeros(T, B, I, k), True, r"a must be of shape \(T, batch, J, k\) = \(2, batch, 4, 3\) "
                                                          r"\(transpose=True"),
    "a_k": ("a", torch.zeros(T, B, I, k + 1), False, r"a must be of shape"),
    "a_T": ("a", torch.zeros(T + 1, B, I, k), False, r"a must be of shape"),
    "a_batch0": ("a", torch.zeros(T, 0, I, k), False, r"a must be of shape"),
    "weight_rank": ("weight", torch.zeros(T, I, J), False, r"weight must be a non-empty tensor of shape \(T, I, J, k\)"),
    "weight_empty": ("weight", torch.zeros(T, I, 0, k), False, r"weight must be a non-empty tensor"),
    "mix_k": ("mix", torch.zeros(k + 1, k + 1), False, r"mix must be of shape \(k, k\) = \(3, 3\) or \(T, k, k\) = "
                                                       r"\(2, 3, 3\)"),
    "mix_T": ("mix", torch.zeros(T + 1, k, k), False, r"mix must be of shape \(k, k\)"),
    "weight_dtype": ("weight", torch.zeros(T, I, J, k, dtype=torch.float64), False, r"weight must be of dtype"),
    "mix_dtype": ("mix", torch.zeros(k, k, dtype=torch.float64), False, r"mix must be of dtype"),
    "a_integer": ("a", torch.zeros(T, B, I, k, dtype=torch.int64), False, r"a must be"),
}

HEBB_CASES = {  # case -> (argument, replacement, pattern)
    "weight_rank": ("weight", torch.zeros(T, I, J), r"weight must be a non-empty tensor of shape \(T, I, J, k\)"),
    "pre_I": ("pre", torch.zeros(T, B, I + 1, k), r"pre must be of shape \(T, batch, I, k\) = \(2, batch, 5, 3\)"),
    "pre_k": ("pre", torch.zeros(T, B, I, k + 1), r"pre must be of shape"),
    "post_J": ("post", torch.zeros(T, B, J + 1, k), r"post must be of shape \(T, batch, J, k\) = \(2, 3, 4, 3\)"),
    "post_batch": ("post", torch.zeros(T, B + 1, J, k), r"post must be of shape .* \(batch from pre"),
    "pre_mix_k": ("pre_mix", torch.zeros(k - 1, k - 1), r"pre_mix must be of shape \(k, k\) = \(3, 3\)"),
    "post_mix_T": ("post_mix", torch.zeros(T + 1, k, k), r"post_mix must be of shape \(k, k\)"),
    "decay_shape": ("decay", torch.ones(T + 1), r"decay must be (a scalar or )?of shape \(T,\) = \(2\)"),
    "lr_shape": ("lr", torch.ones(T, 1), r"lr must be (a scalar or )?of shape \(T,\) = \(2\)"),
    "decay_nan": ("decay", torch.tensor([1.0, float("nan")]), r"decay must be finite"),
    "lr_inf": ("lr", torch.tensor([float("inf"), 1.0]), r"lr must be finite"),
    "post_dtype": ("post", torch.zeros(T, B, J, k, dtype=torch.float64), r"post must be of dtype"),
}


def _cpp():
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)


def prop_args(case):
    arg, value, transpose, pattern = PROP_CASES[case]
    kwargs = dict(zip(PROP, propagate_inputs(T, B, I, J, k, transpose=transpose)))
    kwargs[arg] = value
    return kwargs, transpose, pattern


def hebb_args(case):
    arg, value, pattern = HEBB_CASES[case]
    kwargs = dict(zip(HEBB, hebbian_inputs(T, B, I, J, k)))
    kwargs[arg] = value
    return kwargs, pattern


@pytest.mark.parametrize("case", sorted(PROP_CASES))
def test_propagate_python_errors(case):
    kwargs, transpose, pattern = prop_args(case)
    with pytest.raises(ValueError, match=pattern):
        blur_propagate(**kwargs, transpose=transpose)


@pytest.mark.parametrize("case", sorted(PROP_CASES))
def test_propagate_cpp_errors(case):
    _cpp()
    kwargs, transpose, pattern = prop_args(case)
    with pytest.raises(ValueError, match=pattern):
        torch.ops.metalearn_ext.blur_propagate(*[kwargs[n] for n in PROP], transpose)


@pytest.mark.parametrize("case", sorted(HEBB_CASES))
def test_hebbian_python_errors(case):
    kwargs, pattern = hebb_args(case)
    with pytest.raises(ValueError, match=pattern):
        blur_hebbian(**kwargs)


@pytest.mark.parametrize("case", sorted(HEBB_CASES))
def test_hebbian_cpp_errors(case):
    _cpp()
    kwargs, pattern = hebb_args(case)
    with pytest.raises(ValueError, match=pattern):
        torch.ops.metalearn_ext.blur_hebbian(*[kwargs[n] for n in HEBB], True, False)


def test_non_tensor_and_flag_types():
    kwargs = dict(zip(PROP, propagate_inputs(T, B, I, J, k)))
    with pytest.raises(TypeError, match="mix must be a torch.Tensor"):
        blur_propagate(kwargs["a"], kwargs["weight"], [[0.0] * k] * k)
    with pytest.raises(TypeError, match="transpose must be a bool"):
        blur_propagate(**kwargs, transpose=1)
    hk = dict(zip(HEBB, hebbian_inputs(T, B, I, J, k)))
    with pytest.raises(TypeError, match="normalize must be a bool"):
        blur_hebbian(**hk, normalize="yes")
    with pytest.raises(TypeError, match="decay must be a float or a tensor"):
        blur_hebbian(**{**hk, "decay": "0.9"})


def test_mixed_devices_python():
    kwargs = dict(zip(PROP, propagate_inputs(T, B, I, J, k)))
    kwargs["mix"] = kwargs["mix"].to("meta")
    with pytest.raises(ValueError, match="mix must be on device cpu like a"):
        blur_propagate(**kwargs)
    hk = dict(zip(HEBB, hebbian_inputs(T, B, I, J, k)))
    hk["pre"] = hk["pre"].to("meta")
    with pytest.raises(ValueError, match="pre must be on device cpu like weight"):
        blur_hebbian(**hk)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second real device")
def test_mixed_devices_cpp():
    if not metalearn_ext.backends()["cuda"].available:
        pytest.skip(metalearn_ext.backends()["cuda"].reason)
    a, weight, mix = [x.cuda() for x in propagate_inputs(T, B, I, J, k)]
    with pytest.raises((ValueError, RuntimeError), match="mix"):
        torch.ops.metalearn_ext.blur_propagate(a, weight, mix.cpu(), False)


def test_cpp_backward_checks_gradient_shapes():
    _cpp()
    a, weight, mix = propagate_inputs(T, B, I, J, k)
    with pytest.raises(ValueError, match=r"grad must be of shape \(2, 3, 4, 3\)"):
        torch.ops.metalearn_ext.blur_propagate_backward(torch.zeros(T, B, J + 1, k), a, weight, mix, False)
    hk = hebbian_inputs(T, B, I, J, k)
    with pytest.raises(ValueError, match=r"grad must be of shape \(T, I, J, k\) = \(2, 5, 4, 3\)"):
        torch.ops.metalearn_ext.blur_hebbian_backward(torch.zeros(T, I, J, k + 1), *hk, True, False)
