// Fused bias + activation + gain + clamp: the elementwise CUDA kernel and its launcher.
// Grid-stride loops over 16-byte vectors when the layout allows it, else over single elements; the maths is
// done in float (fp16/fp32) or double (fp64).

#include <algorithm>
#include <cstdint>
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
// Per-launch constants of the element maths, in the accumulation type S.

template <typename S> struct bias_act_constants {
    int mode;
    S alpha;
    S gain;
    S clamp;
};

template <typename T>
__host__ __device__ inline bias_act_constants<typename bias_act_acc_type<T>::type> make_bias_act_constants(
    const bias_act_kernel_params& p) {
    using S = typename bias_act_acc_type<T>::type;
    const S clamp = S(static_cast<T>(S(p.clamp))); // Rounded as stored in T, so clamped outputs compare equal.
    return {p.mode, S(p.alpha), S(p.gain), clamp};
}

//----------------------------------------------------------------------------
// One output value from the values at its element; absent tensors read as 0. Mode 0: y = clamp(act(x + b) * gain).
// Mode 1: g * gain * act'(x + b) * mask. Mode 2: g * dy * gain * act''(x + b) * mask; mask = |yref| < clamp.
// Only swish reads x + b in the derivative, and swish always comes with xref.

template <int A, typename S>
__host__ __device__ inline S bias_act_value(const bias_act_constants<S>& k, S g, S bias, S xref, S yref, S dy) {
    if (k.mode == 0) {
        S out = act_value<A, S>(g + bias, k.alpha) * k.gain;
        if (k.clamp >= S(0))
            out = out > k.clamp ? k.clamp : (out < -k.clamp ? -k.clamp : out); // NaN passes, as in torch.clamp.
        return out;
    }
    const S a = k.gain != S(0) ? yref / k.gain : S(0);
    const bool clamped = k.clamp >= S(0) && !(fabs(yref) < k.clamp);
    if (clamped)
        return S(0);
    const S out = g * k.gain * act_derivative<A, S>(k.mode, xref + bias, a, k.alpha);
    return k.mode == 2 ? out * dy : out;
}

//----------------------------------------------------------------------------
// Element i of an optional tensor in the accumulation type, 0 when the tensor is absent.

template <typename T, typename I>
__host__ __device__ inline typename bias_act_acc_type<T>::type load_or_zero(const void* t, I i) {
    using S = typename bias_act_acc_type<T>::type;
    return t ? S(static_cast<const T*>(t)[i]) : S(0);
}

//----------------------------------------------------------------------------
// Bias index of a grid-stride loop's items, tracked without divisions: items first, first + step, ... with
// c = (item / stride) % size. Items are elements (scalar loop) or vectors (vector loop, stride in vectors).

template <typename I> struct bias_index_walker {
    I stride, size;
    I step_r, step_c; // Advance of item % stride per step, and of c before the carry.
    I r, c;

    __host__ __device__ bias_index_walker(I first, I step, I stride_, I size_) : stride(stride_), size(size_) {
        step_r = step % stride;
        step_c = (step / stride) % size;
        r = first % stride;
        c = (first / stride) % size;
    }

    __host__ __device__ void advance() {
        r += step_r;
        const I carry = r >= stride ? 1 : 0;
        r -= carry * stride;
        c += step_c + carry; // < 2 * size, so one wrap suffices.
        if (c >= size)
            c -= size;
    }
};

//----------------------------------------------------------------------------
// One thread's share of the scalar grid-stride loop: elements first, first + step, ...

template <typename T, typename I, int A>
__host__ __device__ inline void bias_act_thread(const bias_act_kernel_params& p, I first, I step) {
    const auto k = make_bias_act_constants<T>(p);
    const I n = static_cast<I>(p.n);
    bias_index_walker<I> walk(first, step, static_cast<I>(p.stride_dim), static_cast<I>(p.size_dim));
    for (I i = first; i < n; i += step, walk.advance()) {
        const auto g = load_or_zero<T>(p.x, i);
        const auto out = bias_act_value<A>(k, g, load_or_zero<T>(p.b, walk.c), load_or_zero<T>(p.xref, i),
                                           load_or_zero<T>(p.yref, i), load_or_zero<T>(p.dy, i));
        static_cast<T*>(p.y)[i] = static_cast<T>(out);
    }
}

//----------------------------------------------------------------------------
// 16 bytes of consecutive elements, moved with one load or store instruction when 16-byte aligned.

template <typename T> struct alignas(16) bias_act_vec {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
};

template <typename T, typename I>
__host__ __device__ inline bias_act_vec<T> load_vec_or_zero(const void* t, I v) {
    if (t)
        return static_cast<const bias_act_vec<T>*>(t)[v];
    bias_act_vec<T> zero;
    for (int j = 0; j < bias_act_vec<T>::size; j++)
        zero.v[j] = static_cast<T>(0.0f);
    return zero;
}

//----------------------------------------------------------------------------
// Whether the vector loop may serve p: whole vectors that each lie within one bias index, and 16-byte aligned
// tensors (the bias is read once per vector, as a scalar). With one bias element every stride qualifies.

