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
// spikes pb (both updated), spikes to st.
template <typename T, bool SUB, bool ADD2>
static inline void if_step(const T* __restrict xa, const T* __restrict xb, const T* __restrict ga,
                           const T* __restrict gb, T* __restrict ub, T* __restrict pb, T* __restrict st, int64_t m,
                           T theta) {
  for (int64_t i = 0; i < m; ++i) {
    T cur;
    if constexpr (ADD2) cur = xa[i] * ga[i] + xb[i] * gb[i];
    else cur = xa[i];
    const T spk = if_update<T, SUB>(ub[i], pb[i], cur, theta);
    pb[i] = spk; st[i] = spk;
  }
}

// One IF step of m neurons whose spikes are only counted: added to cn and to cp.
template <typename T, bool SUB>
static inline void if_step_counted(const T* __restrict xa, T* __restrict ub, T* __restrict pb, T* __restrict cn,
                                   T* __restrict cp, int64_t m, T theta) {
  for (int64_t i = 0; i < m; ++i) {
    const T spk = if_update<T, SUB>(ub[i], pb[i], xa[i], theta);
    pb[i] = spk; cn[i] += spk; cp[i] += spk;
  }
}

template <typename T, bool SUB, bool STATIC, bool ADD2>
static void if_scan_impl(const T* x0, const T* x1, const T* gains, int64_t HW, int64_t C, T* u, T* prev, T* s,
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
          T* __restrict st = s + (t * B + b) * N + nb;
          T* __restrict cn = steps ? cnt.data() + (per_step ? t * len : 0) + off : nullptr;
          if_step<T, SUB, ADD2>(xa, xb, g0, g1, ub, pb, st, m, theta);
          if (cn) for (int64_t i = 0; i < m; ++i) cn[i] += st[i];
        }
      }
    if (steps) add_counts(steps, cnt.data(), per_step ? k : 1, len, N, n0);
  });
}

#define SNN_IF(SUB, ST, A2) if_scan_impl<scalar_t, SUB, ST, A2>(x0, x1, g, HW, C, uu, pp, ss, st, rows, k, B, N, th)
torch::Tensor if_scan(torch::Tensor I, c10::optional<torch::Tensor> I2, c10::optional<torch::Tensor> gains,
                      torch::Tensor u, torch::Tensor prev, double theta, bool subtract, bool is_static, int64_t k,
                      c10::optional<torch::Tensor> steps) {
  TORCH_CHECK(I.is_contiguous() && u.is_contiguous() && prev.is_contiguous(), "if_scan: contiguous tensors");
  const bool add2 = I2.has_value();
  TORCH_CHECK(!add2 || (!is_static && gains.has_value() && I2->is_contiguous() && I2->sizes() == I.sizes() &&
                        gains->is_contiguous() && gains->size(0) == 2), "if_scan: bad second input");
  int64_t B = u.size(0), N = u.numel() / B;
  int64_t C = add2 ? gains->size(1) : 1, HW = add2 ? N / C : 1;
  std::vector<int64_t> shape = {k};
  for (auto d : u.sizes()) shape.push_back(d);
  auto s = torch::empty(shape, u.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!steps.has_value() || rows == 1 || rows == k, "if_scan: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "if_scan", [&] {
    const auto* x0 = I.data_ptr<scalar_t>();
    const scalar_t* x1 = add2 ? I2->data_ptr<scalar_t>() : nullptr;
    const scalar_t* g = add2 ? gains->data_ptr<scalar_t>() : nullptr;
    auto* uu = u.data_ptr<scalar_t>(); auto* pp = prev.data_ptr<scalar_t>();
    auto* ss = s.data_ptr<scalar_t>(); auto th = (scalar_t)theta;
    if (add2) { if (subtract) SNN_IF(true, false, true); else SNN_IF(false, false, true); }
    else if (subtract && is_static) SNN_IF(true, true, false);
    else if (subtract) SNN_IF(true, false, false);
    else if (is_static) SNN_IF(false, true, false);
    else SNN_IF(false, false, false);
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

// IF layer and the spiking max-pool that is its only consumer, plane by plane: the spikes
// are added to the IF's counts and the pool's cumulative counts as they are made, never
// stored. Parallel over channels, so the IF's batch sums need no atomics.
template <typename T, bool SUB, bool STATIC>
static void if_pool_impl(const T* x, T* u, T* prev, T* cum, T* pooled, T* out, double* steps, int64_t rows,
                         double* psteps, int64_t prows, int64_t k, int64_t B, int64_t C, const PoolGeom& g, T theta) {
  const int64_t HW = g.H * g.W, HWo = g.Ho * g.Wo, N = C * HW, No = C * HWo;
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    const int64_t r = steps && rows != 1 ? k : 1, pr = psteps && prows != 1 ? k : 1;
    std::vector<T> cnt(r * HW), pcnt(pr * HWo);  // batch sums of this channel (scratch rows if not asked)
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(cnt.begin(), cnt.end(), T(0));
      std::fill(pcnt.begin(), pcnt.end(), T(0));
      for (int64_t b = 0; b < B; ++b) {
        T* __restrict ub = u + b * N + c * HW;
        T* __restrict pb = prev + b * N + c * HW;
        T* __restrict cp = cum + b * N + c * HW;
        for (int64_t t = 0; t < k; ++t) {
          if_step_counted<T, SUB>(x + (STATIC ? b * N : (t * B + b) * N) + c * HW, ub, pb,
                                  cnt.data() + (r == 1 ? 0 : t * HW), cp, HW, theta);
          pool_max<T>(cp, pooled + b * No + c * HWo, out + (t * B + b) * No + c * HWo,
                      pcnt.data() + (pr == 1 ? 0 : t * HWo), g);
        }
      }
      if (steps) add_counts(steps, cnt.data(), r, HW, N, c * HW);
      if (psteps) add_counts(psteps, pcnt.data(), pr, HWo, No, c * HWo);
    }
  });
}

