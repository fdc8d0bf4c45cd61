// Fused bias + activation + gain + clamp: the elementwise CUDA kernel and its launcher.
// One thread per element in a grid-stride loop; the maths is done in float (fp16/fp32) or double (fp64).

#include <algorithm>
#include <c10/util/Half.h>
#include "bias_act.h"

//----------------------------------------------------------------------------
// Accumulation type: fp16 inputs are computed in fp32.

template <typename T> struct bias_act_acc_type { using type = T; };
template <> struct bias_act_acc_type<c10::Half> { using type = float; };

//----------------------------------------------------------------------------
// Activation indices, identical to activation_funcs[...].cuda_idx in bias_act.py.

enum {
    ACT_LINEAR = 1,
    ACT_RELU = 2,
    ACT_LRELU = 3,
    ACT_TANH = 4,
    ACT_SIGMOID = 5,
    ACT_ELU = 6,
    ACT_SELU = 7,
    ACT_SOFTPLUS = 8,
    ACT_SWISH = 9,
};

#define BIAS_ACT_SELU_SCALE 1.0507009873554804934193349852946
#define BIAS_ACT_SELU_ALPHA 1.6732632423543772848170429916717

//----------------------------------------------------------------------------
// Activation value at pre-activation x (softplus uses PyTorch's threshold of 20).

template <int A, typename S>
__host__ __device__ inline S act_value(S x, S alpha) {
    if constexpr (A == ACT_LINEAR) {
        return x;
    } else if constexpr (A == ACT_RELU) {
        return x > S(0) ? x : S(0);
    } else if constexpr (A == ACT_LRELU) {
        return x > S(0) ? x : x * alpha;
    } else if constexpr (A == ACT_TANH) {
        return tanh(x);
    } else if constexpr (A == ACT_SIGMOID) {
        return S(1) / (S(1) + exp(-x));
    } else if constexpr (A == ACT_ELU) {
        return x > S(0) ? x : expm1(x);
    } else if constexpr (A == ACT_SELU) {
        return x > S(0) ? S(BIAS_ACT_SELU_SCALE) * x : S(BIAS_ACT_SELU_SCALE * BIAS_ACT_SELU_ALPHA) * expm1(x);
    } else if constexpr (A == ACT_SOFTPLUS) {
        return x > S(20) ? x : log1p(exp(x));
    } else {
        static_assert(A == ACT_SWISH, "unknown activation");
        return x / (S(1) + exp(-x));
    }
}

//----------------------------------------------------------------------------
// First (order 1) or second (order 2) derivative of the activation w.r.t. its pre-activation.
// Swish reads the pre-activation x; every other activation reads its own value a = act(x).

template <int A, typename S>
__host__ __device__ inline S act_derivative(int order, S x, S a, S alpha) {
    const bool first = (order == 1);
    if constexpr (A == ACT_LINEAR) {
        return first ? S(1) : S(0);
    } else if constexpr (A == ACT_RELU) {
        return first ? (a > S(0) ? S(1) : S(0)) : S(0);
    } else if constexpr (A == ACT_LRELU) {
        return first ? (a > S(0) ? S(1) : alpha) : S(0);
    } else if constexpr (A == ACT_TANH) {
        const S d = S(1) - a * a;
        return first ? d : S(-2) * a * d;
    } else if constexpr (A == ACT_SIGMOID) {
        const S d = a * (S(1) - a);
        return first ? d : d * (S(1) - S(2) * a);
    } else if constexpr (A == ACT_ELU) {
        return a > S(0) ? (first ? S(1) : S(0)) : a + S(1); // exp(x) = a + 1 for x <= 0.
    } else if constexpr (A == ACT_SELU) {
        const S d = a + S(BIAS_ACT_SELU_SCALE * BIAS_ACT_SELU_ALPHA); // scale * alpha * exp(x) for x <= 0.
        return a > S(0) ? (first ? S(BIAS_ACT_SELU_SCALE) : S(0)) : d;
    } else if constexpr (A == ACT_SOFTPLUS) {
        const S s = -expm1(-a); // sigmoid(x) = 1 - exp(-softplus(x)).
        return first ? s : s * (S(1) - s);
    } else {
        static_assert(A == ACT_SWISH, "unknown activation");
        const S s = S(1) / (S(1) + exp(-x));
        return first ? s * (S(1) + x * (S(1) - s)) : s * (S(1) - s) * (S(2) + x * (S(1) - S(2) * s));
    }
}

//----------------------------------------------------------------------------
// One output element, c being its index along the bias dimension. Mode 0: y = clamp(act(x + b) * gain).
// Mode 1: g * gain * act'(x + b) * mask. Mode 2: g * dy * gain * act''(x + b) * mask; mask = |yref| < clamp.

