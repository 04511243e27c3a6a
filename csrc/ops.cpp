// Every op schema of metalearn_ext in one place; kernels register per dispatch key in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import metalearn_ext._C` loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(metalearn_ext, m) {
  // specs/vsml.md §1. h, c (T,A,B,N); fwd_in (T,A,M); bwd_in (T,B,M); weight (4N,2M+N) or (T,4N,2M+N);
  // bias (4N) or (T,4N). Returns (h', c', fwd_mean (T,B,N), bwd_mean (T,A,N)).
  m.def("vsml_step(Tensor h, Tensor c, Tensor fwd_in, Tensor bwd_in, Tensor weight, Tensor bias, int ticks)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of vsml_step w.r.t. its six tensor inputs, recomputed from those inputs.
  m.def("vsml_step_backward(Tensor grad_h, Tensor grad_c, Tensor grad_fwd_mean, Tensor grad_bwd_mean,"
        " Tensor h, Tensor c, Tensor fwd_in, Tensor bwd_in, Tensor weight, Tensor bias, int ticks)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // specs/memory_np.md §1. memory (B,S,W); keys (B,H,W); beta (B,H) or None (1).
  // Returns (weights (B,H,S) = softmax_S(beta·cos(keys, memory)), reads (B,H,W) = weights·memory).
  m.def("content_read(Tensor memory, Tensor keys, Tensor? beta) -> (Tensor, Tensor)");
  // Gradients w.r.t. memory, keys and (only when given) beta, recomputed from the inputs.
  m.def("content_read_backward(Tensor grad_weights, Tensor grad_reads, Tensor memory, Tensor keys, Tensor? beta)"
        " -> Tensor[]");
  // specs/memory_np.md §1, one LRUA step. memory (B,S,W), usage (B,S), read_weights (B,H,S), keys, add (B,H,W),
  // alpha (B,H). Returns (memory', read_weights', reads (B,H,W), usage', write_weights (B,H,S)).
  m.def("mann_memory_step(Tensor memory, Tensor usage, Tensor read_weights, Tensor keys, Tensor add, Tensor alpha,"
        " float gamma) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients w.r.t. the six tensor inputs, recomputed from them (none through the choice of slots).
  m.def("mann_memory_step_backward(Tensor grad_memory_out, Tensor grad_read_weights_out, Tensor grad_reads,"
        " Tensor grad_usage_out, Tensor grad_write_weights, Tensor memory, Tensor usage, Tensor read_weights,"
        " Tensor keys, Tensor add, Tensor alpha, float gamma) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // specs/memory_np.md §1, MANN's whole recurrence over an episode: x_gates (B,L,4n) the input part of the LSTM
  // gates [i,f,o,g] (bias included); w_rec (4n, H·W+n) on [r_{s−1} ; h_{s−1}]; w_head (2·H·W+H, n), b_head
  // (2·H·W+H): keys, add vectors, write gates; an LRUA memory of `slots` rows of width W per step.
  // Returns (h (B,L,n), reads (B,L,H·W)).
  m.def("mann_episode(Tensor x_gates, Tensor w_rec, Tensor w_head, Tensor b_head, int heads, int slots, float gamma,"
        " float memory_init) -> (Tensor, Tensor)");
  // Gradients w.r.t. x_gates, w_rec, w_head, b_head, recomputed from the inputs.
  m.def("mann_episode_backward(Tensor grad_h, Tensor grad_reads, Tensor x_gates, Tensor w_rec, Tensor w_head,"
        " Tensor b_head, int heads, int slots, float gamma, float memory_init) -> (Tensor, Tensor, Tensor, Tensor)");
  // specs/blur.md §3. a (T,batch,I,k) (transpose: (T,batch,J,k)); weight (T,I,J,k); mix (k,k) or (T,k,k).
  // Returns (T,batch,J,k) (transpose: (T,batch,I,k)).
  m.def("blur_propagate(Tensor a, Tensor weight, Tensor mix, bool transpose) -> Tensor");
  // Gradients w.r.t. a, weight, mix, recomputed from the inputs.
  m.def("blur_propagate_backward(Tensor grad, Tensor a, Tensor weight, Tensor mix, bool transpose)"
        " -> (Tensor, Tensor, Tensor)");
  // weight (T,I,J,k); pre (T,batch,I,k); post (T,batch,J,k); pre_mix, post_mix (k,k) or (T,k,k); decay, lr (T,).
  // Returns the updated synapses (T,I,J,k).
  m.def("blur_hebbian(Tensor weight, Tensor pre, Tensor post, Tensor pre_mix, Tensor post_mix, Tensor decay,"
        " Tensor lr, bool normalize, bool oja) -> Tensor");
  // Gradients w.r.t. weight, pre, post, pre_mix, post_mix, decay, lr, recomputed from the inputs.
  m.def("blur_hebbian_backward(Tensor grad, Tensor weight, Tensor pre, Tensor post, Tensor pre_mix,"
        " Tensor post_mix, Tensor decay, Tensor lr, bool normalize, bool oja)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // specs/blur.md §2, one learning step of a whole BLUR network (nn.BLUR.learning_step). weights: per layer
  // (T,n_l,n_{l+1},k); x (T,batch,n_0) standardized; code (T,batch,C) the label code; the genome stacked over
  // the L layers: f, eta, f_hebb, eta_hebb (L) or (L,T), nu, mu, nu_hebb, mu_hebb (L,k,k) or (L,T,k,k);
  // activations "relu_tanh", "tanh" or "identity". Returns (new weights, pred (T,batch,C)).
  m.def("blur_step(Tensor[] weights, Tensor x, Tensor code, Tensor f, Tensor eta, Tensor f_hebb, Tensor eta_hebb,"
        " Tensor nu, Tensor mu, Tensor nu_hebb, Tensor mu_hebb, bool normalize, bool oja, str hidden_activation,"
        " str output_activation) -> (Tensor[], Tensor)");
  // Gradients w.r.t. weights, x, code and the eight genome tensors, recomputed from the inputs; a missing
  // (None) upstream gradient counts as zero; x_grad=False skips x's (zeros).
  m.def("blur_step_backward(Tensor?[] grad_weights, Tensor? grad_pred, Tensor[] weights, Tensor x, Tensor code,"
        " Tensor f, Tensor eta, Tensor f_hebb, Tensor eta_hebb, Tensor nu, Tensor mu, Tensor nu_hebb, Tensor mu_hebb,"
        " bool normalize, bool oja, str hidden_activation, str output_activation, bool x_grad=True)"
        " -> (Tensor[], Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // specs/blur.md §2, the forward pass alone (nn.BLUR.predict; the forward half of blur_step): states start at zero
  // with x (T,batch,n_0) in state 0 of layer 0, a <- sigma(eta*propagate(a, w, nu)) through every layer; weights,
  // eta (L) or (L,T), nu (L,k,k) or (L,T,k,k) and the activations as blur_step's. Returns pred (T,batch,C), state 0
  // of the output.
  m.def("blur_forward(Tensor[] weights, Tensor x, Tensor eta, Tensor nu, str hidden_activation,"
        " str output_activation) -> Tensor");
  // Gradients w.r.t. weights, x, eta and nu, recomputed from the inputs; x_grad=False skips x's (zeros).
  m.def("blur_forward_backward(Tensor grad_pred, Tensor[] weights, Tensor x, Tensor eta, Tensor nu,"
        " str hidden_activation, str output_activation, bool x_grad=True) -> (Tensor[], Tensor, Tensor, Tensor)");
}