static PoolGeom pool_geom(const torch::Tensor& cum, const torch::Tensor& prev, const std::vector<int64_t>& kernel,
                          const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                          const std::vector<int64_t>& dilation) {
  return {cum.size(2), cum.size(3), prev.size(2), prev.size(3), kernel[0], kernel[1], stride[0], stride[1],
          padding[0], padding[1], dilation[0], dilation[1]};
}

#define SNN_IFP(SUB, ST) if_pool_impl<scalar_t, SUB, ST>(x, uu, pp, cp, po, o, st, rows, pst, prows, k, B, C, g, th)
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
    if (subtract && is_static) SNN_IFP(true, true);
    else if (subtract) SNN_IFP(true, false);
    else if (is_static) SNN_IFP(false, true);
    else SNN_IFP(false, false);
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
static inline int bit_width(int64_t v) { return v > 0 ? 64 - __builtin_clzll((unsigned long long)v) : 0; }

// Per sample: list the nonzero inputs (events), then add each event's weights (times its
// value, unless all events are 1) to the channel-last accumulators (Ho, Wo, CoP) of the
// outputs it reaches; finally write (Co, Ho, Wo) plus the bias. wr is (kh, Cin, kwl, CoP):
// with column dilation 1, kwl = sw * nj holds, for each phase r < sw, the nj = ceil(kw / sw)
// kernel columns e = r + j * sw in reverse order (zeros past kw): an event at column ix
// reaches the nj adjacent outputs of its phase (ix + pw) % sw, one contiguous add (stride 1:
// the kernel row reversed). With dilation > 1, kwl = kw (the row reversed), tap by tap.
// pl (or nullptr): a non-overlapping average pool in front of the convolution, {Kh, Kw, Sh,
// Sw, Ph, Pw, Hp, Wp}: an event at (iy, ix) is an event of the pooled map at ((iy + Ph) / Sh,
// (ix + Pw) / Sw), dropped outside every window or past the pooled map (wr holds W / (Kh Kw)).
template <typename T, bool BIN>
static void econv_scatter(const int32_t* __restrict ev, const T* __restrict xm, int64_t n, const T* __restrict wr,
                          T* __restrict acc, int64_t Cin, int64_t H, int64_t W, int64_t CoP, int64_t Ho, int64_t Wo,
                          int64_t kh, int64_t kwl, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                          int64_t dw, const int64_t* pl) {
  const int64_t row = kwl * CoP;  // one event's weights for one kernel row
  const int64_t nj = kwl / sw;
  const int hb = bit_width(H - 1), wb = bit_width(W - 1);
  for (int64_t q = 0; q < n; ++q) {
    const int64_t c = ev[q] >> (hb + wb), sy = (ev[q] >> wb) & ((1 << hb) - 1), sx = ev[q] & ((1 << wb) - 1);
    const T v = BIN ? T(1) : xm[(c * H + sy) * W + sx];
    int64_t iy = sy, ix = sx;
    if (pl) {
      const int64_t ty = sy + pl[4], tx = sx + pl[5];
      iy = ty / pl[2];
      ix = tx / pl[3];
      if (ty - iy * pl[2] >= pl[0] || tx - ix * pl[3] >= pl[1] || iy >= pl[6] || ix >= pl[7]) continue;
    }
    auto add_row = [&](int64_t a, int64_t oy) {
      const T* __restrict w = wr + (a * Cin + c) * row;
      if (dw == 1) {  // the row's taps of this event's phase reach nj adjacent outputs: one contiguous add
        const int64_t rx = (ix + pw) % sw, ox0 = (ix + pw - rx) / sw - (nj - 1);
        const int64_t i0 = std::max<int64_t>(0, -ox0) * CoP, i1 = std::min<int64_t>(nj, Wo - ox0) * CoP;
        const T* __restrict wp = w + rx * nj * CoP;
        T* __restrict o = acc + (oy * Wo + ox0) * CoP;
        if (BIN) for (int64_t i = i0; i < i1; ++i) o[i] += wp[i];
        else for (int64_t i = i0; i < i1; ++i) o[i] += v * wp[i];
        return;
      }
      for (int64_t e = 0; e < kwl; ++e) {
        int64_t ox = ix + pw - e * dw;
        if (ox < 0) break;
        if (sw != 1) { if (ox % sw) continue; ox /= sw; }
        if (ox >= Wo) continue;
        T* __restrict o = acc + (oy * Wo + ox) * CoP;
        const T* __restrict we = w + (kwl - 1 - e) * CoP;
        if (BIN) for (int64_t j = 0; j < CoP; ++j) o[j] += we[j];
        else for (int64_t j = 0; j < CoP; ++j) o[j] += v * we[j];
      }
    };
    if (dh == 1) {  // rows a = ry, ry + sh, ... of this event's phase reach outputs oy, oy - 1, ...
      const int64_t ry = (iy + ph) % sh;
      for (int64_t a = ry, oy = (iy + ph - ry) / sh; a < kh && oy >= 0; a += sh, --oy)
        if (oy < Ho) add_row(a, oy);
      continue;
    }
    for (int64_t a = 0; a < kh; ++a) {
      int64_t oy = iy + ph - a * dh;
      if (oy < 0) break;
      if (sh != 1) { if (oy % sh) continue; oy /= sh; }
      if (oy < Ho) add_row(a, oy);
    }
  }
}

