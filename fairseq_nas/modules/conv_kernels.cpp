// CPU kernels for the elastic lightweight and dynamic convolutions over T x B x C memory.
//
// Channel c belongs to head c mod H (the layout that keeps a narrow subnet an exact slice of a
// wide one). In PyTorch that layout costs two strided transposes around every batched matmul;
// here the convolution runs on the memory as it is: each output row (t, b) is the sum over the
// kernel taps of a weight row times an input row, vectorised over the channels. Channels are
// taken in blocks of 64 (then 16, then 8) whose accumulators stay in registers. A block starting
// at a multiple of its width whose width H divides has channel c0 + l in head l mod H, so when H
// divides 16 a tap's weights are one 16-wide vector for every block (when H divides only 64, a
// 64-wide one; otherwise the weight row is expanded over all C). Kernel gradients hold each
// block of the output gradient in registers while every tap reads its input row once.
//
// x, g, out: T x B x C. Lightweight kernels w: H x K. Dynamic kernels w: T x B x H x K. Tap i of
// output step t reads input step t + i - p (zero outside 0 .. T-1).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;

// Width of an expanded weight row: kPattern (one vector per tap) when H divides it, kBlock when
// every block sees the same head pattern, else all C channels.
constexpr int64_t kPattern = 16;
int64_t pattern_width(int64_t C, int64_t H) {
  if (kPattern % H == 0) return kPattern;
  return kBlock % H == 0 ? kBlock : C;
}

// dst[i * L + l] = w[(l mod H) * K + i] for taps i < K, l < L (w: one H x K kernel set; L is a
// multiple of H). No integer division in the loop: it runs once per output row.
template <typename S, int64_t kH>
void expand_pattern(const S* w, int64_t K, S* dst) {  // L = kPattern, H = kH known here
  for (int64_t i = 0; i < K; ++i) {
    S v[kH];
    for (int64_t h = 0; h < kH; ++h) v[h] = w[h * K + i];
    for (int64_t l = 0; l < kPattern; ++l) dst[i * kPattern + l] = v[l % kH];
  }
}

template <typename S>
void expand(const S* w, int64_t H, int64_t K, int64_t L, S* dst) {
  if (L == kPattern) {  // the common head counts, with the pattern built from registers
    switch (H) {
      case 1: return expand_pattern<S, 1>(w, K, dst);
      case 2: return expand_pattern<S, 2>(w, K, dst);
      case 4: return expand_pattern<S, 4>(w, K, dst);
      case 8: return expand_pattern<S, 8>(w, K, dst);
      case 16: return expand_pattern<S, 16>(w, K, dst);
      default: break;
    }
  }
  for (int64_t i = 0; i < K; ++i)
    for (int64_t l0 = 0; l0 < L; l0 += H)
      for (int64_t h = 0; h < H; ++h) dst[i * L + l0 + h] = w[h * K + i];
}

// Taps i with 0 <= t + i - p < T.
inline void valid_taps(int64_t t, int64_t T, int64_t K, int64_t p, int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, p - t);
  *hi = std::min<int64_t>(K, T + p - t);
}

// One block of NB channels: acc = sum_i (tap i's weights) * x rows. Tap i's weights for the block
// start at wrow + i * L + off and repeat every P lanes (P = kPattern: one head-pattern vector
// over a kBlock block; P = NB: NB weights in a row).
template <typename S, int64_t NB, int64_t P>
inline void conv_block(const S* xb, int64_t stride_t, const S* wrow, int64_t L, int64_t off, int64_t lo,
                       int64_t hi, S* o) {
  S acc[NB];
  for (int64_t l = 0; l < NB; ++l) acc[l] = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const S* xr = xb + i * stride_t;
    const S* wr = wrow + i * L + off;
    for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
      for (int64_t l = 0; l < P; ++l) acc[j + l] += wr[l] * xr[j + l];
  }
  for (int64_t l = 0; l < NB; ++l) o[l] = acc[l];
}

