// Fused CPU kernels of the snntorch backend: a complete torch extension, compiled by
// snn/backends/snntorch/kernels.py (torch.utils.cpp_extension.load_inline, which prepends
// #include <torch/extension.h>) into a build directory keyed by the hash of the whole
// compile command. What each function computes (equations, shapes) is in that module's
// docstring; these kernels give bit-identical spikes to the reference torch ops.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <array>
#include <type_traits>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <cstdint>
#include <limits>
#include <vector>

// Adds r rows of len per-neuron batch sums cnt to steps (rows of N neurons) at column off.
template <typename T>
static inline void add_counts(double* steps, const T* cnt, int64_t r, int64_t len, int64_t N, int64_t off) {
  for (int64_t t = 0; t < r; ++t)
    for (int64_t i = 0; i < len; ++i) steps[t * N + off + i] += (double)cnt[t * len + i];
}

// ------------------------------------------------------------------ IF scan
constexpr int64_t V = 512;  // neurons per block: their u and prev stay in L1 over the chunk's steps

// One IF update of one neuron with input cur (membrane u updated in place, previous spike
// p); returns the spike.
template <typename T, bool SUB>
static inline T if_update(T& u, T p, T cur, T theta) {
  T v = u;
  if (!SUB) v = v * (T(1) - p);
  v = v + cur;
  if (SUB) v = v - theta * p;
  u = v;
  return v > theta ? T(1) : T(0);
}

// One IF step of m neurons: input xa (ADD2: ga * xa + gb * xb), membranes ub, previous
// spikes pb (both updated), spikes to st (as T, or as bytes 0/1 for an event-driven reader).
template <typename T, bool SUB, bool ADD2, typename S>
static inline void if_step(const T* __restrict xa, const T* __restrict xb, const T* __restrict ga,
                           const T* __restrict gb, T* __restrict ub, T* __restrict pb, S* __restrict st, int64_t m,
                           T theta) {
  for (int64_t i = 0; i < m; ++i) {
    T cur;
    if constexpr (ADD2) cur = xa[i] * ga[i] + xb[i] * gb[i];
    else cur = xa[i];
    const T spk = if_update<T, SUB>(ub[i], pb[i], cur, theta);
    pb[i] = spk; st[i] = (S)spk;
  }
}

// if_step, then its spikes added to cn (the batch sums; nullptr: not counted).
template <typename T, bool SUB, bool ADD2, typename S>
static inline void if_step_count(const T* __restrict xa, const T* __restrict xb, const T* __restrict ga,
                                 const T* __restrict gb, T* __restrict ub, T* __restrict pb, S* __restrict st,
                                 T* __restrict cn, int64_t m, T theta) {
  if_step<T, SUB, ADD2, S>(xa, xb, ga, gb, ub, pb, st, m, theta);
  if (cn) for (int64_t i = 0; i < m; ++i) cn[i] += pb[i];
}

// Calls f(sub, st) with std::bool_constant arguments for the IF kernels' compile-time
// reset (subtract) and input (static) modes.
template <typename F>
static inline void with_if_modes(bool subtract, bool is_static, F&& f) {
  if (subtract && is_static) f(std::true_type{}, std::true_type{});
  else if (subtract) f(std::true_type{}, std::false_type{});
  else if (is_static) f(std::false_type{}, std::true_type{});
  else f(std::false_type{}, std::false_type{});
}

// One IF step of m neurons whose spikes are only counted: added to cn and, if CUM, to cp
// (pb holds them afterwards).
template <typename T, bool SUB, bool CUM>
static inline void if_step_counted(const T* __restrict xa, T* __restrict ub, T* __restrict pb, T* __restrict cn,
                                   T* __restrict cp, int64_t m, T theta) {
  for (int64_t i = 0; i < m; ++i) {
    const T spk = if_update<T, SUB>(ub[i], pb[i], xa[i], theta);
    pb[i] = spk; cn[i] += spk;
    if constexpr (CUM) cp[i] += spk;
  }
}

template <typename T, bool SUB, bool STATIC, bool ADD2, typename S>
static void if_scan_impl(const T* x0, const T* x1, const T* gains, int64_t HW, int64_t C, T* u, T* prev, S* s,
                         double* steps, int64_t rows, int64_t k, int64_t B, int64_t N, T theta) {
  at::parallel_for(0, (N + V - 1) / V, 1, [&](int64_t q0, int64_t q1) {
    const int64_t n0 = q0 * V, n1 = std::min(N, q1 * V), len = n1 - n0;
    const bool per_step = steps && rows != 1;
    std::vector<T> cnt(steps ? (per_step ? k : 1) * len : 0, T(0));  // batch sums of this slice
    std::vector<T> ga(ADD2 ? len : 0), gb(ADD2 ? len : 0);  // per-neuron gains of the two inputs
    for (int64_t i = 0; ADD2 && i < len; ++i) {
      const int64_t c = ((n0 + i) / HW) % C;
      ga[i] = gains[c]; gb[i] = gains[C + c];
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t nb = n0; nb < n1; nb += V) {
        const int64_t m = std::min(V, n1 - nb), off = nb - n0;
        T* __restrict ub = u + b * N + nb;
        T* __restrict pb = prev + b * N + nb;
        const T* __restrict g0 = ga.data() + off;
        const T* __restrict g1 = gb.data() + off;
        for (int64_t t = 0; t < k; ++t) {
          const int64_t r = STATIC ? b * N + nb : (t * B + b) * N + nb;
          const T* __restrict xa = x0 + r;
          const T* __restrict xb = (ADD2 ? x1 : x0) + r;
          S* __restrict st = s + (t * B + b) * N + nb;
          T* __restrict cn = steps ? cnt.data() + (per_step ? t * len : 0) + off : nullptr;
          if_step_count<T, SUB, ADD2, S>(xa, xb, g0, g1, ub, pb, st, cn, m, theta);
        }
      }
    if (steps) add_counts(steps, cnt.data(), per_step ? k : 1, len, N, n0);
  });
}

torch::Tensor if_scan(torch::Tensor I, c10::optional<torch::Tensor> I2, c10::optional<torch::Tensor> gains,
                      torch::Tensor u, torch::Tensor prev, double theta, bool subtract, bool is_static, int64_t k,
                      c10::optional<torch::Tensor> steps, bool bytes) {
  TORCH_CHECK(I.is_contiguous() && u.is_contiguous() && prev.is_contiguous(), "if_scan: contiguous tensors");
  const bool add2 = I2.has_value();
  TORCH_CHECK(!add2 || (!is_static && gains.has_value() && I2->is_contiguous() && I2->sizes() == I.sizes() &&
                        gains->is_contiguous() && gains->size(0) == 2), "if_scan: bad second input");
  int64_t B = u.size(0), N = u.numel() / B;
  int64_t C = add2 ? gains->size(1) : 1, HW = add2 ? N / C : 1;
  std::vector<int64_t> shape = {k};
  for (auto d : u.sizes()) shape.push_back(d);
  auto s = torch::empty(shape, bytes ? u.options().dtype(torch::kUInt8) : u.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!steps.has_value() || rows == 1 || rows == k, "if_scan: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "if_scan", [&] {
    const auto* x0 = I.data_ptr<scalar_t>();
    const scalar_t* x1 = add2 ? I2->data_ptr<scalar_t>() : nullptr;
    const scalar_t* g = add2 ? gains->data_ptr<scalar_t>() : nullptr;
    auto* uu = u.data_ptr<scalar_t>(); auto* pp = prev.data_ptr<scalar_t>();
    auto th = (scalar_t)theta;
    auto run = [&](auto* ss) {  // spikes as scalar_t or as bytes
      using S = std::remove_pointer_t<decltype(ss)>;
      with_if_modes(subtract, is_static && !add2, [&](auto sub, auto stat) {
        if (add2) if_scan_impl<scalar_t, sub(), false, true, S>(x0, x1, g, HW, C, uu, pp, ss, st, rows, k, B, N, th);
        else if_scan_impl<scalar_t, sub(), stat(), false, S>(x0, x1, g, HW, C, uu, pp, ss, st, rows, k, B, N, th);
      });
    };
    if (bytes) run(s.data_ptr<uint8_t>());
    else run(s.data_ptr<scalar_t>());
  });
  return s;
}

