// CUDA kernels of the fused coupling ops (src/exec/fused.rs), f32 and f64.
// Compiled to PTX by build.rs (feature `cuda`) and loaded with CudaDevice::get_or_load_custom_func.
//
// Layouts (all contiguous): x, y: [N, C, S]; h: [N, 2C, S] (affine: s_raw then t) or [N, C, S]
// (additive: t); mask: [C*S] bytes (1 = kept); scale: [C]. S = H*W (1 for vectors), D = C*S.
//
// Reductions are deterministic (no atomics): the affine forward and backward work on "rows"
// (one example, one channel: S contiguous elements) and write one f64 partial per row
// ([N, C]); a second kernel sums the partials in a fixed order, over channels for the
// per-example log-det and over examples for the per-channel scale gradient. A row is reduced
// either by one block (S >= 32: strided loop, warp shuffles, shared memory) or by one thread
// (S < 32, e.g. vectors where S = 1). Sums are accumulated in double, as on the CPU.

#include <stddef.h>
#include <stdint.h>

__device__ __forceinline__ float ftanh(float v) { return tanhf(v); }
__device__ __forceinline__ double ftanh(double v) { return tanh(v); }
__device__ __forceinline__ float fexp(float v) { return expf(v); }
__device__ __forceinline__ double fexp(double v) { return exp(v); }

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); valid in thread 0.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int nwarps = blockDim.x >> 5;
  v = (threadIdx.x < nwarps) ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Affine forward: y = b*x + (1-b)*(x*exp(s) + t), s = scale*tanh(s_raw); partial[row] =
// sum over the row of (1-b)*s.
// ---------------------------------------------------------------------------------------------

// One element of row (n, ch) at position p; returns its log-det contribution.
template <typename T>
__device__ __forceinline__ double affine_fwd_elem(const T* x, const T* h, T sc, const uint8_t* mask,
                                                  T* y, size_t n, size_t d, size_t j) {
  const size_t i = n * d + j;
  const T xv = x[i];
  if (mask[j] != 0) {
    y[i] = xv;
    return 0.0;
  }
  const size_t hb = n * 2 * d;
  const T sv = sc * ftanh(h[hb + j]);
  y[i] = xv * fexp(sv) + h[hb + d + j];
  return (double)sv;
}

// One block per row; grid.x = N*C.
template <typename T>
__device__ void affine_fwd_rows_block(const T* x, const T* h, const T* scale, const uint8_t* mask,
                                      T* y, double* partial, size_t c, size_t s) {
  const size_t row = blockIdx.x;
  const size_t n = row / c, ch = row % c, d = c * s;
  const T sc = scale[ch];
  double acc = 0.0;
  for (size_t p = threadIdx.x; p < s; p += blockDim.x)
    acc += affine_fwd_elem(x, h, sc, mask, y, n, d, ch * s + p);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[row] = acc;
}

// One thread per row; rows = N*C.
template <typename T>
__device__ void affine_fwd_rows_thread(const T* x, const T* h, const T* scale, const uint8_t* mask,
                                       T* y, double* partial, size_t rows, size_t c, size_t s) {
  const size_t row = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const size_t n = row / c, ch = row % c, d = c * s;
  const T sc = scale[ch];
  double acc = 0.0;
  for (size_t p = 0; p < s; ++p) acc += affine_fwd_elem(x, h, sc, mask, y, n, d, ch * s + p);
  partial[row] = acc;
}

// logdet[n] = sum over channels of partial[n, ch], in channel order; one thread per example.
template <typename T>
__device__ void sum_partials_rows(const double* partial, T* out, size_t n_rows, size_t c) {
  const size_t n = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= n_rows) return;
  double acc = 0.0;
  for (size_t ch = 0; ch < c; ++ch) acc += partial[n * c + ch];
  out[n] = (T)acc;
}