// Channels are taken in blocks of kBlock, then of kPattern, then of 8 (so every C that is a
// multiple of 8 is vectorised throughout), then one by one. Each narrower block starts at a
// multiple of its width, so its weights are a contiguous run of the expanded row at c0 mod L
// (L = kPattern, kBlock or C: each a multiple of H, and of the narrower widths where it is not C).
inline int64_t vector_channels(int64_t C) { return C / 8 * 8; }

// out row (t, b) = sum_i wrow[i] * x row (t + i - p, b); wrow: K x L expanded weights, w_heads the
// H x K kernels they came from (for the last C mod 8 channels).
template <typename S>
void conv_row(const S* x, const S* wrow, S* o, int64_t t, int64_t b, int64_t T, int64_t B, int64_t C,
              int64_t H, int64_t K, int64_t L, int64_t p, const S* w_heads) {
  int64_t lo, hi;
  valid_taps(t, T, K, p, &lo, &hi);
  const int64_t stride_t = B * C;
  const S* xb = x + b * C + (t - p) * stride_t;  // tap i: xb + i * stride_t
  int64_t c0 = 0;
  for (; c0 + kBlock <= C; c0 += kBlock) {
    if (L == kPattern)
      conv_block<S, kBlock, kPattern>(xb + c0, stride_t, wrow, L, 0, lo, hi, o + c0);
    else
      conv_block<S, kBlock, kBlock>(xb + c0, stride_t, wrow, L, c0 % L, lo, hi, o + c0);
  }
  for (; c0 + kPattern <= C; c0 += kPattern)
    conv_block<S, kPattern, kPattern>(xb + c0, stride_t, wrow, L, c0 % L, lo, hi, o + c0);
  for (; c0 + 8 <= C; c0 += 8) conv_block<S, 8, 8>(xb + c0, stride_t, wrow, L, c0 % L, lo, hi, o + c0);
  for (int64_t c = c0; c < C; ++c) {  // the last C mod 8 channels
    S a = 0;
    for (int64_t i = lo; i < hi; ++i) a += w_heads[(c % H) * K + i] * xb[i * stride_t + c];
    o[c] = a;
  }
}

// Two consecutive output rows t and t + 1 of one sentence, H dividing kPattern: each input row is
// loaded once for both (row t reads it at tap i, row t + 1 at tap i - 1). wrow0 / wrow1: the
// rows' K x kPattern expanded weights, off the block's lane offset in them; NB and P as in
// conv_block.
template <typename S, int64_t NB, int64_t P>
inline void conv_block_pair(const S* xb, int64_t stride_t, const S* wrow0, const S* wrow1, int64_t off,
                            int64_t lo0, int64_t hi0, int64_t lo1, int64_t hi1, S* o0, S* o1) {
  S acc0[NB], acc1[NB];
  for (int64_t l = 0; l < NB; ++l) acc0[l] = acc1[l] = 0;
  // i: row t's tap; input row t + i - p; row t + 1 uses it as tap i - 1
  const int64_t first = std::min(lo0, lo1 + 1), last = std::max(hi0, hi1 + 1);
  for (int64_t i = first; i < last; ++i) {
    const S* xr = xb + i * stride_t;
    const bool use0 = i >= lo0 && i < hi0, use1 = i - 1 >= lo1 && i - 1 < hi1;
    const S* w0 = wrow0 + i * kPattern + off;
    const S* w1 = wrow1 + (i - 1) * kPattern + off;
    if (use0 && use1) {
      for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
        for (int64_t l = 0; l < P; ++l) {
          acc0[j + l] += w0[l] * xr[j + l];
          acc1[j + l] += w1[l] * xr[j + l];
        }
    } else if (use0) {
      for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
        for (int64_t l = 0; l < P; ++l) acc0[j + l] += w0[l] * xr[j + l];
    } else if (use1) {
      for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
        for (int64_t l = 0; l < P; ++l) acc1[j + l] += w1[l] * xr[j + l];
    }
  }
  for (int64_t l = 0; l < NB; ++l) o0[l] = acc0[l];
  for (int64_t l = 0; l < NB; ++l) o1[l] = acc1[l];
}

