// Upsample, FIR filter, downsample (upfirdn2d): the CUDA kernel and its launcher.
// A 3D grid-stride loop over output pixels; each visits only the filter taps that hit real input samples.

#include <algorithm>
#include <c10/util/Half.h>
#include "upfirdn2d.h"

//----------------------------------------------------------------------------
// Accumulation type, which is also the filter's type: fp16 inputs are accumulated in fp32.

template <typename T> struct upfirdn2d_acc_type { using type = T; };
template <> struct upfirdn2d_acc_type<c10::Half> { using type = float; };

//----------------------------------------------------------------------------
// ceil(a / d) for d > 0 and any sign of a; shift = log2(d) when d is a power of two (cheap path), else -1.

template <typename I>
__host__ __device__ inline I ceil_div(I a, I d, int shift) {
    if (shift >= 0)
        return -((-a) >> shift); // Arithmetic shift floors, also for negative values.
    return a >= 0 ? (a + d - 1) / d : -((-a) / d);
}

__host__ __device__ inline int log2_if_power_of_two(int d) {
    int shift = 0;
    while ((1 << shift) < d)
        shift++;
    return (1 << shift) == d ? shift : -1;
}

//----------------------------------------------------------------------------
// Filter taps that land on real input samples along one axis: taps k0, k0 + up, ... hit inputs i0, i0 + 1, ...
// The window of output o starts at zero-stuffed position base = o * down - pad0.

template <typename I>
__host__ __device__ inline void first_tap(I base, I up, int up_shift, I& k0, I& i0) {
    i0 = ceil_div(base, up, up_shift); // First input whose up-grid position is >= base.
    k0 = i0 * up - base;
    if (i0 < 0) { // Skip the taps that fall on the leading zero padding.
        k0 -= i0 * up;
        i0 = 0;
    }
}

//----------------------------------------------------------------------------
// One output pixel: y[oy, ox] = gain * sum_{ky, kx} xpad[oy * down_y + ky, ox * down_x + kx] * f'[ky, kx], where f'
// is f flipped unless flip_filter, and xpad[u, v] = x[(u - pad_y0) / up_y, (v - pad_x0) / up_x] on the up-grid, else 0.

template <typename T, typename I>
__host__ __device__ inline void upfirdn2d_element(const upfirdn2d_kernel_params& p, I n, I c, I oy, I ox,
                                                  int shift_x, int shift_y) {
    using S = typename upfirdn2d_acc_type<T>::type;
    const T* x = static_cast<const T*>(p.x) + n * I(p.x_stride_n) + c * I(p.x_stride_c);
    const S* f = static_cast<const S*>(p.f);
    const I f_w = I(p.f_w), f_h = I(p.f_h), up_x = I(p.up_x), up_y = I(p.up_y);
    I ky0, iy0, kx0, ix0;
    first_tap<I>(oy * I(p.down_y) - I(p.pad_y0), up_y, shift_y, ky0, iy0);
    first_tap<I>(ox * I(p.down_x) - I(p.pad_x0), up_x, shift_x, kx0, ix0);

    S acc = S(0);
    for (I ky = ky0, iy = iy0; ky < f_h && iy < I(p.in_h); ky += up_y, iy++) {
        const S* f_row = f + (p.flip_filter ? ky : f_h - 1 - ky) * f_w;
        const T* x_row = x + iy * I(p.x_stride_h);
        for (I kx = kx0, ix = ix0; kx < f_w && ix < I(p.in_w); kx += up_x, ix++)
            acc += S(x_row[ix * I(p.x_stride_w)]) * f_row[p.flip_filter ? kx : f_w - 1 - kx];
    }
    T* y = static_cast<T*>(p.y);
    y[n * I(p.y_stride_n) + c * I(p.y_stride_c) + oy * I(p.y_stride_h) + ox * I(p.y_stride_w)] =
        static_cast<T>(acc * S(p.gain));
}

//----------------------------------------------------------------------------
// One thread's share of the output, over three loop axes: a0 is the memory-fastest output axis (ox for NCHW,
// c for NHWC) so that neighbouring threads write neighbouring addresses; a2 is the slowest, merged with n.