template <typename T>
inline bool bias_act_can_vectorize(const bias_act_kernel_params& p) {
    const int64_t size = bias_act_vec<T>::size;
    auto aligned = [](const void* t) { return reinterpret_cast<uintptr_t>(t) % 16 == 0; }; // nullptr qualifies.
    return p.n % size == 0 && (p.size_dim == 1 || p.stride_dim % size == 0) && aligned(p.x) && aligned(p.xref) &&
           aligned(p.yref) && aligned(p.dy) && aligned(p.y);
}

//----------------------------------------------------------------------------
// One thread's share of the vector grid-stride loop: vectors first, first + step, ... of VEC elements each,
// all sharing one bias index. Only valid when bias_act_can_vectorize<T>(p).

template <typename T, typename I, int A>
__host__ __device__ inline void bias_act_vector_thread(const bias_act_kernel_params& p, I first, I step) {
    constexpr int VEC = bias_act_vec<T>::size;
    const auto k = make_bias_act_constants<T>(p);
    const I n_vec = static_cast<I>(p.n / VEC);
    const I stride_vec = p.size_dim == 1 ? I(1) : static_cast<I>(p.stride_dim / VEC);
    bias_index_walker<I> walk(first, step, stride_vec, static_cast<I>(p.size_dim));
    for (I v = first; v < n_vec; v += step, walk.advance()) {
        const auto bias = load_or_zero<T>(p.b, walk.c);
        const bias_act_vec<T> g = load_vec_or_zero<T>(p.x, v);
        const bias_act_vec<T> xref = load_vec_or_zero<T>(p.xref, v);
        const bias_act_vec<T> yref = load_vec_or_zero<T>(p.yref, v);
        const bias_act_vec<T> dy = load_vec_or_zero<T>(p.dy, v);
        bias_act_vec<T> out;
#pragma unroll
        for (int j = 0; j < VEC; j++) {
            using S = typename bias_act_acc_type<T>::type;
            const S value = bias_act_value<A>(k, S(g.v[j]), bias, S(xref.v[j]), S(yref.v[j]), S(dy.v[j]));
            out.v[j] = static_cast<T>(value);
        }
        static_cast<bias_act_vec<T>*>(p.y)[v] = out;
    }
}

//----------------------------------------------------------------------------
// The kernel: one grid-stride loop over vectors (VECTOR) or elements.

template <typename T, typename I, int A, bool VECTOR>
__global__ void bias_act_kernel(bias_act_kernel_params p) {
    const I first = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
    const I step = static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x);
    if constexpr (VECTOR)
        bias_act_vector_thread<T, I, A>(p, first, step);
    else
        bias_act_thread<T, I, A>(p, first, step);
}

//----------------------------------------------------------------------------
// Picks the kernel instance for the activation and the loop kind.

template <typename T, typename I, bool VECTOR>
static cudaError_t launch_bias_act_instance(const bias_act_kernel_params& p, int grid, cudaStream_t stream) {
    const int block = 256;
    switch (p.act) {
        case ACT_LINEAR: bias_act_kernel<T, I, ACT_LINEAR, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_RELU: bias_act_kernel<T, I, ACT_RELU, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_LRELU: bias_act_kernel<T, I, ACT_LRELU, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_TANH: bias_act_kernel<T, I, ACT_TANH, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_SIGMOID: bias_act_kernel<T, I, ACT_SIGMOID, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_ELU: bias_act_kernel<T, I, ACT_ELU, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_SELU: bias_act_kernel<T, I, ACT_SELU, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_SOFTPLUS: bias_act_kernel<T, I, ACT_SOFTPLUS, VECTOR><<<grid, block, 0, stream>>>(p); break;
        case ACT_SWISH: bias_act_kernel<T, I, ACT_SWISH, VECTOR><<<grid, block, 0, stream>>>(p); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

//----------------------------------------------------------------------------
// Vector loop when the layout allows it, else the scalar loop; 32-bit indexing when the element count allows it.
// The vector grid covers every vector up to 32 blocks per SM (four times what can be resident), beyond which
// threads loop; the scalar grid is capped at 8192 blocks.

template <typename T, typename I>
static cudaError_t launch_bias_act_with_index(const bias_act_kernel_params& p, cudaStream_t stream) {
    const int64_t block = 256;
    if (bias_act_can_vectorize<T>(p)) {
        int device = 0, sm_count = 0;
        cudaError_t err = cudaGetDevice(&device);
        if (err == cudaSuccess)
            err = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
        if (err != cudaSuccess)
            return err;
        const int64_t n_vec = p.n / bias_act_vec<T>::size;
        const int grid = static_cast<int>(std::min<int64_t>((n_vec + block - 1) / block, int64_t(sm_count) * 32));
        return launch_bias_act_instance<T, I, true>(p, grid, stream);
    }
    const int grid = static_cast<int>(std::min<int64_t>((p.n + block - 1) / block, 8192));
    return launch_bias_act_instance<T, I, false>(p, grid, stream);
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