// Rows t and t + 1 of sentence b (t + 1 < T) when L == kPattern: blocks as in conv_row, in pairs,
// then the last C mod 8 channels of each row one by one.
template <typename S>
void conv_row_pair(const S* x, const S* wrow0, const S* wrow1, S* o0, S* o1, int64_t t, int64_t b, int64_t T,
                   int64_t B, int64_t C, int64_t H, int64_t K, int64_t p, const S* wk0, const S* wk1) {
  int64_t lo0, hi0, lo1, hi1;
  valid_taps(t, T, K, p, &lo0, &hi0);
  valid_taps(t + 1, T, K, p, &lo1, &hi1);
  const int64_t stride_t = B * C;
  const S* xb = x + b * C + (t - p) * stride_t;  // row t's tap i: xb + i * stride_t
  int64_t c0 = 0;
  for (; c0 + kBlock <= C; c0 += kBlock)
    conv_block_pair<S, kBlock, kPattern>(xb + c0, stride_t, wrow0, wrow1, 0, lo0, hi0, lo1, hi1, o0 + c0, o1 + c0);
  for (; c0 + kPattern <= C; c0 += kPattern)
    conv_block_pair<S, kPattern, kPattern>(xb + c0, stride_t, wrow0, wrow1, 0, lo0, hi0, lo1, hi1, o0 + c0,
                                           o1 + c0);
  for (; c0 + 8 <= C; c0 += 8)
    conv_block_pair<S, 8, 8>(xb + c0, stride_t, wrow0, wrow1, c0 % kPattern, lo0, hi0, lo1, hi1, o0 + c0, o1 + c0);
  for (int64_t c = c0; c < C; ++c) {
    S a0 = 0, a1 = 0;
    for (int64_t i = lo0; i < hi0; ++i) a0 += wk0[(c % H) * K + i] * xb[i * stride_t + c];
    for (int64_t i = lo1; i < hi1; ++i) a1 += wk1[(c % H) * K + i] * xb[(i + 1) * stride_t + c];
    o0[c] = a0;
    o1[c] = a1;
  }
}

template <typename S>
void lightweight_forward_impl(const S* x, const S* w, S* out, int64_t T, int64_t B, int64_t C, int64_t H,
                              int64_t K, int64_t p) {
  const int64_t L = pattern_width(C, H);
  std::vector<S> wrow(K * L);
  expand(w, H, K, L, wrow.data());
  // Sentence-major order: consecutive rows of one sentence reuse K - 1 of their K input rows
  // from cache (step-major order would sweep K slices of the whole batch per step).
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      if (L == kPattern && bt + 1 < end && t + 1 < T) {  // rows t and t + 1 together
        conv_row_pair(x, wrow.data(), wrow.data(), out + (t * B + b) * C, out + ((t + 1) * B + b) * C, t, b, T, B,
                      C, H, K, p, w, w);
        ++bt;
        continue;
      }
      conv_row(x, wrow.data(), out + (t * B + b) * C, t, b, T, B, C, H, K, L, p, w);
    }
  });
}

// gxr[l] += weights[l] * gr[l] over one block (the weights as in conv_block).
template <typename S, int64_t kL>
inline void scatter_block(S* gxr, const S* gr, const S* wr) {
  if constexpr (kL > 0) {
    for (int64_t j = 0; j < kBlock; j += kL)
#pragma omp simd
      for (int64_t l = 0; l < kL; ++l) gxr[j + l] += wr[l] * gr[j + l];
  } else {
#pragma omp simd
    for (int64_t l = 0; l < kBlock; ++l) gxr[l] += wr[l] * gr[l];
  }
}