// Appends the nonzero entries of one input row r[0..W) as packed events base + ix to ev
// (which needs 8 slots of slack); returns the new count and adds the entries equal to 1 to ones.
template <typename T>
static inline int64_t compact_row(const T* __restrict r, int64_t W, int32_t base, int32_t* __restrict ev, int64_t n,
                                  int64_t& ones) {
  int64_t ix = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {  // branch-free left-packing, 8 inputs at a time
    static const auto lut = [] {
      std::array<std::array<int32_t, 8>, 256> t{};
      for (int m = 0; m < 256; ++m) for (int j = 0, k = 0; j < 8; ++j) if (m >> j & 1) t[m][k++] = j;
      return t;
    }();
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    for (; ix + 8 <= W; ix += 8) {
      const __m256 v = _mm256_loadu_ps(r + ix);
      const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
      const int mo = _mm256_movemask_ps(_mm256_cmp_ps(v, one, _CMP_EQ_OQ));
      const __m256i e = _mm256_add_epi32(_mm256_set1_epi32(base + (int32_t)ix),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut[m].data())));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ev + n), e);
      n += __builtin_popcount(m);
      ones += __builtin_popcount(mo);
    }
  }
#endif
  for (; ix < W; ++ix) {
    const T v = r[ix];
    ev[n] = base + (int32_t)ix;
    n += v != T(0);
    ones += v == T(1);
  }
  return n;
}