template <typename T, typename I>
__host__ __device__ inline void upfirdn2d_thread(const upfirdn2d_kernel_params& p, I first0, I step0, I first1,
                                                 I step1, I first2, I step2) {
    const int shift_x = log2_if_power_of_two(p.up_x);
    const int shift_y = log2_if_power_of_two(p.up_y);
    const bool nhwc = p.channels_last != 0;
    const I size0 = I(nhwc ? p.c : p.out_w);
    const I size1 = I(nhwc ? p.out_w : p.out_h);
    const I inner2 = I(nhwc ? p.out_h : p.c); // a2 = n * inner2 + (oy or c).
    const I size2 = I(p.n) * inner2;
    for (I a2 = first2; a2 < size2; a2 += step2) {
        const I n = a2 / inner2;
        const I rest = a2 - n * inner2;
        for (I a1 = first1; a1 < size1; a1 += step1)
            for (I a0 = first0; a0 < size0; a0 += step0) {
                if (nhwc)
                    upfirdn2d_element<T, I>(p, n, a0, rest, a1, shift_x, shift_y);
                else
                    upfirdn2d_element<T, I>(p, n, rest, a1, a0, shift_x, shift_y);
            }
    }
}

template <typename T, typename I>
__global__ void upfirdn2d_kernel(upfirdn2d_kernel_params p) {
    upfirdn2d_thread<T, I>(p, I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x), I(gridDim.x) * I(blockDim.x),
                           I(blockIdx.y) * I(blockDim.y) + I(threadIdx.y), I(gridDim.y) * I(blockDim.y),
                           I(blockIdx.z), I(gridDim.z));
}

//----------------------------------------------------------------------------
// Largest element offset reachable through the given sizes and strides (all strides are >= 0 here).

static int64_t max_offset(int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn, int64_t sc, int64_t sh,
                          int64_t sw) {
    return (n - 1) * sn + (c - 1) * sc + (h - 1) * sh + (w - 1) * sw;
}

template <typename T>
cudaError_t launch_upfirdn2d_kernel(const upfirdn2d_kernel_params& p, cudaStream_t stream) {
    const int64_t num_outputs = p.n * p.c * p.out_h * p.out_w;
    if (num_outputs <= 0)
        return cudaSuccess;
    const bool nhwc = p.channels_last != 0;
    const int64_t size0 = nhwc ? p.c : p.out_w, size1 = nhwc ? p.out_w : p.out_h;
    const int64_t size2 = p.n * (nhwc ? p.out_h : p.c);
    int block_x = 1, block_y = 1; // Up to 256 threads, as many as possible along a0.
    while (block_x < size0 && block_x < 256)
        block_x *= 2;
    while (block_y < size1 && block_x * block_y < 256)
        block_y *= 2;
    const dim3 block(block_x, block_y, 1);
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((size0 + block_x - 1) / block_x, 65535)),
                    static_cast<unsigned>(std::min<int64_t>((size1 + block_y - 1) / block_y, 65535)),
                    static_cast<unsigned>(std::min<int64_t>(size2, 65535)));

    const int64_t limit = int64_t(1) << 30; // Head room: int32 loop increments and index sums cannot overflow.
    const int64_t x_span =
        max_offset(p.n, p.c, p.in_h, p.in_w, p.x_stride_n, p.x_stride_c, p.x_stride_h, p.x_stride_w);
    const int64_t y_span =
        max_offset(p.n, p.c, p.out_h, p.out_w, p.y_stride_n, p.y_stride_c, p.y_stride_h, p.y_stride_w);
    const bool small = num_outputs < limit && x_span < limit && y_span < limit &&
                       (p.out_h + 1) * p.down_y + p.f_h + std::abs(p.pad_y0) + 2 * p.up_y < limit &&
                       (p.out_w + 1) * p.down_x + p.f_w + std::abs(p.pad_x0) + 2 * p.up_x < limit;
    if (small)
        upfirdn2d_kernel<T, int32_t><<<grid, block, 0, stream>>>(p);
    else
        upfirdn2d_kernel<T, int64_t><<<grid, block, 0, stream>>>(p);
    return cudaGetLastError();
}

template cudaError_t launch_upfirdn2d_kernel<float>(const upfirdn2d_kernel_params& p, cudaStream_t stream);
template cudaError_t launch_upfirdn2d_kernel<double>(const upfirdn2d_kernel_params& p, cudaStream_t stream);
template cudaError_t launch_upfirdn2d_kernel<c10::Half>(const upfirdn2d_kernel_params& p, cudaStream_t stream);