// d[l] += gr[l] * xr[l] over one block: per-lane partial dot products (kBlock lanes, so that
// kBlock / vector width independent accumulators hide the multiply-add latency).
template <typename S>
inline void dot_block(S* d, const S* gr, const S* xr) {
#pragma omp simd
  for (int64_t l = 0; l < kBlock; ++l) d[l] += gr[l] * xr[l];
}

// gw[h * K] += the sum of lanes l = h mod kH of a kPattern-wide head pattern (kH divides kPattern).
template <typename S, int64_t kH>
inline void fold_pattern(const S* lanes, S* gw, int64_t K) {
  S v[kH];
  for (int64_t h = 0; h < kH; ++h) v[h] = lanes[h];
  for (int64_t j = kH; j < kPattern; j += kH)
    for (int64_t h = 0; h < kH; ++h) v[h] += lanes[j + h];
  for (int64_t h = 0; h < kH; ++h) gw[h * K] += v[h];
}

// gw[h * K] += the sum of lanes l < n with l mod H = h (n a multiple of H, or C's whole blocks).
template <typename S>
inline void fold_lanes(const S* lanes, int64_t n, int64_t H, S* gw, int64_t K) {
  if (n == kPattern) {
    switch (H) {
      case 1: return fold_pattern<S, 1>(lanes, gw, K);
      case 2: return fold_pattern<S, 2>(lanes, gw, K);
      case 4: return fold_pattern<S, 4>(lanes, gw, K);
      case 8: return fold_pattern<S, 8>(lanes, gw, K);
      case 16: return fold_pattern<S, 16>(lanes, gw, K);
      default: break;
    }
  }
  for (int64_t l0 = 0; l0 < n; l0 += H)
    for (int64_t h = 0; h < H && l0 + h < n; ++h) gw[h * K] += lanes[l0 + h];
}

// Lanes of the partial dot products: kBlock when every block sees one head pattern, else C.
int64_t dot_width(int64_t C, int64_t H) { return kBlock % H == 0 ? kBlock : C; }

// One block of NB channels of accumulate_tap_sums, its lanes at offset off of each tap's pattern.
template <typename S, int64_t NB, int64_t P>
inline void tap_sums_block(const S* gr, const S* xb, int64_t stride_t, int64_t lo, int64_t hi, int64_t off,
                           S* taps) {
  S gv[NB];
  for (int64_t l = 0; l < NB; ++l) gv[l] = gr[l];
  for (int64_t i = lo; i < hi; ++i) {
    const S* xr = xb + i * stride_t;
    S* ts = taps + i * kPattern + off;
    S v[P];
    for (int64_t l = 0; l < P; ++l) v[l] = ts[l];
    for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
      for (int64_t l = 0; l < P; ++l) v[l] += gv[j + l] * xr[j + l];
    for (int64_t l = 0; l < P; ++l) ts[l] = v[l];
  }
}

// taps[i * kPattern + l] += the products of output-gradient row gr with input row xb + i * stride_t,
// lane l of each kPattern-wide group (so lane l holds channels of head l mod H when H divides
// kPattern), over the first vector_channels(C) channels (blocks as in conv_row). Each block of gr
// stays in registers while every tap reads its input row once.
template <typename S>
void accumulate_tap_sums(const S* gr, const S* xb, int64_t stride_t, int64_t C, int64_t lo, int64_t hi, S* taps) {
  int64_t c0 = 0;
  for (; c0 + kBlock <= C; c0 += kBlock)
    tap_sums_block<S, kBlock, kPattern>(gr + c0, xb + c0, stride_t, lo, hi, 0, taps);
  for (; c0 + kPattern <= C; c0 += kPattern)
    tap_sums_block<S, kPattern, kPattern>(gr + c0, xb + c0, stride_t, lo, hi, 0, taps);
  for (; c0 + 8 <= C; c0 += 8) tap_sums_block<S, 8, 8>(gr + c0, xb + c0, stride_t, lo, hi, c0 % kPattern, taps);
}