// ------------------------------------------------------------------ spiking max-pool
struct PoolGeom {
  int64_t H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
  bool fast2x2() const { return kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1; }
};

// One step of one channel plane, after cp += spikes: m = max of cp over each window
// (padding never wins); op = m - pp; oc += op (counts); pp = m.
template <typename T>
static inline void pool_max(const T* __restrict cp, T* __restrict pp, T* __restrict op, T* __restrict oc,
                            const PoolGeom& g) {
  if (g.fast2x2()) {  // kernel 2, stride 2, no padding, no dilation: no bounds checks
    for (int64_t oy = 0; oy < g.Ho; ++oy) {
      const T* r0 = cp + 2 * oy * g.W;
      const T* r1 = r0 + g.W;
      for (int64_t ox = 0; ox < g.Wo; ++ox) {
        const T m = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
        const int64_t o = oy * g.Wo + ox;
        op[o] = m - pp[o];
        oc[o] += op[o];
        pp[o] = m;
      }
    }
    return;
  }
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) {
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t a = 0; a < g.kh; ++a) {
        const int64_t y = oy * g.sh - g.ph + a * g.dh;
        if (y < 0 || y >= g.H) continue;
        for (int64_t e = 0; e < g.kw; ++e) {
          const int64_t x = ox * g.sw - g.pw + e * g.dw;
          if (x >= 0 && x < g.W && cp[y * g.W + x] > m) m = cp[y * g.W + x];
        }
      }
      const int64_t o = oy * g.Wo + ox;
      op[o] = m - pp[o];
      oc[o] += op[o];
      pp[o] = m;
    }
}

template <typename T>
static void maxpool_impl(const T* s, T* cum, T* prev, T* out, double* steps, int64_t rows, int64_t k, int64_t B,
                         int64_t C, const PoolGeom& g) {
  const int64_t HW = g.H * g.W, HWo = g.Ho * g.Wo, N = C * HW, No = C * HWo;
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    const int64_t r = steps && rows != 1 ? k : 1;
    std::vector<T> pcnt(r * HWo);  // batch sums of this channel (a scratch row if not asked)
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(pcnt.begin(), pcnt.end(), T(0));
      for (int64_t b = 0; b < B; ++b) {
        T* __restrict cp = cum + b * N + c * HW;
        for (int64_t t = 0; t < k; ++t) {
          const T* __restrict sp = s + (t * B + b) * N + c * HW;
          for (int64_t i = 0; i < HW; ++i) cp[i] += sp[i];
          pool_max<T>(cp, prev + b * No + c * HWo, out + (t * B + b) * No + c * HWo,
                      pcnt.data() + (r == 1 ? 0 : t * HWo), g);
        }
      }
      if (steps) add_counts(steps, pcnt.data(), r, HWo, No, c * HWo);
    }
  });
}

// Window sums of one plane of spikes sp (H, W) into op (Ho, Wo) for a non-overlapping
// average pool (padding adds nothing): spike counts, exact in any order.
template <typename T>
static inline void pool_sum(const T* __restrict sp, T* __restrict op, const PoolGeom& g) {
  if (g.fast2x2()) {  // kernel 2, stride 2, no padding: no bounds checks
    for (int64_t oy = 0; oy < g.Ho; ++oy) {
      const T* __restrict r0 = sp + 2 * oy * g.W;
      const T* __restrict r1 = r0 + g.W;
      T* __restrict o = op + oy * g.Wo;
      for (int64_t ox = 0; ox < g.Wo; ++ox) o[ox] = (r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1]);
    }
    return;
  }
  if (g.ph == 0 && g.pw == 0 && g.kh == g.sh && g.kw == g.sw && g.Ho * g.kh <= g.H && g.Wo * g.kw <= g.W) {
    for (int64_t oy = 0; oy < g.Ho; ++oy)  // windows that tile the map from its corner: no bounds checks
      for (int64_t ox = 0; ox < g.Wo; ++ox) {
        T sum = T(0);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t e = 0; e < g.kw; ++e) sum += sp[(oy * g.kh + a) * g.W + ox * g.kw + e];
        op[oy * g.Wo + ox] = sum;
      }
    return;
  }
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) {
      T sum = T(0);
      for (int64_t a = 0; a < g.kh; ++a) {
        const int64_t y = oy * g.sh - g.ph + a;
        if (y < 0 || y >= g.H) continue;
        for (int64_t e = 0; e < g.kw; ++e) {
          const int64_t x = ox * g.sw - g.pw + e;
          if (x >= 0 && x < g.W) sum += sp[y * g.W + x];
        }
      }
      op[oy * g.Wo + ox] = sum;
    }
}

// IF layer and the spiking pool that is its only consumer, plane by plane: the spikes are
// added to the IF's counts (and, for a max pool, to its cumulative counts) as they are
// made, never stored. MAX: the cumulative-count max pool (out: pooled spikes, their batch
// sums to psteps); else a non-overlapping average pool (out: the windows' spike sums; the
// consumer divides by the window's area; cum, pooled and psteps unused). Parallel over
// groups of channels of up to V neurons (small planes, such as 1-D pools' rows, share one IF
// step; at least 4 groups per thread), so the IF's batch sums need no atomics.
template <typename T, bool SUB, bool STATIC, bool MAX>
static void if_pool_impl(const T* x, T* u, T* prev, T* cum, T* pooled, T* out, double* steps, int64_t rows,
                         double* psteps, int64_t prows, int64_t k, int64_t B, int64_t C, const PoolGeom& g, T theta) {
  const int64_t HW = g.H * g.W, HWo = g.Ho * g.Wo, N = C * HW, No = C * HWo;
  const bool rows1d = g.H == 1 && g.Ho == 1 && g.ph == 0 && g.pw == 0 && g.kw == g.sw && g.W == g.Wo * g.kw;
  // channels per group: at least V neurons where there are enough groups to share among the threads evenly
  const int64_t G = std::max<int64_t>(1, std::min<int64_t>(V / std::max<int64_t>(HW, 1),
                                                           C / (4 * (int64_t)at::get_num_threads())));
  at::parallel_for(0, (C + G - 1) / G, 1, [&](int64_t q0, int64_t q1) {
    const int64_t r = steps && rows != 1 ? k : 1, pr = psteps && prows != 1 ? k : 1;
    std::vector<T> cnt(r * G * HW), pcnt(MAX ? pr * G * HWo : 0);  // batch sums of a group (scratch if not asked)
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t c0 = q * G, nc = std::min(G, C - c0), len = nc * HW, leno = nc * HWo;
      std::fill(cnt.begin(), cnt.end(), T(0));
      std::fill(pcnt.begin(), pcnt.end(), T(0));
      for (int64_t b = 0; b < B; ++b) {
        T* __restrict ub = u + b * N + c0 * HW;
        T* __restrict pb = prev + b * N + c0 * HW;
        T* __restrict cp = MAX ? cum + b * N + c0 * HW : nullptr;
        for (int64_t t = 0; t < k; ++t) {
          if_step_counted<T, SUB, MAX>(x + (STATIC ? b * N : (t * B + b) * N) + c0 * HW, ub, pb,
                                       cnt.data() + (r == 1 ? 0 : t * len), cp, len, theta);
          T* __restrict og = out + (t * B + b) * No + c0 * HWo;
          if (!MAX && rows1d) {  // 1-D windows that tile each row: the group's rows as one row of windows
            for (int64_t j = 0; j < leno; ++j) {
              T sum = T(0);
              for (int64_t e = 0; e < g.kw; ++e) sum += pb[j * g.kw + e];
              og[j] = sum;
            }
            continue;
          }
          for (int64_t c = 0; c < nc; ++c) {
            if constexpr (MAX) pool_max<T>(cp + c * HW, pooled + b * No + (c0 + c) * HWo, og + c * HWo,
                                           pcnt.data() + (pr == 1 ? 0 : t * leno) + c * HWo, g);
            else pool_sum<T>(pb + c * HW, og + c * HWo, g);  // pb: this step's spikes
          }
        }
      }
      if (steps) add_counts(steps, cnt.data(), r, len, N, c0 * HW);
      if (MAX && psteps) add_counts(psteps, pcnt.data(), pr, leno, No, c0 * HWo);
    }
  });
}

