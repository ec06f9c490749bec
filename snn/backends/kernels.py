"""Fused CPU kernels for the snntorch backend (C++, compiled once with
``torch.utils.cpp_extension.load_inline`` and cached under ``$SNN_CACHE`` or
``~/.cache/snn/torch_extensions``).

Both kernels compute exactly what the reference torch ops in
:mod:`snn.backends.snntorch` compute (same float operations in the same order, so the
spikes are bit-identical; tests check it), in one pass over memory instead of several:

``if_scan(I, u, prev, theta, subtract, static, steps)``
    IF layer over ``k`` steps. ``I`` is (k, B, N) or, if ``static``, (B, N); ``u`` and
    ``prev`` (B, N) are the membrane and the previous spikes, updated in place. Per
    element and step (snntorch's association)::

        zero reset:  u = u * (1 - prev)
        u = u + I[t]
        subtract:    u = u - theta * prev
        s[t] = u > theta;  prev = s[t]

    Returns the spikes (k, B, N). If ``steps`` (k, N) float64 is given, adds the spikes
    summed over the batch to it; a (1, N) ``steps`` receives the sum over all k steps.

``spike_maxpool(s, cum, prev, kernel, stride, padding, dilation, steps)``
    Cumulative-count max-pooling of spikes ``s`` (k, B, C, H, W): ``cum`` (B, C, H, W)
    += s[t]; ``m`` = max of ``cum`` over each window (padding never wins);
    ``out[t] = m - prev``; ``prev = m`` (B, C, Ho, Wo). Returns ``out`` (k, B, C, Ho, Wo).

Parallel over neurons (IF) or channels (pooling) with ATen's thread pool, so the
per-step batch sums need no atomics.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <vector>

template <typename T, bool SUB, bool STATIC>
static void if_scan_impl(const T* __restrict I, T* __restrict u, T* __restrict prev, T* __restrict s,
                         double* steps, int64_t rows, int64_t k, int64_t B, int64_t N, T theta) {
  at::parallel_for(0, N, 512, [&](int64_t n0, int64_t n1) {
    const int64_t len = n1 - n0;
    std::vector<T> cnt(steps ? k * len : 0, T(0));  // per-step batch sums for this slice
    for (int64_t b = 0; b < B; ++b) {
      T* __restrict ub = u + b * N + n0;
      T* __restrict pb = prev + b * N + n0;
      for (int64_t t = 0; t < k; ++t) {
        const T* __restrict It = (STATIC ? I + b * N : I + (t * B + b) * N) + n0;
        T* __restrict st = s + (t * B + b) * N + n0;
        for (int64_t n = 0; n < len; ++n) {
          T v = ub[n];
          if (!SUB) v = v * (T(1) - pb[n]);
          v = v + It[n];
          if (SUB) v = v - theta * pb[n];
          T spk = v > theta ? T(1) : T(0);
          ub[n] = v;
          pb[n] = spk;
          st[n] = spk;
        }
        if (steps) {
          T* __restrict c = cnt.data() + t * len;
          for (int64_t n = 0; n < len; ++n) c[n] += st[n];
        }
      }
    }
    if (steps)
      for (int64_t t = 0; t < k; ++t)
        for (int64_t n = 0; n < len; ++n) steps[(rows == 1 ? 0 : t) * N + n0 + n] += (double)cnt[t * len + n];
  });
}

torch::Tensor if_scan(torch::Tensor I, torch::Tensor u, torch::Tensor prev, double theta, bool subtract,
                      bool is_static, int64_t k, c10::optional<torch::Tensor> steps) {
  TORCH_CHECK(I.is_contiguous() && u.is_contiguous() && prev.is_contiguous(), "if_scan: contiguous tensors");
  int64_t B = u.size(0), N = u.numel() / B;
  std::vector<int64_t> shape = {k};
  for (auto d : u.sizes()) shape.push_back(d);
  auto s = torch::empty(shape, u.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!steps.has_value() || rows == 1 || rows == k, "if_scan: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "if_scan", [&] {
    auto* i = I.data_ptr<scalar_t>(); auto* uu = u.data_ptr<scalar_t>(); auto* pp = prev.data_ptr<scalar_t>();
    auto* ss = s.data_ptr<scalar_t>(); auto th = (scalar_t)theta;
    if (subtract && is_static) if_scan_impl<scalar_t, true, true>(i, uu, pp, ss, st, rows, k, B, N, th);
    else if (subtract) if_scan_impl<scalar_t, true, false>(i, uu, pp, ss, st, rows, k, B, N, th);
    else if (is_static) if_scan_impl<scalar_t, false, true>(i, uu, pp, ss, st, rows, k, B, N, th);
    else if_scan_impl<scalar_t, false, false>(i, uu, pp, ss, st, rows, k, B, N, th);
  });
  return s;
}

template <typename T>
static void maxpool_impl(const T* s, T* cum, T* prev, T* out, double* steps, int64_t rows, int64_t k, int64_t B, int64_t C,
                         int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  const bool fast2x2 = kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1;
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t b = 0; b < B; ++b) {
        T* cp = cum + (b * C + c) * H * W;
        T* pp = prev + (b * C + c) * Ho * Wo;
        for (int64_t t = 0; t < k; ++t) {
          const T* sp = s + ((t * B + b) * C + c) * H * W;
          for (int64_t i = 0; i < H * W; ++i) cp[i] += sp[i];
          T* op = out + ((t * B + b) * C + c) * Ho * Wo;
          double* ct = steps ? steps + ((rows == 1 ? 0 : t) * C + c) * Ho * Wo : nullptr;
          if (fast2x2) {  // kernel 2, stride 2, no padding, no dilation: no bounds checks
            for (int64_t oy = 0; oy < Ho; ++oy) {
              const T* r0 = cp + 2 * oy * W;
              const T* r1 = r0 + W;
              for (int64_t ox = 0; ox < Wo; ++ox) {
                T m = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
                int64_t o = oy * Wo + ox;
                T d = m - pp[o];
                pp[o] = m;
                op[o] = d;
                if (ct) ct[o] += (double)d;
              }
            }
            continue;
          }
          for (int64_t oy = 0; oy < Ho; ++oy) {
            for (int64_t ox = 0; ox < Wo; ++ox) {
              T m = -std::numeric_limits<T>::infinity();
              for (int64_t a = 0; a < kh; ++a) {
                int64_t y = oy * sh - ph + a * dh;
                if (y < 0 || y >= H) continue;
                for (int64_t e = 0; e < kw; ++e) {
                  int64_t x = ox * sw - pw + e * dw;
                  if (x < 0 || x >= W) continue;
                  T v = cp[y * W + x];
                  if (v > m) m = v;
                }
              }
              int64_t o = oy * Wo + ox;
              T d = m - pp[o];
              pp[o] = m;
              op[o] = d;
              if (ct) ct[o] += (double)d;
            }
          }
        }
      }
    }
  });
}

torch::Tensor spike_maxpool(torch::Tensor s, torch::Tensor cum, torch::Tensor prev, std::vector<int64_t> kernel,
                            std::vector<int64_t> stride, std::vector<int64_t> padding,
                            std::vector<int64_t> dilation, c10::optional<torch::Tensor> steps) {
  TORCH_CHECK(s.is_contiguous() && cum.is_contiguous() && prev.is_contiguous(), "spike_maxpool: contiguous");
  int64_t k = s.size(0), B = s.size(1), C = s.size(2), H = s.size(3), W = s.size(4);
  int64_t Ho = prev.size(2), Wo = prev.size(3);
  auto out = torch::empty({k, B, C, Ho, Wo}, s.options());
  double* st = steps.has_value() ? steps->data_ptr<double>() : nullptr;
  int64_t rows = steps.has_value() ? steps->size(0) : 0;
  TORCH_CHECK(!steps.has_value() || rows == 1 || rows == k, "spike_maxpool: steps must have 1 or k rows");
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "spike_maxpool", [&] {
    maxpool_impl<scalar_t>(s.data_ptr<scalar_t>(), cum.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(),
                           out.data_ptr<scalar_t>(), st, rows, k, B, C, H, W, Ho, Wo, kernel[0], kernel[1],
                           stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]);
  });
  return out;
}
"""

_module = None
_failed: str | None = None


def _build_dir() -> Path:
    base = Path(os.environ.get("SNN_CACHE", Path.home() / ".cache" / "snn"))
    d = base / "torch_extensions" / f"torch{torch.__version__.split('+')[0]}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load():
    """The compiled extension, or None (with one warning) if it cannot be built here."""
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    try:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(
            name="snn_kernels_v3", cpp_sources=_SOURCE, functions=["if_scan", "spike_maxpool"],
            extra_cflags=["-O3"], build_directory=str(_build_dir()), verbose=False)
    except Exception as e:  # no compiler, no ninja, ...
        _failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"snn: fused CPU kernels unavailable ({_failed}); the snntorch backend uses its "
                      "torch reference ops (same results, slower). Install a C++ compiler and ninja to enable them.")
    return _module
