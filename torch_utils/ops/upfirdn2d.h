// Upsample, FIR filter, downsample (upfirdn2d): kernel parameters shared by upfirdn2d.cpp and upfirdn2d.cu.
// The maths is documented in upfirdn2d.py (_upfirdn2d_ref is the exact reference).

#pragma once
#include <cstdint>
#include <cuda_runtime.h>

//----------------------------------------------------------------------------
// One launch: every output pixel is a correlation of the zero-stuffed, padded input with the (flipped) filter.

struct upfirdn2d_kernel_params {
    const void* x;          // [N, C, in_h, in_w] input, arbitrary strides.
    const void* f;          // [f_h, f_w] contiguous filter: float32, or float64 for float64 x.
    void*       y;          // [N, C, out_h, out_w] output, strides below.
    int64_t     n, c, in_h, in_w;
    int64_t     out_h, out_w;
    int64_t     x_stride_n, x_stride_c, x_stride_h, x_stride_w;
    int64_t     y_stride_n, y_stride_c, y_stride_h, y_stride_w;
    int64_t     f_h, f_w;
    int         up_x, up_y, down_x, down_y;
    int         pad_x0, pad_y0; // Leading padding; negative values crop. Trailing padding only sets out_h/out_w.
    int         flip_filter;    // 0: true convolution (filter flipped), 1: plain correlation.
    int         channels_last;  // Enumerate outputs channel-fastest so that channels-last writes coalesce.
    double      gain;
};

//----------------------------------------------------------------------------
// Launches the kernel for element type T (float, double, c10::Half) on the given stream.

template <typename T>
cudaError_t launch_upfirdn2d_kernel(const upfirdn2d_kernel_params& p, cudaStream_t stream);