static PoolGeom pool_geom(const torch::Tensor& cum, const torch::Tensor& prev, const std::vector<int64_t>& kernel,
                          const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                          const std::vector<int64_t>& dilation) {
  return {cum.size(2), cum.size(3), prev.size(2), prev.size(3), kernel[0], kernel[1], stride[0], stride[1],
          padding[0], padding[1], dilation[0], dilation[1]};
}

torch::Tensor if_maxpool(torch::Tensor I, torch::Tensor u, torch::Tensor prev, double theta, bool subtract,
                         bool is_static, int64_t k, c10::optional<torch::Tensor> steps, torch::Tensor cum,
                         torch::Tensor pooled, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, std::vector<int64_t> dilation,
                         c10::optional<torch::Tensor> pool_steps) {
  TORCH_CHECK(I.is_contiguous() && u.is_contiguous() && prev.is_contiguous() && cum.is_contiguous() &&
              pooled.is_contiguous() && u.sizes() == cum.sizes(), "if_maxpool: contiguous, matching tensors");
  const PoolGeom g = pool_geom(cum, pooled, kernel, stride, padding, dilation);
  int64_t B = u.size(0), C = u.size(1);
  auto out = torch::empty({k, B, C, g.Ho, g.Wo}, u.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  double* pst = pool_steps.has_value() ? pool_steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0, prows = pool_steps.has_value() ? pool_steps->size(0) : 0;
  TORCH_CHECK((!st || rows == 1 || rows == k) && (!pst || prows == 1 || prows == k),
              "if_maxpool: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "if_maxpool", [&] {
    auto* x = I.data_ptr<scalar_t>(); auto* uu = u.data_ptr<scalar_t>(); auto* pp = prev.data_ptr<scalar_t>();
    auto* cp = cum.data_ptr<scalar_t>(); auto* po = pooled.data_ptr<scalar_t>(); auto* o = out.data_ptr<scalar_t>();
    auto th = (scalar_t)theta;
    with_if_modes(subtract, is_static, [&](auto sub, auto stat) {
      if_pool_impl<scalar_t, sub(), stat(), true>(x, uu, pp, cp, po, o, st, rows, pst, prows, k, B, C, g, th);
    });
  });
  return out;
}

torch::Tensor if_avgpool(torch::Tensor I, torch::Tensor u, torch::Tensor prev, double theta, bool subtract,
                         bool is_static, int64_t k, c10::optional<torch::Tensor> steps, std::vector<int64_t> kernel,
                         std::vector<int64_t> stride, std::vector<int64_t> padding, int64_t Ho, int64_t Wo) {
  TORCH_CHECK(I.is_contiguous() && u.is_contiguous() && prev.is_contiguous() && u.dim() == 4 &&
              u.sizes() == prev.sizes() && I.numel() == (is_static ? 1 : k) * u.numel(),
              "if_avgpool: contiguous (B, C, H, W) membranes and their (k, B, C, H, W) input");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && kernel[0] <= stride[0] &&
              kernel[1] <= stride[1], "if_avgpool: a non-overlapping 2-D pool");
  const PoolGeom g{u.size(2), u.size(3), Ho, Wo, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                   1, 1};
  int64_t B = u.size(0), C = u.size(1);
  auto out = torch::empty({k, B, C, Ho, Wo}, u.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!st || rows == 1 || rows == k, "if_avgpool: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "if_avgpool", [&] {
    auto* x = I.data_ptr<scalar_t>(); auto* uu = u.data_ptr<scalar_t>(); auto* pp = prev.data_ptr<scalar_t>();
    auto* o = out.data_ptr<scalar_t>();
    auto th = (scalar_t)theta;
    with_if_modes(subtract, is_static, [&](auto sub, auto stat) {  // if_pool_impl with the average pool
      if_pool_impl<scalar_t, sub(), stat(), false>(x, uu, pp, nullptr, nullptr, o, st, rows, nullptr, 0, k, B, C, g,
                                                   th);
    });
  });
  return out;
}

torch::Tensor spike_maxpool(torch::Tensor s, torch::Tensor cum, torch::Tensor prev, std::vector<int64_t> kernel,
                            std::vector<int64_t> stride, std::vector<int64_t> padding,
                            std::vector<int64_t> dilation, c10::optional<torch::Tensor> steps) {
  TORCH_CHECK(s.is_contiguous() && cum.is_contiguous() && prev.is_contiguous(), "spike_maxpool: contiguous");
  const PoolGeom g = pool_geom(cum, prev, kernel, stride, padding, dilation);
  int64_t k = s.size(0), B = s.size(1), C = s.size(2);
  auto out = torch::empty({k, B, C, g.Ho, g.Wo}, s.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!st || rows == 1 || rows == k, "spike_maxpool: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "spike_maxpool", [&] {
    maxpool_impl<scalar_t>(s.data_ptr<scalar_t>(), cum.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(),
                           out.data_ptr<scalar_t>(), st, rows, k, B, C, g);
  });
  return out;
}

// ------------------------------------------------------------------ event-driven convolution
// Per sample, the nonzero inputs (events) are bucketed by the input position they occupy
// (a counting sort, channel order kept inside a position); then one of two loop orders
// adds their weights: egather (output-stationary: each output position sums in registers
// the weight rows of the events its receptive field holds, a block of output channels at a
// time) or escatter (row by row into L1 accumulators; fewer visits for sparse inputs or few
// output channels), chosen per sample in econv_impl. wt is (kh, kw, Cin, CoP): an event of
// channel c at tap (a, e) adds the contiguous row wt[a, e, c, :]. Work ~ nonzeros * kh * kw
// / (sh * sw) * Co adds instead of the dense op's inputs * kh * kw * Co MACs.
// pl (or nullptr): a non-overlapping average pool in front of the convolution, {Kh, Kw, Sh,
// Sw, Ph, Pw, Hp, Wp}: an input at (iy, ix) is an event of the pooled map at ((iy + Ph) / Sh,
// (ix + Pw) / Sw), dropped outside every window or past the pooled map (wt holds W / (Kh Kw)).

// Appends the positions of the nonzero entries of r[0..len) to ev (16 slots of slack);
// returns the new count and adds the entries equal to 1 to ones.
template <typename T>
static inline int64_t compact_row(const T* __restrict r, int64_t len, int32_t* __restrict ev, int64_t n,
                                  int64_t& ones) {
  int64_t ix = 0;
#if defined(__AVX512BW__)
  if constexpr (std::is_same_v<T, uint8_t>) {  // spikes as bytes (0 or 1): 64 at a time, compressed 16 by 16
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; ix + 64 <= len; ix += 64) {
      const __m512i v = _mm512_loadu_si512(reinterpret_cast<const void*>(r + ix));
      uint64_t m = _mm512_test_epi8_mask(v, v);
      if (!m) continue;
      ones += __builtin_popcountll(_mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(1)));
      for (int64_t j = 0; m; j += 16, m >>= 16) {
        const __mmask16 h = (__mmask16)(m & 0xFFFF);
        if (!h) continue;
        const __m512i e = _mm512_maskz_compress_epi32(h, _mm512_add_epi32(_mm512_set1_epi32((int32_t)(ix + j)), iota));
        _mm512_storeu_si512(reinterpret_cast<void*>(ev + n), e);
        n += __builtin_popcount(h);
      }
    }
  }
