// Fused bias + activation + gain + clamp: argument checks, dtype dispatch and the Python binding.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>
#include "bias_act.h"

//----------------------------------------------------------------------------
// An optional reference tensor must be empty or match x in device, dtype, shape and memory layout.

static bool has_same_layout(const at::Tensor& x, const at::Tensor& t) {
    if (t.sizes() != x.sizes())
        return false;
    for (int64_t d = 0; d < x.dim(); d++)
        if (x.size(d) > 1 && t.stride(d) != x.stride(d))
            return false;
    return true;
}

static const void* optional_pointer(const at::Tensor& x, const at::Tensor& t, const char* name) {
    if (t.numel() == 0)
        return nullptr;
    TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must be on the same device as x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the same dtype as x");
    TORCH_CHECK(has_same_layout(x, t), "bias_act: ", name, " must have the same shape and strides as x");
    return t.data_ptr();
}

//----------------------------------------------------------------------------
// y = bias_act(x, b, xref, yref, dy, mode, ...): see bias_act.h for the meaning of each mode.

static at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor xref, at::Tensor yref, at::Tensor dy, int64_t mode,
                           int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must reside on a CUDA device");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kDouble,
                "bias_act: x must be float16, float32 or float64");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense (contiguous in some memory format)");
    TORCH_CHECK(0 <= dim && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(0 <= mode && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(1 <= act && act <= 9, "bias_act: unknown activation index");
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.size(0) == x.size(dim)), "bias_act: b must be [x.shape[dim]]");
    TORCH_CHECK(b.numel() == 0 || (b.is_contiguous() && b.device() == x.device() && b.scalar_type() == x.scalar_type()),
                "bias_act: b must be contiguous, on the device of x and of its dtype");
    TORCH_CHECK(mode != 2 || dy.numel() > 0, "bias_act: mode 2 needs dy");
    const bool needs_yref = mode > 0 && ((2 <= act && act <= 8) || clamp >= 0); // Derivative read from y, or clamp.
    const bool needs_xref = mode > 0 && act == 9;                                 // Swish: derivative read from x.
    TORCH_CHECK(!needs_yref || yref.numel() > 0, "bias_act: this activation/clamp needs yref for gradients");
    TORCH_CHECK(!needs_xref || xref.numel() > 0, "bias_act: this activation needs xref for gradients");

    c10::cuda::CUDAGuard device_guard(x.device());
    at::Tensor y = at::empty_like(x); // Non-overlapping and dense: keeps the strides of x.
    bias_act_kernel_params p;
    p.x = x.data_ptr();
    p.b = b.numel() ? b.data_ptr() : nullptr;
    p.xref = optional_pointer(x, xref, "xref");
    p.yref = optional_pointer(x, yref, "yref");
    p.dy = optional_pointer(x, dy, "dy");
    p.y = y.data_ptr();
    p.n = x.numel();
    p.size_dim = x.size(dim);
    p.stride_dim = p.size_dim > 1 ? x.stride(dim) : 1;
    TORCH_CHECK(p.stride_dim >= 1, "bias_act: the bias dimension of x must have a positive stride");
    p.mode = static_cast<int>(mode);
    p.act = static_cast<int>(act);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;

    cudaError_t err = cudaSuccess;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
        err = launch_bias_act_kernel<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "bias_act: kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

//----------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (forward and gradients).");
}