template <typename T>
static void econv_impl(const T* x, const T* wt, const T* bias, T* y, int64_t M, int64_t Cin, int64_t H, int64_t W,
                       int64_t Co, int64_t CoP, int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh,
                       int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, const int64_t* pl) {
  at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
    const int64_t HW = H * W, HWo = Ho * Wo;
    const int hb = bit_width(H - 1), wb = bit_width(W - 1);
    std::vector<int32_t> ev(Cin * HW + 8);
    std::vector<T> acc(HWo * CoP);
    for (int64_t m = m0; m < m1; ++m) {
      const T* __restrict xm = x + m * Cin * HW;
      int64_t n = 0, ones = 0;
      for (int64_t c = 0; c < Cin; ++c)  // the nonzero inputs, packed as (c << (hb + wb)) | (y << wb) | x
        for (int64_t iy = 0; iy < H; ++iy)
          n = compact_row<T>(xm + (c * H + iy) * W, W, (int32_t)((c << (hb + wb)) | (iy << wb)), ev.data(), n, ones);
      std::fill(acc.begin(), acc.end(), T(0));
      if (ones == n) econv_scatter<T, true>(ev.data(), xm, n, wt, acc.data(), Cin, H, W, CoP, Ho, Wo, kh, kw, sh, sw,
                                            ph, pw, dh, dw, pl);
      else econv_scatter<T, false>(ev.data(), xm, n, wt, acc.data(), Cin, H, W, CoP, Ho, Wo, kh, kw, sh, sw, ph, pw,
                                   dh, dw, pl);
      T* __restrict ym = y + m * Co * HWo;
      for (int64_t co = 0; co < Co; ++co) {
        const T bc = bias ? bias[co] : T(0);
        for (int64_t o = 0; o < HWo; ++o) ym[co * HWo + o] = acc[o * CoP + co] + bc;
      }
    }
  });
}

double sampled_nonzeros(torch::Tensor x, int64_t every) {
  TORCH_CHECK(x.is_contiguous() && x.dim() >= 1 && every >= 1, "sampled_nonzeros: contiguous tensor");
  const int64_t M = x.size(0), per = M ? x.numel() / M : 0;
  int64_t nz = 0, seen = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sampled_nonzeros", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    for (int64_t m = 0; m < M; m += every, ++seen)
      for (int64_t i = 0; i < per; ++i) nz += p[m * per + i] != scalar_t(0);
  });
  return seen ? (double)nz / (double)seen : 0.0;
}

static torch::Tensor econv(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co, int64_t Ho,
                           int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                           std::vector<int64_t> dilation, const int64_t* pl) {
  TORCH_CHECK(x.dim() == 4 && wt.dim() == 4 && x.is_contiguous() && wt.is_contiguous(), "event_conv2d: layout");
  int64_t M = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  int64_t kh = wt.size(0), kw = wt.size(2), CoP = wt.size(3);
  TORCH_CHECK(wt.size(1) == Cin && CoP >= Co && (dilation[1] != 1 || kw % stride[1] == 0),
              "event_conv2d: weight shape");
  TORCH_CHECK(bit_width(Cin - 1) + bit_width(H - 1) + bit_width(W - 1) <= 31,
              "event_conv2d: an input event (channel, y, x) must pack into 31 bits");
  auto y = torch::empty({M, Co, Ho, Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "event_conv2d", [&] {
    const scalar_t* b = bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr;
    econv_impl<scalar_t>(x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>(), M, Cin, H, W, Co,
                         CoP, Ho, Wo, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                         pl);
  });
  return y;
}

torch::Tensor event_conv2d(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                           int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                           std::vector<int64_t> dilation) {
  return econv(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, nullptr);
}

torch::Tensor event_pool_conv2d(torch::Tensor x, torch::Tensor wt, c10::optional<torch::Tensor> bias, int64_t Co,
                                int64_t Ho, int64_t Wo, std::vector<int64_t> stride, std::vector<int64_t> padding,
                                std::vector<int64_t> dilation, std::vector<int64_t> pool) {
  TORCH_CHECK(pool.size() == 8 && pool[0] <= pool[2] && pool[1] <= pool[3] && pool[0] > 0 && pool[1] > 0,
              "event_pool_conv2d: pool is {Kh, Kw, Sh, Sw, Ph, Pw, Hp, Wp} with K <= S");
  return econv(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, pool.data());
}

// ------------------------------------------------------------------ bindings
// (wrap_pybind_function: a TORCH_CHECK failure is a Python RuntimeError with its message)
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("if_scan", torch::wrap_pybind_function(if_scan), "IF layer over k steps (see kernels.py)");
  m.def("spike_maxpool", torch::wrap_pybind_function(spike_maxpool), "cumulative-count max-pooling of spikes");
  m.def("if_maxpool", torch::wrap_pybind_function(if_maxpool),
        "IF layer and the spiking max-pool that alone reads it, fused");
  m.def("sampled_nonzeros", torch::wrap_pybind_function(sampled_nonzeros),
        "mean nonzeros per sample over every n-th sample");
  m.def("event_conv2d", torch::wrap_pybind_function(event_conv2d), "event-driven conv2d (a Linear layer is a 1x1 one)");
  m.def("event_pool_conv2d", torch::wrap_pybind_function(event_pool_conv2d),
        "event-driven conv2d of a non-overlapping average pool of x, on the events of x");
}