#endif
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {  // 16 at a time: compare to masks, compress the indices in a register
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; ix + 16 <= len; ix += 16) {
      const __m512 v = _mm512_loadu_ps(r + ix);
      const __mmask16 m = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);
      if (!m) continue;
      const __m512i e = _mm512_maskz_compress_epi32(m, _mm512_add_epi32(_mm512_set1_epi32((int32_t)ix), iota));
      _mm512_storeu_si512(reinterpret_cast<void*>(ev + n), e);
      n += __builtin_popcount(m);
      ones += __builtin_popcount(_mm512_cmp_ps_mask(v, one, _CMP_EQ_OQ));
    }
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {  // branch-free left-packing, 8 inputs at a time
    static const auto lut = [] {
      std::array<std::array<int32_t, 8>, 256> t{};
      for (int m = 0; m < 256; ++m) for (int j = 0, k = 0; j < 8; ++j) if (m >> j & 1) t[m][k++] = j;
      return t;
    }();
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    for (; ix + 8 <= len; ix += 8) {
      const __m256 v = _mm256_loadu_ps(r + ix);
      const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
      if (!m) continue;
      const int mo = _mm256_movemask_ps(_mm256_cmp_ps(v, one, _CMP_EQ_OQ));
      const __m256i e = _mm256_add_epi32(_mm256_set1_epi32((int32_t)ix),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut[m].data())));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ev + n), e);
      n += __builtin_popcount(m);
      ones += __builtin_popcount(mo);
    }
  }
#endif
  for (; ix < len; ++ix) {
    const T v = r[ix];
    ev[n] = (int32_t)ix;
    n += v != T(0);
    ones += v == T(1);
  }
  return n;
}

struct ConvGeom {  // Hp x Wp: the (pooled) input map the taps read
  int64_t Cin, Hp, Wp, CoP, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
};

// 64 bytes of T as one vector (a typedef: GCC drops vector_size on a dependent alias).
template <typename T> struct Vec64;
template <> struct Vec64<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec64<double> { typedef double type __attribute__((vector_size(64))); };

// One block of NV vectors of output channels (from channel cb) for every output position
// of one sample: events of position p are chan[start[p] .. start[p + 1]) (values val, unless
// BIN); the sums go to acc (Ho * Wo, CoP) at column cb.
template <typename T, bool BIN, int NV>
static void egather(const int64_t* __restrict start, const int32_t* __restrict chan, const T* __restrict val,
                    const T* __restrict wt, T* __restrict acc, const ConvGeom& g, int64_t cb) {
  using Vec = typename Vec64<T>::type;
  static_assert(sizeof(Vec) == 64, "64-byte vectors");
  constexpr int64_t L = 64 / sizeof(T);
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) {
      Vec a[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) a[j] = Vec{};
      for (int64_t ka = 0; ka < g.kh; ++ka) {
        const int64_t iy = oy * g.sh - g.ph + ka * g.dh;
        if (iy < 0 || iy >= g.Hp) continue;
        for (int64_t ke = 0; ke < g.kw; ++ke) {
          const int64_t ix = ox * g.sw - g.pw + ke * g.dw;
          if (ix < 0 || ix >= g.Wp) continue;
          const int64_t p = iy * g.Wp + ix;
          const T* __restrict wb = wt + (ka * g.kw + ke) * g.Cin * g.CoP + cb;
          for (int64_t q = start[p]; q < start[p + 1]; ++q) {
            const T* __restrict w = wb + (int64_t)chan[q] * g.CoP;
            if constexpr (BIN) {
#pragma GCC unroll 8
              for (int j = 0; j < NV; ++j) { Vec x; __builtin_memcpy(&x, w + j * L, sizeof(Vec)); a[j] += x; }
            } else {
              const Vec v = Vec{} + val[q];
#pragma GCC unroll 8
              for (int j = 0; j < NV; ++j) { Vec x; __builtin_memcpy(&x, w + j * L, sizeof(Vec)); a[j] += v * x; }
            }
          }
        }
      }
      T* __restrict o = acc + (oy * g.Wo + ox) * g.CoP + cb;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) __builtin_memcpy(o + j * L, &a[j], sizeof(Vec));
    }
}

#if defined(__AVX512F__)
constexpr int NVMAX = 8;  // 32 vector registers
#else
constexpr int NVMAX = 4;
#endif

template <typename T, bool BIN>
static void egather_all(const int64_t* start, const int32_t* chan, const T* val, const T* wt, T* acc,
                        const ConvGeom& g) {
  constexpr int64_t L = 64 / sizeof(T);
  for (int64_t cb = 0; cb < g.CoP; cb += NVMAX * L) {
    switch (std::min<int64_t>(NVMAX, (g.CoP - cb) / L)) {
      case 1: egather<T, BIN, 1>(start, chan, val, wt, acc, g, cb); break;
      case 2: egather<T, BIN, 2>(start, chan, val, wt, acc, g, cb); break;
      case 3: egather<T, BIN, 3>(start, chan, val, wt, acc, g, cb); break;
      case 4: egather<T, BIN, 4>(start, chan, val, wt, acc, g, cb); break;
#if defined(__AVX512F__)
      case 5: egather<T, BIN, 5>(start, chan, val, wt, acc, g, cb); break;
      case 6: egather<T, BIN, 6>(start, chan, val, wt, acc, g, cb); break;
      case 7: egather<T, BIN, 7>(start, chan, val, wt, acc, g, cb); break;
      case 8: egather<T, BIN, 8>(start, chan, val, wt, acc, g, cb); break;
#endif
      default: break;
    }
  }
}

// One event's weight row w (n vectors of output channels) added to the accumulators o:
// o += w for a binary event, o += v * w for a graded one of value v (broadcast in v). Inlined,
// so a compile-time n unrolls.
template <typename T, bool BIN>
static inline __attribute__((always_inline)) void add_weights(T* __restrict o, const T* __restrict w,
                                                              typename Vec64<T>::type v, int64_t n) {
  using Vec = typename Vec64<T>::type;
  constexpr int64_t L = 64 / sizeof(T);
#pragma GCC unroll 8
  for (int64_t j = 0; j < n; ++j) {
    Vec x, a;
    __builtin_memcpy(&x, w + j * L, sizeof(Vec));
    __builtin_memcpy(&a, o + j * L, sizeof(Vec));
    if constexpr (BIN) a += x;
    else a += v * x;
    __builtin_memcpy(o + j * L, &a, sizeof(Vec));
  }
}