// dscale[ch] = sum over examples of partial[n, ch], in example order; one thread per channel.
template <typename T>
__device__ void sum_partials_cols(const double* partial, T* out, size_t n_rows, size_t c) {
  const size_t ch = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double acc = 0.0;
  for (size_t n = 0; n < n_rows; ++n) acc += partial[n * c + ch];
  out[ch] = (T)acc;
}

// ---------------------------------------------------------------------------------------------
// Affine backward. g = [gy (N*D) | glogdet (N)]; out = [dx (N*D) | dh (N*2D) | dscale (C)].
//   kept (b = 1):  dx = gy, ds_raw = 0, dt = 0
//   else:          th = tanh(s_raw), e = exp(scale*th), ds = gy*x*e + gl
//                  dx = gy*e, dt = gy, ds_raw = ds*scale*(1 - th^2), dscale += ds*th
// ---------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ double affine_bwd_elem(const T* x, const T* h, const T* g, T sc,
                                                  const uint8_t* mask, T* dx, T* dh, size_t n,
                                                  size_t nd, size_t d, size_t j) {
  const size_t i = n * d + j;
  const size_t hb = n * 2 * d;
  const T gy = g[i];
  if (mask[j] != 0) {
    dx[i] = gy;
    dh[hb + j] = (T)0;
    dh[hb + d + j] = (T)0;
    return 0.0;
  }
  const T gl = g[nd + n];
  const T th = ftanh(h[hb + j]);
  const T e = fexp(sc * th);
  const T ds = gy * x[i] * e + gl;
  dx[i] = gy * e;
  dh[hb + j] = ds * sc * ((T)1 - th * th);
  dh[hb + d + j] = gy;
  return (double)(ds * th);
}

template <typename T>
__device__ void affine_bwd_rows_block(const T* x, const T* h, const T* g, const T* scale,
                                      const uint8_t* mask, T* out, double* partial, size_t n_rows,
                                      size_t c, size_t s) {
  const size_t row = blockIdx.x;
  const size_t n = row / c, ch = row % c, d = c * s, nd = n_rows * d;
  const T sc = scale[ch];
  T* dx = out;
  T* dh = out + nd;
  double acc = 0.0;
  for (size_t p = threadIdx.x; p < s; p += blockDim.x)
    acc += affine_bwd_elem(x, h, g, sc, mask, dx, dh, n, nd, d, ch * s + p);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[row] = acc;
}

template <typename T>
__device__ void affine_bwd_rows_thread(const T* x, const T* h, const T* g, const T* scale,
                                       const uint8_t* mask, T* out, double* partial, size_t n_rows,
                                       size_t c, size_t s) {
  const size_t row = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= n_rows * c) return;
  const size_t n = row / c, ch = row % c, d = c * s, nd = n_rows * d;
  const T sc = scale[ch];
  T* dx = out;
  T* dh = out + nd;
  double acc = 0.0;
  for (size_t p = 0; p < s; ++p)
    acc += affine_bwd_elem(x, h, g, sc, mask, dx, dh, n, nd, d, ch * s + p);
  partial[row] = acc;
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops (grid-stride loops over N*D elements).
// ---------------------------------------------------------------------------------------------

// x = b*y + (1-b)*((y - t)*exp(-s)).
template <typename T>
__device__ void affine_inv(const T* y, const T* h, const T* scale, const uint8_t* mask, T* x,
                           size_t numel, size_t c, size_t s) {
  const size_t d = c * s;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t n = i / d, j = i % d;
    const T yv = y[i];
    if (mask[j] != 0) {
      x[i] = yv;
    } else {
      const size_t hb = n * 2 * d;
      const T sv = scale[j / s] * ftanh(h[hb + j]);
      x[i] = (yv - h[hb + d + j]) * fexp(-sv);
    }
  }
}