// grad_w[h, i] = sum over t, b and channels c of head h of g[t, b, c] * x[t + i - p, b, c]. Each
// worker sums its sentences into K x L per-lane partial sums (L as for the expanded weights: lane
// l holds channels of head l mod H), folded into heads at the end.
template <typename S>
void lightweight_weight_grad_impl(const S* x, const S* g, S* grad_w, int64_t T, int64_t B, int64_t C,
                                  int64_t H, int64_t K, int64_t p) {
  // lanes per tap: one kPattern-wide head pattern when H divides kPattern, else dot_width's
  const bool pattern = kPattern % H == 0;
  const int64_t L = pattern ? kPattern : dot_width(C, H);
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
  std::vector<S> lanes(workers * K * L, 0), tails(workers * H * K, 0);
  const int64_t stride_t = B * C;
  // channels in vector blocks (the rest one by one, into `tails`)
  const int64_t full = pattern ? vector_channels(C) : C / kBlock * kBlock;
  at::parallel_for(0, workers, 1, [&](int64_t wb, int64_t we) {
    for (int64_t worker = wb; worker < we; ++worker) {
      S* acc = lanes.data() + worker * K * L;
      S* tail = tails.data() + worker * H * K;
      for (int64_t b = B * worker / workers; b < B * (worker + 1) / workers; ++b) {
        for (int64_t t = 0; t < T; ++t) {
          int64_t lo, hi;
          valid_taps(t, T, K, p, &lo, &hi);
          const S* gr = g + (t * B + b) * C;
          const S* xb = x + b * C + (t - p) * stride_t;
          if (pattern) {
            accumulate_tap_sums(gr, xb, stride_t, C, lo, hi, acc);
            for (int64_t i = lo; i < hi; ++i)
              for (int64_t c = full; c < C; ++c) tail[(c % H) * K + i] += gr[c] * xb[i * stride_t + c];
            continue;
          }
          for (int64_t i = lo; i < hi; ++i) {
            const S* xr = xb + i * stride_t;
            if (L == kBlock && full > 0) {  // add the blocks in registers, then once into memory
              S sum[kBlock];
              for (int64_t l = 0; l < kBlock; ++l) sum[l] = 0;
              for (int64_t c0 = 0; c0 < full; c0 += kBlock)
#pragma omp simd
                for (int64_t l = 0; l < kBlock; ++l) sum[l] += gr[c0 + l] * xr[c0 + l];
              S* a = acc + i * L;
#pragma omp simd
              for (int64_t l = 0; l < kBlock; ++l) a[l] += sum[l];
            } else {
              for (int64_t c0 = 0; c0 < full; c0 += kBlock) dot_block(acc + i * L + c0, gr + c0, xr + c0);
            }
            for (int64_t c = full; c < C; ++c) tail[(c % H) * K + i] += gr[c] * xr[c];
          }
        }
      }
    }
  });
  const int64_t n = std::min(L, full);
  for (int64_t m = 0; m < H * K; ++m) grad_w[m] = 0;
  for (int64_t worker = 0; worker < workers; ++worker) {
    for (int64_t i = 0; i < K; ++i) {
      const S* acc = lanes.data() + (worker * K + i) * L;
      for (int64_t l = 0; l < n; ++l) grad_w[(l % H) * K + i] += acc[l];
    }
    for (int64_t m = 0; m < H * K; ++m) grad_w[m] += tails[worker * H * K + m];
  }
}