// Row-stationary alternative for sparse inputs or few output channels: output row by
// output row, the events of the input rows its taps reach each add their weight rows
// wt[a, e, c, :] to the row's accumulators (Wo, CoP), which stay in L1, for each tap column
// e that lands on an output; then the row is stored. Visits Ho * kh input rows instead of
// Ho * Wo * kh * kw positions, at the price of accumulator loads and stores. reach: for each
// input column, the number n of (tap column, output column) pairs it reaches, then the n
// pairs, tap columns ascending (reach_table), so that no event divides by the stride.
template <typename T, bool BIN>
static void escatter(const int64_t* __restrict start, const int32_t* __restrict chan, const int32_t* __restrict col,
                     const T* __restrict val, const T* __restrict wt, T* __restrict acc, const ConvGeom& g,
                     const int32_t* __restrict reach) {
  using Vec = typename Vec64<T>::type;
  constexpr int64_t L = 64 / sizeof(T);
  const int64_t nv = g.CoP / L, tap = g.Cin * g.CoP, stride = 2 * g.kw + 1;
  for (int64_t oy = 0; oy < g.Ho; ++oy) {
    T* __restrict row = acc + oy * g.Wo * g.CoP;
    std::fill(row, row + g.Wo * g.CoP, T(0));
    for (int64_t ka = 0; ka < g.kh; ++ka) {
      const int64_t iy = oy * g.sh - g.ph + ka * g.dh;
      if (iy < 0 || iy >= g.Hp) continue;
      for (int64_t q = start[iy * g.Wp]; q < start[(iy + 1) * g.Wp]; ++q) {
        const int32_t* __restrict r = reach + col[q] * stride;
        const T* __restrict wc = wt + (ka * g.kw * g.Cin + chan[q]) * g.CoP;
        Vec v{};
        if constexpr (!BIN) v = v + val[q];
        for (int32_t j = 0; j < r[0]; ++j) add_weights<T, BIN>(row + r[2 + 2 * j] * g.CoP, wc + r[1 + 2 * j] * tap, v, nv);
      }
    }
  }
}

// escatter's table: for each input column x of the (pooled) map, the tap columns e (ascending)
// whose output column ox = (x + pw - e dw) / sw is whole and inside the row, as
// [n, e_1, ox_1, ..., e_n, ox_n] in slots of 2 kw + 1.
static std::vector<int32_t> reach_table(const ConvGeom& g) {
  std::vector<int32_t> reach(g.Wp * (2 * g.kw + 1), 0);
  for (int64_t x = 0; x < g.Wp; ++x) {
    int32_t* r = reach.data() + x * (2 * g.kw + 1);
    for (int64_t e = 0; e < g.kw; ++e) {
      const int64_t t = x + g.pw - e * g.dw;
      if (t < 0) break;
      if (t % g.sw || t / g.sw >= g.Wo) continue;
      r[1 + 2 * r[0]] = (int32_t)e;
      r[2 + 2 * r[0]] = (int32_t)(t / g.sw);
      ++r[0];
    }
  }
  return reach;
}

// escatter for the common case of stride 1 and dilation 1 along the row, KW tap columns and
// NV vectors of output channels known at compile time, with the same sums in the same order.
// WIN: the accumulators of the KW outputs the current input column reaches are kept in
// registers (win[e]: output t0 - e), loaded when an output enters that window and stored when
// it leaves it, and the events of each column add their weight rows to them: no accumulator
// is loaded and stored per event (store-to-load forwarding chains between neighbouring
// events; faster from 2 vectors of output channels). Else an event whose KW outputs all lie
// in the row (every event but those at the row's ends) adds its KW weight rows to the
// accumulators in straight-line code; the others take escatter's checked loop.
template <typename T, bool BIN, int KW, int NV, bool WIN>
static void escatter_s1(const int64_t* __restrict start, const int32_t* __restrict chan,
                        const int32_t* __restrict col, const T* __restrict val, const T* __restrict wt,
                        T* __restrict acc, const ConvGeom& g) {
  using Vec = typename Vec64<T>::type;
  constexpr int64_t L = 64 / sizeof(T);
  const int64_t CoP = g.CoP, tap = g.Cin * CoP, Wo = g.Wo;
  for (int64_t oy = 0; oy < g.Ho; ++oy) {
    T* __restrict row = acc + oy * Wo * CoP;
    std::fill(row, row + Wo * CoP, T(0));
    for (int64_t ka = 0; ka < g.kh; ++ka) {
      const int64_t iy = oy * g.sh - g.ph + ka * g.dh;
      if (iy < 0 || iy >= g.Hp) continue;
      const int64_t qs = start[iy * g.Wp], qe = start[(iy + 1) * g.Wp];
      if constexpr (!WIN) {
        for (int64_t q = qs; q < qe; ++q) {
          const int64_t t0 = col[q] + g.pw;  // the output of tap column 0; tap e reaches t0 - e
          const T* __restrict wc = wt + (ka * KW * g.Cin + chan[q]) * CoP;
          Vec v{};
          if constexpr (!BIN) v = v + val[q];
          if (t0 >= KW - 1 && t0 < Wo) {
#pragma GCC unroll 8
            for (int e = 0; e < KW; ++e) add_weights<T, BIN>(row + (t0 - e) * CoP, wc + e * tap, v, NV);
            continue;
          }
          for (int e = 0; e < KW; ++e) {
            const int64_t ox = t0 - e;
            if (ox < 0) break;
            if (ox < Wo) add_weights<T, BIN>(row + ox * CoP, wc + e * tap, v, NV);
          }
        }
        continue;
      }
      if (qs == qe) continue;
      Vec win[KW][NV];
      int64_t t0 = 0;  // win[e] holds output t0 - e (zeros outside the row)
      auto load = [&](int e) __attribute__((always_inline)) {
        const int64_t o = t0 - e;
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j)
          if (o >= 0 && o < Wo) __builtin_memcpy(&win[e][j], row + o * CoP + j * L, sizeof(Vec));
          else win[e][j] = Vec{};
      };
      auto store = [&](int e) __attribute__((always_inline)) {
        const int64_t o = t0 - e;
        if (o >= 0 && o < Wo)
#pragma GCC unroll 8
          for (int j = 0; j < NV; ++j) __builtin_memcpy(row + o * CoP + j * L, &win[e][j], sizeof(Vec));
      };
      for (int64_t q = qs; q < qe;) {
        const int32_t x = col[q];
        const int64_t t = x + g.pw;
        if (q == qs || t - t0 >= KW) {  // a fresh window
          if (q != qs)
#pragma GCC unroll 8
            for (int e = 0; e < KW; ++e) store(e);
          t0 = t;
#pragma GCC unroll 8
          for (int e = 0; e < KW; ++e) load(e);
        } else {
          for (; t0 < t;) {  // slide by one column: output t0 - KW + 1 leaves, t0 + 1 enters
            store(KW - 1);
#pragma GCC unroll 8
            for (int e = KW - 1; e > 0; --e)
#pragma GCC unroll 8
              for (int j = 0; j < NV; ++j) win[e][j] = win[e - 1][j];
            ++t0;
            load(0);
          }
        }
        for (; q < qe && col[q] == x; ++q) {  // the events of this column, channels ascending
          const T* __restrict wc = wt + (ka * KW * g.Cin + chan[q]) * CoP;
          Vec v{};
          if constexpr (!BIN) v = v + val[q];
#pragma GCC unroll 8
          for (int e = 0; e < KW; ++e)
#pragma GCC unroll 8
            for (int j = 0; j < NV; ++j) {
              Vec w;
              __builtin_memcpy(&w, wc + e * tap + j * L, sizeof(Vec));
              if constexpr (BIN) win[e][j] += w;
              else win[e][j] += v * w;
            }
        }
      }
#pragma GCC unroll 8
      for (int e = 0; e < KW; ++e) store(e);
    }
  }
}

