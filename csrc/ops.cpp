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
}