template <typename S>
void dynamic_forward_impl(const S* x, const S* w, S* out, int64_t T, int64_t B, int64_t C, int64_t H,
                          int64_t K, int64_t p) {
  const int64_t L = pattern_width(C, H);
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {  // sentence-major, as above
    std::vector<S> wrow(K * L), wrow1(K * L);
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      const S* wk = w + (t * B + b) * H * K;
      expand(wk, H, K, L, wrow.data());
      if (L == kPattern && bt + 1 < end && t + 1 < T) {  // rows t and t + 1 together
        const S* wk1 = w + ((t + 1) * B + b) * H * K;
        expand(wk1, H, K, L, wrow1.data());
        conv_row_pair(x, wrow.data(), wrow1.data(), out + (t * B + b) * C, out + ((t + 1) * B + b) * C, t, b, T, B,
                      C, H, K, p, wk, wk1);
        ++bt;
        continue;
      }
      conv_row(x, wrow.data(), out + (t * B + b) * C, t, b, T, B, C, H, K, L, p, wk);
    }
  });
}

// One block of NB channels of an input-gradient row: sum over taps i of the pattern of output row
// s + p - i at tap i times that row's gradient. gb, pb: output-gradient row and patterns of step
// s + p (tap i: gb - i * stride_t, pb + i * (1 - K) * kPattern, i.e. row s + p - i, tap i).
template <typename S, int64_t NB, int64_t P>
inline void gather_block(const S* gb, const S* pb, int64_t stride_t, int64_t K, int64_t lo, int64_t hi, int64_t off,
                         S* o) {
  S acc[NB];
  for (int64_t l = 0; l < NB; ++l) acc[l] = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const S* wr = pb - i * K * kPattern + i * kPattern + off;
    const S* gr = gb - i * stride_t;
    for (int64_t j = 0; j < NB; j += P)
#pragma omp simd
      for (int64_t l = 0; l < P; ++l) acc[j + l] += wr[l] * gr[j + l];
  }
  for (int64_t l = 0; l < NB; ++l) o[l] = acc[l];
}

// grad_x of one sentence b when L == kPattern, gathered into register accumulators: input row s
// collects, from each output row t = s + p - i that read it at tap i, w[t, b, :, i] * g[t, b]. The
// sentence's expanded kernels (T x K x kPattern) are built once into `pats`.
template <typename S>
void dynamic_input_grad_gather(const S* w, const S* g, S* grad_x, int64_t b, int64_t T, int64_t B, int64_t C,
                               int64_t H, int64_t K, int64_t p, std::vector<S>& pats) {
  const int64_t stride_t = B * C;
  pats.resize(T * K * kPattern);
  for (int64_t t = 0; t < T; ++t) expand(w + (t * B + b) * H * K, H, K, kPattern, pats.data() + t * K * kPattern);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t lo = std::max<int64_t>(0, s + p - T + 1), hi = std::min<int64_t>(K, s + p + 1);
    S* o = grad_x + (s * B + b) * C;
    const S* gb = g + b * C + (s + p) * stride_t;  // tap i reads output row s + p - i
    const S* pb = pats.data() + (s + p) * K * kPattern;
    int64_t c0 = 0;
    for (; c0 + kBlock <= C; c0 += kBlock)
      gather_block<S, kBlock, kPattern>(gb + c0, pb, stride_t, K, lo, hi, 0, o + c0);
    for (; c0 + kPattern <= C; c0 += kPattern)
      gather_block<S, kPattern, kPattern>(gb + c0, pb, stride_t, K, lo, hi, 0, o + c0);
    for (; c0 + 8 <= C; c0 += 8) gather_block<S, 8, 8>(gb + c0, pb, stride_t, K, lo, hi, c0 % kPattern, o + c0);
    for (int64_t c = c0; c < C; ++c) {
      S a = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t t = s + p - i;
        a += w[(t * B + b) * H * K + (c % H) * K + i] * g[t * stride_t + b * C + c];
      }
      o[c] = a;
    }
  }
}