// escatter_s1 input row by input row, for stride 1 and dilation 1 along both axes: each
// event adds its kh * KW weight rows to the outputs of every output row it reaches, so its
// per-event work (its channel, column and weights' address) is done once instead of once
// per tap row. The accumulators of the whole map (Ho * Wo, CoP) are zeroed first; each output
// still takes its input rows, then columns, then channels in ascending order: the same sums
// in the same order as escatter. Faster than escatter_s1 for one vector of output channels.
template <typename T, bool BIN, int KW, int NV>
static void escatter_s1_rows(const int64_t* __restrict start, const int32_t* __restrict chan,
                             const int32_t* __restrict col, const T* __restrict val, const T* __restrict wt,
                             T* __restrict acc, const ConvGeom& g) {
  using Vec = typename Vec64<T>::type;
  const int64_t CoP = g.CoP, tap = g.Cin * CoP, Wo = g.Wo, rowlen = Wo * CoP;
  std::fill(acc, acc + g.Ho * rowlen, T(0));
  for (int64_t iy = 0; iy < g.Hp; ++iy) {
    const int64_t ka0 = std::max<int64_t>(0, iy + g.ph - (g.Ho - 1)), ka1 = std::min<int64_t>(g.kh, iy + g.ph + 1);
    if (ka0 >= ka1) continue;  // reaches no output row
    for (int64_t q = start[iy * g.Wp]; q < start[(iy + 1) * g.Wp]; ++q) {
      const int64_t t0 = col[q] + g.pw;  // the output column of tap column 0; tap e reaches t0 - e
      const T* __restrict wc = wt + chan[q] * CoP;
      Vec v{};
      if constexpr (!BIN) v = v + val[q];
      const bool inside = t0 >= KW - 1 && t0 < Wo;
      for (int64_t ka = ka0; ka < ka1; ++ka) {  // output row iy + ph - ka
        T* __restrict row = acc + (iy + g.ph - ka) * rowlen;
        const T* __restrict wa = wc + ka * KW * tap;
        if (inside) {
#pragma GCC unroll 8
          for (int e = 0; e < KW; ++e) add_weights<T, BIN>(row + (t0 - e) * CoP, wa + e * tap, v, NV);
          continue;
        }
        for (int e = 0; e < KW; ++e) {
          const int64_t ox = t0 - e;
          if (ox < 0) break;
          if (ox < Wo) add_weights<T, BIN>(row + ox * CoP, wa + e * tap, v, NV);
        }
      }
    }
  }
}

// escatter, or escatter_s1 where the geometry allows it (3 tap columns, 1, 2, 4 or 8 vectors).
template <typename T, bool BIN>
static void escatter_any(const int64_t* start, const int32_t* chan, const int32_t* col, const T* val, const T* wt,
                         T* acc, const ConvGeom& g, const int32_t* reach) {
  constexpr int64_t L = 64 / sizeof(T);
  if (g.sw == 1 && g.dw == 1 && g.kw == 3) {
    switch (g.CoP / L) {
      case 1:
        if (g.sh == 1 && g.dh == 1) return escatter_s1_rows<T, BIN, 3, 1>(start, chan, col, val, wt, acc, g);
        return escatter_s1<T, BIN, 3, 1, false>(start, chan, col, val, wt, acc, g);
      case 2: return escatter_s1<T, BIN, 3, 2, true>(start, chan, col, val, wt, acc, g);
      case 4: return escatter_s1<T, BIN, 3, 4, true>(start, chan, col, val, wt, acc, g);
      case 8: return escatter_s1<T, BIN, 3, 8, true>(start, chan, col, val, wt, acc, g);
      default: break;
    }
  }
  escatter<T, BIN>(start, chan, col, val, wt, acc, g, reach);
}

// ym (Co, HWo) = acc (HWo, CoP) transposed, plus bias (per channel; nullptr: none), in
// tiles of 16 positions; with AVX-512 (float), tiles of 16 x 16 are transposed in registers.
template <typename T>
static void store_transposed(const T* __restrict acc, const T* __restrict bias, T* __restrict ym, int64_t HWo,
                             int64_t Co, int64_t CoP) {
  for (int64_t o0 = 0; o0 < HWo; o0 += 16) {
    const int64_t o1 = std::min(HWo, o0 + 16);
    int64_t c0 = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      for (; o1 - o0 == 16 && c0 + 16 <= Co; c0 += 16) {
        __m512 r[16], t[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(acc + (o0 + i) * CoP + c0);
#pragma GCC unroll 8
        for (int i = 0; i < 16; i += 2) {  // 2 x 2 blocks of single elements
          t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
          t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 16; i += 4) {  // of pairs
          r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
          r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
          r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
          r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 16; h += 8)  // of 128-bit lanes
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + j + 4], 0x88);
            t[h + j + 4] = _mm512_shuffle_f32x4(r[h + j], r[h + j + 4], 0xDD);
          }
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {  // of 256-bit halves
          r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
          r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
        }
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          const __m512 b = _mm512_set1_ps(bias ? bias[c0 + i] : 0.f);
          _mm512_storeu_ps(ym + (c0 + i) * HWo + o0, _mm512_add_ps(r[i], b));
        }
      }
    }
#endif
    for (int64_t co = c0; co < Co; ++co) {
      const T bc = bias ? bias[co] : T(0);
      for (int64_t o = o0; o < o1; ++o) ym[co * HWo + o] = acc[o * CoP + co] + bc;
    }
  }
}

// The IF layer that alone reads an event-driven convolution, run on each output row as it
// is made (econv_impl with ife): membranes u and previous spikes prev (B, N) updated in
// place, spikes to s (k, B, N), batch sums of the spikes to steps (rows 1 or k, N) as in
// if_scan. The currents are acc + bias, the values the convolution alone would store.
// With pool (nullptr: none), the spikes are not stored but summed over the windows of that
// non-overlapping average pool, which alone reads the IF layer: s is then (k, B, Co, Ho', Wo')
// (the pool's output), as if_avgpool writes it.
template <typename T>
struct IFEpilogue {
  T* u; T* prev; T* s; uint8_t* sb; double* steps; int64_t rows, k, B; T theta; bool subtract; const PoolGeom* pool;
};

