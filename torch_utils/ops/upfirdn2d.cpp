// Upsample, FIR filter, downsample (upfirdn2d): argument checks, dtype dispatch and the Python binding.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>
#include "upfirdn2d.h"

//----------------------------------------------------------------------------
// y = upfirdn2d(x, f, ...): x [N, C, H, W] of any strides, f [fh, fw]; the output keeps the memory format of x.

static at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                            int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter,
                            double gain) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must reside on a CUDA device");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be rank 4 [N, C, H, W]");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kDouble,
                "upfirdn2d: x must be float16, float32 or float64");
    const auto filter_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x");
    TORCH_CHECK(f.scalar_type() == filter_dtype, "upfirdn2d: f must be float64 for float64 x, else float32");
    TORCH_CHECK(f.dim() == 2 && f.is_contiguous() && f.numel() > 0, "upfirdn2d: f must be a contiguous [fh, fw]");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    TORCH_CHECK(std::max({up_x, up_y, down_x, down_y, std::abs(pad_x0), std::abs(pad_y0)}) < (int64_t(1) << 30),
                "upfirdn2d: up, down or padding too large");

    const int64_t span_h = x.size(2) * up_y + pad_y0 + pad_y1 - f.size(0);
    const int64_t span_w = x.size(3) * up_x + pad_x0 + pad_x1 - f.size(1);
    TORCH_CHECK(span_h >= 0 && span_w >= 0, "upfirdn2d: the padded input is smaller than the filter");
    const int64_t out_h = span_h / down_y + 1;
    const int64_t out_w = span_w / down_x + 1;

    c10::cuda::CUDAGuard device_guard(x.device());
    const auto memory_format = x.suggest_memory_format();
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(memory_format));
    upfirdn2d_kernel_params p;
    p.x = x.data_ptr();
    p.f = f.data_ptr();
    p.y = y.data_ptr();
    p.n = x.size(0), p.c = x.size(1), p.in_h = x.size(2), p.in_w = x.size(3);
    p.out_h = out_h, p.out_w = out_w;
    p.x_stride_n = x.stride(0), p.x_stride_c = x.stride(1), p.x_stride_h = x.stride(2), p.x_stride_w = x.stride(3);
    p.y_stride_n = y.stride(0), p.y_stride_c = y.stride(1), p.y_stride_h = y.stride(2), p.y_stride_w = y.stride(3);
    p.f_h = f.size(0), p.f_w = f.size(1);
    p.up_x = static_cast<int>(up_x), p.up_y = static_cast<int>(up_y);
    p.down_x = static_cast<int>(down_x), p.down_y = static_cast<int>(down_y);
    p.pad_x0 = static_cast<int>(pad_x0), p.pad_y0 = static_cast<int>(pad_y0);
    p.flip_filter = flip_filter ? 1 : 0;
    p.channels_last = memory_format == at::MemoryFormat::ChannelsLast ? 1 : 0;
    p.gain = gain;

    cudaError_t err = cudaSuccess;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
        err = launch_upfirdn2d_kernel<scalar_t>(p, stream);
    });
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d: kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

//----------------------------------------------------------------------------

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR filter and downsample a batch of 2D images.");
}