// grad_x[s, b, c] = sum_i w[s - i + p, b, c mod H, i] * g[s - i + p, b, c] (gathered per input row
// when L == kPattern, else scattered from each output row into the input rows it read);
// grad_w[t, b, h, i] = sum over channels c of head h of g[t, b, c] * x[t + i - p, b, c]. Sentences
// are independent, so workers split them.
template <typename S>
void dynamic_backward_impl(const S* x, const S* w, const S* g, S* grad_x, S* grad_w, int64_t T, int64_t B,
                           int64_t C, int64_t H, int64_t K, int64_t p) {
  const int64_t L = pattern_width(C, H), D = dot_width(C, H);
  const int64_t stride_t = B * C;
  at::parallel_for(0, B, 1, [&](int64_t b_begin, int64_t b_end) {
    std::vector<S> wrow(K * L), dots(D), pats, taps;
    const bool gather = grad_x != nullptr && L == kPattern;
    const bool tap_sums = grad_w != nullptr && L == kPattern;
    for (int64_t b = b_begin; b < b_end; ++b) {
      if (gather) dynamic_input_grad_gather(w, g, grad_x, b, T, B, C, H, K, p, pats);
      for (int64_t t = 0; t < T; ++t) {
        int64_t lo, hi;
        valid_taps(t, T, K, p, &lo, &hi);
        const int64_t tb = t * B + b;
        const S* wk = w + tb * H * K;
        const S* gr = g + tb * C;
        const S* xb = x + b * C + (t - p) * stride_t;
        S* gxb = grad_x == nullptr || gather ? nullptr : grad_x + b * C + (t - p) * stride_t;
        S* gw = grad_w == nullptr ? nullptr : grad_w + tb * H * K;
        if (tap_sums) {  // the kernel gradient with the row's output gradient held in registers
          taps.assign(K * kPattern, 0);
          accumulate_tap_sums(gr, xb, stride_t, C, lo, hi, taps.data());
          const int64_t full = vector_channels(C);
          for (int64_t i = lo; i < hi; ++i) {
            fold_lanes(taps.data() + i * kPattern, full > 0 ? kPattern : 0, H, gw + i, K);
            for (int64_t c = full; c < C; ++c) gw[(c % H) * K + i] += gr[c] * xb[i * stride_t + c];
          }
          gw = nullptr;  // done
        }
        if (gxb == nullptr && gw == nullptr) continue;
        if (gxb != nullptr) expand(wk, H, K, L, wrow.data());
        for (int64_t i = lo; i < hi; ++i) {
          if (gxb != nullptr) {
            S* gxr = gxb + i * stride_t;
            const S* wr = wrow.data() + i * L;
            int64_t c0 = 0;
            for (; c0 + kBlock <= C; c0 += kBlock) {
              if (L == kPattern)
                scatter_block<S, kPattern>(gxr + c0, gr + c0, wr);
              else
                scatter_block<S, 0>(gxr + c0, gr + c0, wr + c0 % L);
            }
            for (int64_t c = c0; c < C; ++c) gxr[c] += wk[(c % H) * K + i] * gr[c];
          }
          if (gw != nullptr) {
            const S* xr = xb + i * stride_t;
            int64_t c0 = 0, n = 0;
            if (D == kBlock) {  // partial sums in registers, blocks added lane-wise
              S acc[kBlock];
              for (int64_t l = 0; l < kBlock; ++l) acc[l] = 0;
              for (; c0 + kBlock <= C; c0 += kBlock)
#pragma omp simd
                for (int64_t l = 0; l < kBlock; ++l) acc[l] += gr[c0 + l] * xr[c0 + l];
              n = c0 > 0 ? kBlock : 0;
              if (n == kBlock && kPattern % H == 0) {  // fold into one kPattern-wide head pattern
                for (int64_t j = kPattern; j < kBlock; j += kPattern)
#pragma omp simd
                  for (int64_t l = 0; l < kPattern; ++l) acc[l] += acc[j + l];
                n = kPattern;
              }
              for (int64_t l = 0; l < n; ++l) dots[l] = acc[l];
            } else {
              for (int64_t l = 0; l < D; ++l) dots[l] = 0;
              for (; c0 + kBlock <= C; c0 += kBlock) dot_block(dots.data() + c0, gr + c0, xr + c0);
              n = c0;
            }
            fold_lanes(dots.data(), n, H, gw + i, K);  // lane l holds channels of head l mod H
            for (int64_t c = c0; c < C; ++c) gw[(c % H) * K + i] += gr[c] * xr[c];
          }
        }
      }
    }
  });
}