// path: 1 gather, 2 row scatter, 0 per sample the one expected faster: per event and tap,
// the gather costs ~1 ns and the scatter ~0.9 + 0.5 ns per vector of output channels, and
// the gather ~2 ns more per position visit (Ho Wo kh kw per block of NVMAX vectors)
// (measured on AVX-512, experiments/bench/event_cost.py shapes); where the scatter runs
// escatter_s1, the gather costs ~0.78 ns more per event and tap, 5.6 ns more per visit and
// the scatter ~0.7 ns more per event, tap and vector (fitted on 40 cases: 3x3 stride-1
// layers of 16-128 channels on 8x8 to 32x32 maps at 1-30 % density, one thread); where it
// runs escatter_s1 with its register window (2 to 8 vectors), the scatter, which was faster
// in every case measured (16-128 channels, 8x8 to 32x32, 5-50 % density, binary and graded).
// x holds the input in T, or xb as bytes (spikes 0/1).
template <typename T>
static void econv_impl(const T* x, const uint8_t* xb, const T* wt, const T* bias, T* y, int64_t M, int64_t H,
                       int64_t W, int64_t Co, const ConvGeom& g, const int64_t* pl, int64_t path,
                       const IFEpilogue<T>* ife = nullptr) {
  const int64_t HW = H * W, HWo = g.Ho * g.Wo, P = g.Hp * g.Wp;
  std::vector<int32_t> pos(pl ? HW : 0);  // input position -> position of the pooled map, or -1
  for (int64_t iy = 0; pl && iy < H; ++iy)
    for (int64_t ix = 0; ix < W; ++ix) {
      const int64_t ty = iy + pl[4], tx = ix + pl[5], py = ty / pl[2], px = tx / pl[3];
      const bool in = ty - py * pl[2] < pl[0] && tx - px * pl[3] < pl[1] && py < pl[6] && px < pl[7];
      pos[iy * W + ix] = in ? (int32_t)(py * pl[7] + px) : -1;
    }
  const int32_t* pm = pl ? pos.data() : nullptr;  // input position -> pooled one (or -1)
  const std::vector<int32_t> reach = reach_table(g);
  std::vector<int32_t> colof(P);  // (pooled) position -> its column
  for (int64_t p = 0; p < P; ++p) colof[p] = (int32_t)(p % g.Wp);
  const int64_t L = 64 / (int64_t)sizeof(T), visits = HWo * g.kh * g.kw;
  const int64_t nvec = g.CoP / L, blocks = (nvec + NVMAX - 1) / NVMAX;
  const double taps = (double)(g.kh * g.kw) / (double)(g.sh * g.sw);
  const bool s1 = g.sw == 1 && g.dw == 1 && g.kw == 3 && (nvec == 1 || nvec == 2 || nvec == 4 || nvec == 8);
  const bool win = s1 && nvec > 1;  // escatter_s1 with its register window: faster than the gather at any density
  struct Scratch {
    std::vector<int32_t> ev, chan, col;
    std::vector<int64_t> cbound, start, cursor;
    std::vector<T> val, acc;
  };
  auto scratch = [&] {
    return Scratch{std::vector<int32_t>(g.Cin * HW + 16), std::vector<int32_t>(g.Cin * HW),
                   std::vector<int32_t>(g.Cin * HW), std::vector<int64_t>(g.Cin + 1), std::vector<int64_t>(P + 1),
                   std::vector<int64_t>(P), std::vector<T>(g.Cin * HW), std::vector<T>(HWo * g.CoP)};
  };
  auto conv_row = [&](int64_t m, Scratch& sc) {  // row m of x -> sc.acc (HWo, CoP)
    auto &ev = sc.ev, &chan = sc.chan, &col = sc.col, &val = sc.val, &acc = sc.acc;
    auto &cbound = sc.cbound, &start = sc.start, &cursor = sc.cursor;
    const T* __restrict xm = xb ? nullptr : x + m * g.Cin * HW;
    const uint8_t* __restrict xbm = xb ? xb + m * g.Cin * HW : nullptr;
    int64_t n = 0, ones = 0;
    for (int64_t c = 0; c < g.Cin; ++c) {  // the nonzero inputs, plane by plane
      cbound[c] = n;
      n = xb ? compact_row<uint8_t>(xbm + c * HW, HW, ev.data(), n, ones)
             : compact_row<T>(xm + c * HW, HW, ev.data(), n, ones);
    }
    cbound[g.Cin] = n;
    std::fill(start.begin(), start.end(), 0);  // counting sort of the events by (pooled) position
    for (int64_t q = 0; q < n; ++q) {
      const int32_t p = pm ? pm[ev[q]] : ev[q];
      start[p + 1] += p >= 0;
    }
    for (int64_t p = 0; p < P; ++p) start[p + 1] += start[p];
    std::copy(start.begin(), start.end() - 1, cursor.begin());
    const bool bin = ones == n;
    for (int64_t c = 0; c < g.Cin; ++c)
      for (int64_t q = cbound[c]; q < cbound[c + 1]; ++q) {
        const int32_t p = pm ? pm[ev[q]] : ev[q];
        if (p < 0) continue;
        const int64_t k = cursor[p]++;
        chan[k] = (int32_t)c;
        col[k] = colof[p];
        if (!bin) val[k] = xb ? (T)xbm[c * HW + ev[q]] : xm[c * HW + ev[q]];
      }
    const double evt = taps * (double)start[P], vb = (double)(visits * blocks);
    const bool gather = path == 1 || (path == 0 && !win && (s1 ? 5.6 * vb < (0.7 * (double)nvec - 0.78) * evt
                                                               : 20.0 * vb < (double)(5 * nvec - 1) * evt));
    if (gather && bin) egather_all<T, true>(start.data(), chan.data(), nullptr, wt, acc.data(), g);
    else if (gather) egather_all<T, false>(start.data(), chan.data(), val.data(), wt, acc.data(), g);
    else if (bin) escatter_any<T, true>(start.data(), chan.data(), col.data(), nullptr, wt, acc.data(), g, reach.data());
    else escatter_any<T, false>(start.data(), chan.data(), col.data(), val.data(), wt, acc.data(), g, reach.data());
  };
  if (!ife) {
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      Scratch sc = scratch();
      for (int64_t m = m0; m < m1; ++m) {
        conv_row(m, sc);
        store_transposed<T>(sc.acc.data(), bias, y + m * Co * HWo, HWo, Co, g.CoP);
      }
    });
    return;
  }
  // with the IF layer: parallel over samples, each sample's rows (t * B + b) in step order;
  // each thread sums its samples' spikes in its own buffer, added to steps at the end
  const int64_t B = ife->B, N = Co * HWo, r = ife->steps && ife->rows != 1 ? ife->k : 1;
  std::vector<std::vector<T>> cnts(at::get_num_threads());
  const PoolGeom* pg = ife->pool;
  const int64_t No = pg ? pg->Ho * pg->Wo : 0;  // one channel's pooled outputs
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Scratch sc = scratch();
    std::vector<T> cur(N), sink(pg && !ife->steps ? N : 0);  // spike counts nobody asked for (pool only)
    std::vector<T>& cnt = cnts[at::get_thread_num()];
    if (ife->steps && cnt.empty()) cnt.assign(r * N, T(0));
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t t = 0; t < ife->k; ++t) {
        conv_row(t * B + b, sc);
        store_transposed<T>(sc.acc.data(), bias, cur.data(), HWo, Co, g.CoP);
        T* cn = ife->steps ? cnt.data() + (r == 1 ? 0 : t * N) : nullptr;
        T* ub = ife->u + b * N;
        T* pb = ife->prev + b * N;
        auto step = [&](auto* st) {  // spikes as T or as bytes
          using S = std::remove_pointer_t<decltype(st)>;
          if (ife->subtract) if_step_count<T, true, false, S>(cur.data(), nullptr, nullptr, nullptr, ub, pb, st, cn, N,
                                                               ife->theta);
          else if_step_count<T, false, false, S>(cur.data(), nullptr, nullptr, nullptr, ub, pb, st, cn, N, ife->theta);
        };
        if (pg) {  // as if_pool_impl: the spikes only counted, then pooled from pb (this step's spikes)
          T* c = cn ? cn : sink.data();
          if (ife->subtract) if_step_counted<T, true, false>(cur.data(), ub, pb, c, nullptr, N, ife->theta);
          else if_step_counted<T, false, false>(cur.data(), ub, pb, c, nullptr, N, ife->theta);
          for (int64_t ch = 0; ch < Co; ++ch) pool_sum<T>(pb + ch * HWo, ife->s + ((t * B + b) * Co + ch) * No, *pg);
        } else if (ife->sb) {
          step(ife->sb + (t * B + b) * N);
        } else {
          step(ife->s + (t * B + b) * N);
        }
      }
  });
  for (const auto& cnt : cnts)
    if (!cnt.empty()) add_counts(ife->steps, cnt.data(), r, N, N, 0);
}

double sampled_nonzeros(torch::Tensor x, int64_t every) {
  TORCH_CHECK(x.is_contiguous() && x.dim() >= 1 && every >= 1, "sampled_nonzeros: contiguous tensor");
  const int64_t M = x.size(0), per = M ? x.numel() / M : 0;
  int64_t nz = 0, seen = 0;
  AT_DISPATCH_ALL_TYPES(x.scalar_type(), "sampled_nonzeros", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    for (int64_t m = 0; m < M; m += every, ++seen)
      for (int64_t i = 0; i < per; ++i) nz += p[m * per + i] != scalar_t(0);
  });
  return seen ? (double)nz / (double)seen : 0.0;
}