// y = x + (1-b)*t (forward) or y = x - (1-b)*t (inverse).
template <typename T>
__device__ void additive(const T* x, const T* t, const uint8_t* mask, T* y, size_t numel, size_t d,
                         int inverse) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
       i += (size_t)gridDim.x * blockDim.x) {
    const T xv = x[i];
    if (mask[i % d] != 0) {
      y[i] = xv;
    } else {
      y[i] = inverse ? xv - t[i] : xv + t[i];
    }
  }
}

// dt = (1-b)*g.
template <typename T>
__device__ void additive_bwd(const T* g, const uint8_t* mask, T* dt, size_t numel, size_t d) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
       i += (size_t)gridDim.x * blockDim.x) {
    dt[i] = mask[i % d] != 0 ? (T)0 : g[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points: <name>_f32 / <name>_f64 (candle's kernel_name convention).
// ---------------------------------------------------------------------------------------------

#define FUSED_COUPLING_OPS(T, SUF)                                                               \
  extern "C" __global__ void fused_affine_fwd_rows_block_##SUF(                                 \
      const T* x, const T* h, const T* scale, const uint8_t* mask, T* out, double* partial,     \
      size_t c, size_t s) {                                                                      \
    affine_fwd_rows_block<T>(x, h, scale, mask, out, partial, c, s);                             \
  }                                                                                              \
  extern "C" __global__ void fused_affine_fwd_rows_thread_##SUF(                                \
      const T* x, const T* h, const T* scale, const uint8_t* mask, T* out, double* partial,     \
      size_t rows, size_t c, size_t s) {                                                         \
    affine_fwd_rows_thread<T>(x, h, scale, mask, out, partial, rows, c, s);                      \
  }                                                                                              \
  extern "C" __global__ void fused_sum_partials_rows_##SUF(const double* partial, T* out,      \
                                                            size_t n_rows, size_t c) {          \
    sum_partials_rows<T>(partial, out, n_rows, c);                                               \
  }                                                                                              \
  extern "C" __global__ void fused_sum_partials_cols_##SUF(const double* partial, T* out,      \
                                                            size_t n_rows, size_t c) {          \
    sum_partials_cols<T>(partial, out, n_rows, c);                                               \
  }                                                                                              \
  extern "C" __global__ void fused_affine_bwd_rows_block_##SUF(                                 \
      const T* x, const T* h, const T* g, const T* scale, const uint8_t* mask, T* out,          \
      double* partial, size_t n_rows, size_t c, size_t s) {                                      \
    affine_bwd_rows_block<T>(x, h, g, scale, mask, out, partial, n_rows, c, s);                  \
  }                                                                                              \
  extern "C" __global__ void fused_affine_bwd_rows_thread_##SUF(                                \
      const T* x, const T* h, const T* g, const T* scale, const uint8_t* mask, T* out,          \
      double* partial, size_t n_rows, size_t c, size_t s) {                                      \
    affine_bwd_rows_thread<T>(x, h, g, scale, mask, out, partial, n_rows, c, s);                 \
  }                                                                                              \
  extern "C" __global__ void fused_affine_inv_##SUF(const T* y, const T* h, const T* scale,    \
                                                     const uint8_t* mask, T* x, size_t numel,   \
                                                     size_t c, size_t s) {                      \
    affine_inv<T>(y, h, scale, mask, x, numel, c, s);                                            \
  }                                                                                              \
  extern "C" __global__ void fused_additive_##SUF(const T* x, const T* t, const uint8_t* mask,  \
                                                   T* y, size_t numel, size_t d, int inverse) { \
    additive<T>(x, t, mask, y, numel, d, inverse);                                               \
  }                                                                                              \
  extern "C" __global__ void fused_additive_bwd_##SUF(const T* g, const uint8_t* mask, T* dt,   \
                                                       size_t numel, size_t d) {                \
    additive_bwd<T>(g, mask, dt, numel, d);                                                      \
  }

FUSED_COUPLING_OPS(float, f32)
FUSED_COUPLING_OPS(double, f64)
