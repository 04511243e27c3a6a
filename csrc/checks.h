// Readable argument checks shared by every op: each message names the argument and what was expected.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>

namespace metalearn_ext {

// "(2, 3, 4)". Only ever called to build an error message (the checks below evaluate their message
// arguments lazily), so the hot path allocates no strings.
inline std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + ")";
}

// Raises ValueError: "<op>: <arg> must be <expected>, got <shape>"; expected and got are evaluated only
// when cond fails.
#define METALEARN_CHECK_ARG(cond, op, arg, expected, got) \
  TORCH_CHECK_VALUE(cond, op, ": ", arg, " must be ", expected, ", got ", got)

inline void check_rank(const at::Tensor& t, const char* op, const char* arg, int64_t rank, const char* expected) {
  METALEARN_CHECK_ARG(t.dim() == rank, op, arg, expected, shape_str(t.sizes()));
}

inline void check_nonempty(const at::Tensor& t, const char* op, const char* arg) {
  METALEARN_CHECK_ARG(t.numel() > 0, op, arg, "non-empty (every size >= 1)", shape_str(t.sizes()));
}

inline void check_same_dtype_device(const at::Tensor& t, const at::Tensor& like, const char* op, const char* arg,
                                    const char* like_arg) {
  METALEARN_CHECK_ARG(t.scalar_type() == like.scalar_type(), op, arg,
                      std::string("of dtype ") + c10::toString(like.scalar_type()) + " like " + like_arg,
                      c10::toString(t.scalar_type()));
  METALEARN_CHECK_ARG(t.device() == like.device(), op, arg, std::string("on device ") + like.device().str() +
                      " like " + like_arg, t.device().str());
}

inline void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  METALEARN_CHECK_ARG(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, arg,
                      "float32 or float64", c10::toString(t.scalar_type()));
}

}  // namespace metalearn_ext