template <typename T, typename I, int A>
__host__ __device__ inline void bias_act_element(const bias_act_kernel_params& p, I i, I c) {
    using S = typename bias_act_acc_type<T>::type;
    const S alpha = S(p.alpha);
    const S gain = S(p.gain);
    const S clamp = S(static_cast<T>(S(p.clamp))); // Rounded as stored in T, so clamped outputs compare equal.
    const S g = S(static_cast<const T*>(p.x)[i]);
    const S bias = p.b ? S(static_cast<const T*>(p.b)[c]) : S(0);

    S out;
    if (p.mode == 0) {
        out = act_value<A, S>(g + bias, alpha) * gain;
        if (clamp >= S(0))
            out = out > clamp ? clamp : (out < -clamp ? -clamp : out); // NaN passes through, as in torch.clamp.
    } else {
        const S yr = p.yref ? S(static_cast<const T*>(p.yref)[i]) : S(0);
        const S xr = p.xref ? S(static_cast<const T*>(p.xref)[i]) + bias : S(0);
        const S a = gain != S(0) ? yr / gain : S(0);
        const bool clamped = clamp >= S(0) && !(fabs(yr) < clamp);
        out = clamped ? S(0) : g * gain * act_derivative<A, S>(p.mode, xr, a, alpha);
        if (p.mode == 2 && !clamped)
            out *= S(static_cast<const T*>(p.dy)[i]);
    }
    static_cast<T*>(p.y)[i] = static_cast<T>(out);
}

//----------------------------------------------------------------------------
// One thread's share of the grid-stride loop: elements first, first + step, ... The bias index
// c = (i / stride_dim) % size_dim is tracked incrementally, which saves two integer divisions per element.

template <typename T, typename I, int A>
__host__ __device__ inline void bias_act_thread(const bias_act_kernel_params& p, I first, I step) {
    const I n = static_cast<I>(p.n);
    const I stride = static_cast<I>(p.stride_dim);
    const I size = static_cast<I>(p.size_dim);
    const I step_r = step % stride;          // Advance of i % stride per step...
    const I step_c = (step / stride) % size; // ...and of c, before the carry.
    I r = first % stride;
    I c = (first / stride) % size;
    for (I i = first; i < n; i += step) {
        bias_act_element<T, I, A>(p, i, c);
        r += step_r;
        const I carry = r >= stride ? 1 : 0;
        r -= carry * stride;
        c += step_c + carry; // < 2 * size, so one wrap suffices.
        if (c >= size)
            c -= size;
    }
}

template <typename T, typename I, int A>
__global__ void bias_act_kernel(bias_act_kernel_params p) {
    const I first = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
    bias_act_thread<T, I, A>(p, first, static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x));
}

//----------------------------------------------------------------------------
// Picks the kernel instance for the activation; 32-bit indexing when the element count allows it.

template <typename T, typename I>
static cudaError_t launch_bias_act_with_index(const bias_act_kernel_params& p, cudaStream_t stream) {
    const int block = 256;
    const int grid = static_cast<int>(std::min<int64_t>((p.n + block - 1) / block, 8192));
    switch (p.act) {
        case ACT_LINEAR: bias_act_kernel<T, I, ACT_LINEAR><<<grid, block, 0, stream>>>(p); break;
        case ACT_RELU: bias_act_kernel<T, I, ACT_RELU><<<grid, block, 0, stream>>>(p); break;
        case ACT_LRELU: bias_act_kernel<T, I, ACT_LRELU><<<grid, block, 0, stream>>>(p); break;
        case ACT_TANH: bias_act_kernel<T, I, ACT_TANH><<<grid, block, 0, stream>>>(p); break;
        case ACT_SIGMOID: bias_act_kernel<T, I, ACT_SIGMOID><<<grid, block, 0, stream>>>(p); break;
        case ACT_ELU: bias_act_kernel<T, I, ACT_ELU><<<grid, block, 0, stream>>>(p); break;
        case ACT_SELU: bias_act_kernel<T, I, ACT_SELU><<<grid, block, 0, stream>>>(p); break;
        case ACT_SOFTPLUS: bias_act_kernel<T, I, ACT_SOFTPLUS><<<grid, block, 0, stream>>>(p); break;
        case ACT_SWISH: bias_act_kernel<T, I, ACT_SWISH><<<grid, block, 0, stream>>>(p); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bias_act_kernel(const bias_act_kernel_params& p, cudaStream_t stream) {
    if (p.n <= 0)
        return cudaSuccess;
    if (p.n < (int64_t(1) << 30)) // Leaves head room so that i + step cannot overflow.
        return launch_bias_act_with_index<T, int32_t>(p, stream);
    return launch_bias_act_with_index<T, int64_t>(p, stream);
}

template cudaError_t launch_bias_act_kernel<float>(const bias_act_kernel_params& p, cudaStream_t stream);
template cudaError_t launch_bias_act_kernel<double>(const bias_act_kernel_params& p, cudaStream_t stream);
template cudaError_t launch_bias_act_kernel<c10::Half>(const bias_act_kernel_params& p, cudaStream_t stream);
