// Fused bias + activation + gain + clamp: kernel parameters shared by bias_act.cpp and bias_act.cu.
// The maths of each mode is documented in bias_act.py (_bias_act_cuda).

#pragma once
#include <cstdint>
#include <cuda_runtime.h>

//----------------------------------------------------------------------------
// One launch of the elementwise kernel. All tensors share the layout of x, except b.

struct bias_act_kernel_params {
    const void* x;          // [n] input (mode 0) or incoming gradient (modes 1 and 2).
    const void* b;          // [size_dim] bias, or nullptr.
    const void* xref;       // [n] forward input x (activations differentiated from x), or nullptr.
    const void* yref;       // [n] forward output y (activations differentiated from y, and clamp), or nullptr.
    const void* dy;         // [n] upstream gradient of the forward pass (mode 2 only), or nullptr.
    void*       y;          // [n] output.
    int64_t     n;          // Number of elements.
    int64_t     stride_dim; // Storage stride of the bias dimension.
    int64_t     size_dim;   // Extent of the bias dimension.
    int         mode;       // 0 = forward, 1 = first-order gradient, 2 = second-order gradient w.r.t. x.
    int         act;        // Activation index, activation_funcs[...].cuda_idx in bias_act.py.
    double      alpha;      // Activation shape parameter (lrelu slope).
    double      gain;       // Output scale.
    double      clamp;      // Output clamp; negative disables clamping.
};

//----------------------------------------------------------------------------
// Launches the kernel for element type T (float, double, c10::Half) on the given stream.

template <typename T>
cudaError_t launch_bias_act_kernel(const bias_act_kernel_params& p, cudaStream_t stream);