void check_input(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

at::Tensor lightweight_forward(const at::Tensor& x, const at::Tensor& w, int64_t padding_l) {
  check_input(x, "x", 3);
  check_input(w, "w", 2);
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "x and w must have one dtype");
  const int64_t T = x.size(0), B = x.size(1), C = x.size(2), H = w.size(0), K = w.size(1);
  TORCH_CHECK(H > 0 && C % H == 0, C, " channels cannot be split over ", H, " heads");
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lightweight_forward", [&] {
    lightweight_forward_impl(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), T, B,
                             C, H, K, padding_l);
  });
  return out;
}

at::Tensor lightweight_weight_grad(const at::Tensor& x, const at::Tensor& g, int64_t heads, int64_t kernel_size,
                                   int64_t padding_l) {
  check_input(x, "x", 3);
  check_input(g, "g", 3);
  TORCH_CHECK(x.sizes() == g.sizes() && x.scalar_type() == g.scalar_type(), "x and g must match");
  const int64_t T = x.size(0), B = x.size(1), C = x.size(2);
  TORCH_CHECK(heads > 0 && C % heads == 0, C, " channels cannot be split over ", heads, " heads");
  auto grad_w = at::empty({heads, kernel_size}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lightweight_weight_grad", [&] {
    lightweight_weight_grad_impl(x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>(), T,
                                 B, C, heads, kernel_size, padding_l);
  });
  return grad_w;
}

at::Tensor dynamic_forward(const at::Tensor& x, const at::Tensor& w, int64_t padding_l) {
  check_input(x, "x", 3);
  check_input(w, "w", 4);
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "x and w must have one dtype");
  const int64_t T = x.size(0), B = x.size(1), C = x.size(2), H = w.size(2), K = w.size(3);
  TORCH_CHECK(w.size(0) == T && w.size(1) == B, "w must be T x B x H x K");
  TORCH_CHECK(H > 0 && C % H == 0, C, " channels cannot be split over ", H, " heads");
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_forward", [&] {
    dynamic_forward_impl(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), T, B, C, H,
                         K, padding_l);
  });
  return out;
}

std::vector<at::Tensor> dynamic_backward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& g,
                                         int64_t padding_l, bool need_x, bool need_w) {
  check_input(x, "x", 3);
  check_input(w, "w", 4);
  check_input(g, "g", 3);
  TORCH_CHECK(x.sizes() == g.sizes(), "x and g must have one shape");
  const int64_t T = x.size(0), B = x.size(1), C = x.size(2), H = w.size(2), K = w.size(3);
  // the gathered input gradient writes every element; the scattered one adds into zeros
  const bool gather = pattern_width(C, H) == kPattern;
  at::Tensor grad_x = need_x ? (gather ? at::empty_like(x) : at::zeros_like(x)) : at::Tensor();
  at::Tensor grad_w = need_w ? at::zeros_like(w) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dynamic_backward", [&] {
    dynamic_backward_impl(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                          need_x ? grad_x.data_ptr<scalar_t>() : nullptr,
                          need_w ? grad_w.data_ptr<scalar_t>() : nullptr, T, B, C, H, K, padding_l);
  });
  return {grad_x, grad_w};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lightweight_forward", &lightweight_forward, "lightweight conv over T x B x C (heads c mod H)");
  m.def("lightweight_weight_grad", &lightweight_weight_grad, "H x K kernel gradient of the lightweight conv");
  m.def("dynamic_forward", &dynamic_forward, "dynamic conv over T x B x C with T x B x H x K kernels");
  m.def("dynamic_backward", &dynamic_backward, "input and kernel gradients of the dynamic conv");
}