// The checked geometry of an event convolution of x (M, Cin, H, W) with wt (kh, kw, Cin, CoP)
// (on the pooled map of pl, if given); x has wt's type, or holds spikes as bytes (uint8);
// errors are prefixed with the kernel's name fn.
static ConvGeom conv_geom(const torch::Tensor& x, const torch::Tensor& wt, int64_t Co, int64_t Ho, int64_t Wo,
                          const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                          const std::vector<int64_t>& dilation, const int64_t* pl, int64_t path, const char* fn) {
  TORCH_CHECK(path >= 0 && path <= 2, fn, ": path is 0 (auto), 1 (gather) or 2 (row scatter)");
  TORCH_CHECK(x.dim() == 4 && wt.dim() == 4 && x.is_contiguous() && wt.is_contiguous(), fn, ": layout");
  int64_t Cin = x.size(1), H = x.size(2), W = x.size(3);
  int64_t kh = wt.size(0), kw = wt.size(1), CoP = wt.size(3);
  const int64_t L = 64 / (int64_t)wt.element_size();
  TORCH_CHECK(wt.size(2) == Cin && CoP >= Co && CoP % L == 0, fn,
              ": weight shape (kh, kw, Cin, Co rounded up to 64 bytes)");
  TORCH_CHECK(x.scalar_type() == wt.scalar_type() || x.scalar_type() == torch::kUInt8, fn,
              ": x of the weights' type, or spikes as bytes (uint8)");
  TORCH_CHECK(H * W < (int64_t(1) << 31), fn, ": an input plane must have fewer than 2**31 positions");
  const int64_t Hp = pl ? pl[6] : H, Wp = pl ? pl[7] : W;
  return {Cin, Hp, Wp, CoP, Ho, Wo, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

static torch::Tensor econv(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co, int64_t Ho,
                           int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                           std::vector<int64_t> dilation, const int64_t* pl, int64_t path) {
  const ConvGeom g = conv_geom(x, wt, Co, Ho, Wo, stride, padding, dilation, pl, path, "event_conv2d");
  const int64_t M = x.size(0), H = x.size(2), W = x.size(3);
  auto y = torch::empty({M, Co, Ho, Wo}, wt.options());
  const bool xb = x.scalar_type() == torch::kUInt8;
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "event_conv2d", [&] {
    const scalar_t* b = bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr;
    econv_impl<scalar_t>(xb ? nullptr : x.data_ptr<scalar_t>(), xb ? x.data_ptr<uint8_t>() : nullptr,
                         wt.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>(), M, H, W, Co, g, pl, path);
  });
  return y;
}

torch::Tensor event_conv2d(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                           int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                           std::vector<int64_t> dilation, int64_t path) {
  return econv(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, nullptr, path);
}

// event_conv2d_if and event_conv2d_if_avgpool: the pool's geometry pg, or nullptr; bytes:
// the spikes as uint8 (without a pool).
static torch::Tensor econv_if(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                              int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                              std::vector<int64_t> dilation, int64_t path, torch::Tensor u, torch::Tensor prev,
                              double theta, bool subtract, int64_t k, c10::optional<torch::Tensor> steps,
                              const PoolGeom* pg, bool bytes, const char* fn) {
  const ConvGeom g = conv_geom(x, wt, Co, Ho, Wo, stride, padding, dilation, nullptr, path, fn);
  TORCH_CHECK(u.is_contiguous() && prev.is_contiguous() && u.sizes() == prev.sizes() && k >= 1 &&
              x.size(0) == k * u.size(0) && u.numel() == u.size(0) * Co * Ho * Wo &&
              u.scalar_type() == wt.scalar_type(), fn, ": x (k * B, Cin, H, W), membranes (B, Co, Ho, Wo)");
  const int64_t B = u.size(0), H = x.size(2), W = x.size(3), rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!steps.has_value() || rows == 1 || rows == k, fn, ": steps must have 1 or k rows");
  std::vector<int64_t> shape = {k};
  for (auto d : u.sizes()) shape.push_back(d);
  if (pg) shape = {k, B, Co, pg->Ho, pg->Wo};
  bytes = bytes && !pg;
  auto s = torch::empty(shape, bytes ? u.options().dtype(torch::kUInt8) : u.options());
  const bool xb = x.scalar_type() == torch::kUInt8;
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "event_conv2d_if", [&] {
    const scalar_t* b = bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr;
    const IFEpilogue<scalar_t> ife{u.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(),
                                   bytes ? nullptr : s.data_ptr<scalar_t>(), bytes ? s.data_ptr<uint8_t>() : nullptr,
                                   steps.has_value() ? steps->data_ptr<double>() : nullptr, rows, k, B,
                                   (scalar_t)theta, subtract, pg};
    econv_impl<scalar_t>(xb ? nullptr : x.data_ptr<scalar_t>(), xb ? x.data_ptr<uint8_t>() : nullptr,
                         wt.data_ptr<scalar_t>(), b, nullptr, k * B, H, W, Co, g, nullptr, path, &ife);
  });
  return s;
}

torch::Tensor event_conv2d_if(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                              int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                              std::vector<int64_t> dilation, int64_t path, torch::Tensor u, torch::Tensor prev,
                              double theta, bool subtract, int64_t k, c10::optional<torch::Tensor> steps, bool bytes) {
  return econv_if(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, path, u, prev, theta, subtract, k, steps,
                  nullptr, bytes, "event_conv2d_if");
}

torch::Tensor event_conv2d_if_avgpool(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias,
                                      int64_t Co, int64_t Ho, int64_t Wo, std::vector<int64_t> stride,
                                      std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t path,
                                      torch::Tensor u, torch::Tensor prev, double theta, bool subtract, int64_t k,
                                      c10::optional<torch::Tensor> steps, std::vector<int64_t> kernel,
                                      std::vector<int64_t> pstride, std::vector<int64_t> ppadding, int64_t Hp,
                                      int64_t Wp) {
  TORCH_CHECK(kernel.size() == 2 && pstride.size() == 2 && ppadding.size() == 2 && kernel[0] <= pstride[0] &&
              kernel[1] <= pstride[1], "event_conv2d_if_avgpool: a non-overlapping 2-D pool");
  const PoolGeom pg{Ho, Wo, Hp, Wp, kernel[0], kernel[1], pstride[0], pstride[1], ppadding[0], ppadding[1], 1, 1};
  return econv_if(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, path, u, prev, theta, subtract, k, steps, &pg,
                  false, "event_conv2d_if_avgpool");
}

torch::Tensor event_pool_conv2d(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                                int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                                std::vector<int64_t> dilation, std::vector<int64_t> pool, int64_t path) {
  TORCH_CHECK(pool.size() == 8 && pool[0] <= pool[2] && pool[1] <= pool[3] && pool[0] > 0 && pool[1] > 0,
              "event_pool_conv2d: pool is {Kh, Kw, Sh, Sw, Ph, Pw, Hp, Wp} with K <= S");
  return econv(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, pool.data(), path);
}

// ------------------------------------------------------------------ bindings
// (wrap_pybind_function: a TORCH_CHECK failure is a Python RuntimeError with its message)
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("if_scan", torch::wrap_pybind_function(if_scan), "IF layer over k steps (see kernels.py)");
  m.def("spike_maxpool", torch::wrap_pybind_function(spike_maxpool), "cumulative-count max-pooling of spikes");
  m.def("if_maxpool", torch::wrap_pybind_function(if_maxpool),
        "IF layer and the spiking max-pool that alone reads it, fused");
  m.def("if_avgpool", torch::wrap_pybind_function(if_avgpool),
        "IF layer and the average pool that alone reads it, fused: the pool windows' spike counts");
  m.def("sampled_nonzeros", torch::wrap_pybind_function(sampled_nonzeros),
        "mean nonzeros per sample over every n-th sample");
  m.def("event_conv2d", torch::wrap_pybind_function(event_conv2d), "event-driven conv2d (a Linear layer is a 1x1 one)");
  m.def("event_conv2d_if", torch::wrap_pybind_function(event_conv2d_if),
        "event-driven conv2d and the IF layer that alone reads it, fused: the currents are never stored");
  m.def("event_conv2d_if_avgpool", torch::wrap_pybind_function(event_conv2d_if_avgpool),
        "event_conv2d_if with the non-overlapping average pool that alone reads the IF layer: its windows' spike sums");
  m.def("event_pool_conv2d", torch::wrap_pybind_function(event_pool_conv2d),
        "event-driven conv2d of a non-overlapping average pool of x, on the events of x");
}
