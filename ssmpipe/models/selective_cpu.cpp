// Fused CPU selective scan (SPEC 001), compiled at first use by ssmpipe/models/selective_cpu.py.
//
// Inputs, all contiguous: delta (B L), At = Aᵀ (G N d), Bm, Cm (B L N), u (B L d): G groups of B/G batch rows
// (G models stacked by vmap), group g's rows b = g·B/G … (g+1)·B/G − 1 using At[g]. One task runs one batch row b and
// a segment of channels [i0, i1) through t = 0..L−1 with its state x (N m) on the stack (m = i1 − i0):
//   a = e^{Δ_t A[i,n]},  x[n,i] = a·x[n,i] + Δ_t B_t[n] u_t[i],  y_t[i] = Σ_n C_t[n] x[n,i].
// No (L B d N) tensor exists: the forward keeps the state entering every chunk of T steps (B K N d), K = ⌈L/T⌉,
// and the backward recomputes one chunk's states into a (T N m) buffer, then runs the adjoint back through it:
//   λ_t = gy_t[i] C_t[n] + a_{t+1} λ_{t+1},  w_t = λ_t a_t x_{t−1} (= ∂/∂ log a_t),
//   ∂u_t[i] = Δ_t Σ_n λ_t B_t[n],  ∂B_t[n] = Δ_t Σ_i λ_t u_t[i],  ∂C_t[n] = Σ_i gy_t[i] x_t[n,i],
//   ∂Δ_t = Σ_{n,i} (w_t A[i,n] + λ_t B_t[n] u_t[i]),  ∂A[i,n] = Σ_t Δ_t w_t.
// Sums over channels (∂B, ∂C, ∂Δ) and over a group's rows (∂A) are written per task and added up at the end.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace {

// e^x, branch-free so that the loops calling it vectorise: x = k·ln2 + r with |r| ≤ ln2/2 (Cody & Waite range
// reduction, ln2 split in a short high part and a low part), e^r by its Taylor polynomial (degree 7 in float,
// 12 in double: the first dropped term is below the type's epsilon), 2^k by the exponent bits. k = round(x/ln2)
// by adding 1.5·2^(mantissa bits), which leaves k in the low mantissa bits. x is clamped to where 2^k is normal.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;                                 // 1.5·2^23
  float kf = x * 1.44269504088896341f + magic;
  int32_t kbits, mbits;
  std::memcpy(&kbits, &kf, 4);
  std::memcpy(&mbits, &magic, 4);
  kf -= magic;
  float r = x - kf * 0.693145751953125f - kf * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t e = (kbits - mbits + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  return p * s;
}

inline double exp_approx(double x) {
  x = std::min(std::max(x, -708.0), 709.0);
  const double magic = 6755399441055744.0;                         // 1.5·2^52
  double kf = x * 1.4426950408889634 + magic;
  int64_t kbits, mbits;
  std::memcpy(&kbits, &kf, 8);
  std::memcpy(&mbits, &magic, 8);
  kf -= magic;
  double r = x - kf * 0.693145751953125 - kf * 1.42860682030941723212e-6;
  double p = 1.0 / 479001600;
  p = p * r + 1.0 / 39916800;
  p = p * r + 1.0 / 3628800;
  p = p * r + 1.0 / 362880;
  p = p * r + 1.0 / 40320;
  p = p * r + 1.0 / 5040;
  p = p * r + 1.0 / 720;
  p = p * r + 1.0 / 120;
  p = p * r + 1.0 / 24;
  p = p * r + 1.0 / 6;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t e = (kbits - mbits + 1023) << 52;
  double s;
  std::memcpy(&s, &e, 8);
  return p * s;
}

// Flush subnormal results and inputs to zero while a task runs (a state decaying through the subnormal range
// would otherwise cost ~100 cycles per operation); restored on exit. Changes values below 1.2e-38 only.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Sizes and the segment one task owns.
struct Shape {
  int64_t B, L, d, N, T, K, S, seg, G;
  int64_t a_offset(int64_t b) const { return b / (B / G) * N * d; }  // row b's At
};

// One step of the recurrence for channels [i0, i0 + m) of row b at time t: x_out = a ⊙ x_in + Δ B u (N m), a into
// a_out (when keep_a) or y_t into y_out (otherwise). x_in may equal x_out.
template <typename scalar_t, bool keep_a, int W>
inline void step(const Shape& s, int64_t b, int64_t t, int64_t i0, int64_t m_, const scalar_t* delta,
                 const scalar_t* At, const scalar_t* Bm, const scalar_t* Cm, const scalar_t* u,
                 const scalar_t* x_in, scalar_t* x_out, scalar_t* a_out, scalar_t* y_out) {
  const int64_t m = W ? W : m_;
  const int64_t bt = b * s.L + t;
  const scalar_t dt = delta[bt];
  const scalar_t* ut = u + bt * s.d + i0;                          // (m)
  scalar_t y[64] = {};
  for (int64_t n = 0; n < s.N; ++n) {
    const scalar_t* An = At + n * s.d + i0;                        // (m)
    const scalar_t bn = dt * Bm[bt * s.N + n], cn = Cm[bt * s.N + n];
    const scalar_t* xi = x_in + n * m;
    scalar_t* xo = x_out + n * m;
    scalar_t* ao = keep_a ? a_out + n * m : nullptr;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
      const scalar_t a = exp_approx(dt * An[i]);
      const scalar_t x = a * xi[i] + bn * ut[i];
      xo[i] = x;
      if (keep_a)
        ao[i] = a;
      else
        y[i] += cn * x;
    }
  }
  if (!keep_a)
    for (int64_t i = 0; i < m; ++i) y_out[i] = y[i];
}

template <typename scalar_t, int W>
void forward_task(const Shape& s, int64_t b, int64_t i0, int64_t m_, const scalar_t* delta, const scalar_t* At,
                  const scalar_t* Bm, const scalar_t* Cm, const scalar_t* u, scalar_t* y, scalar_t* ck) {
  const int64_t m = W ? W : m_;
  std::vector<scalar_t> x(s.N * m, 0);                             // (N m)
  for (int64_t t = 0; t < s.L; ++t) {
    if (t % s.T == 0)                                              // the state entering chunk t / T
      for (int64_t n = 0; n < s.N; ++n)
        std::memcpy(ck + ((b * s.K + t / s.T) * s.N + n) * s.d + i0, x.data() + n * m, m * sizeof(scalar_t));
    step<scalar_t, false, W>(s, b, t, i0, m, delta, At, Bm, Cm, u, x.data(), x.data(), nullptr,
         y + (b * s.L + t) * s.d + i0);
  }
}

// The adjoint for channels [i0, i0 + m) of row b; the task's partial sums go to slot j = segment index.
template <typename scalar_t, int W>
void backward_task(const Shape& s, int64_t b, int64_t i0, int64_t m_, int64_t j, const scalar_t* delta,
                   const scalar_t* At, const scalar_t* Bm, const scalar_t* Cm, const scalar_t* u, const scalar_t* ck,
                   const scalar_t* gy, scalar_t* gu, scalar_t* gdelta, scalar_t* gB, scalar_t* gC, scalar_t* gAt) {
  const int64_t m = W ? W : m_, M = s.N * m;
  std::vector<scalar_t> xs(s.T * M), as(s.T * M), x0(M), carry(M, 0), gA(M, 0);  // (T N m) ×2, (N m) ×3
  scalar_t slb[64], swa[64];                                       // Σ_n λ B_t[n], Σ_n w A[i,n] per channel
  for (int64_t k = s.K - 1; k >= 0; --k) {
    const int64_t t0 = k * s.T, t1 = std::min(s.L, t0 + s.T);
    for (int64_t n = 0; n < s.N; ++n)
      std::memcpy(x0.data() + n * m, ck + ((b * s.K + k) * s.N + n) * s.d + i0, m * sizeof(scalar_t));
    for (int64_t t = t0; t < t1; ++t)                              // recompute x_t, a_t for the chunk
      step<scalar_t, true, W>(s, b, t, i0, m, delta, At, Bm, Cm, u, t == t0 ? x0.data() : xs.data() + (t - t0 - 1) * M,
           xs.data() + (t - t0) * M, as.data() + (t - t0) * M, nullptr);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t bt = b * s.L + t;
      const scalar_t dt = delta[bt];
      const scalar_t* ut = u + bt * s.d + i0;                      // (m)
      const scalar_t* g = gy + bt * s.d + i0;                      // (m)
      const scalar_t* x = xs.data() + (t - t0) * M;                // (N m) x_t
      const scalar_t* xp = t == t0 ? x0.data() : x - M;            // (N m) x_{t−1}
      const scalar_t* a = as.data() + (t - t0) * M;                // (N m) a_t
      for (int64_t i = 0; i < m; ++i) slb[i] = swa[i] = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const scalar_t cn = Cm[bt * s.N + n], bn = Bm[bt * s.N + n];
        const scalar_t* An = At + n * s.d + i0;
        scalar_t* cr = carry.data() + n * m;
        scalar_t* gAn = gA.data() + n * m;
        const scalar_t *xn = x + n * m, *xpn = xp + n * m, *an = a + n * m;
        scalar_t dc = 0, db = 0;
#pragma omp simd reduction(+ : dc, db)
        for (int64_t i = 0; i < m; ++i) {
          const scalar_t lam = g[i] * cn + cr[i];                  // λ_t
          const scalar_t w = lam * an[i] * xpn[i];                 // λ_t a_t x_{t−1}
          dc += g[i] * xn[i];
          db += lam * ut[i];
          swa[i] += w * An[i];
          gAn[i] += w * dt;
          slb[i] += lam * bn;
          cr[i] = an[i] * lam;                                     // a_t λ_t, read at step t − 1
        }
        gC[(j * s.B * s.L + bt) * s.N + n] = dc;
        gB[(j * s.B * s.L + bt) * s.N + n] = db * dt;
      }
      scalar_t sa = 0;
      for (int64_t i = 0; i < m; ++i) {
        gu[bt * s.d + i0 + i] = dt * slb[i];
        sa += swa[i] + ut[i] * slb[i];
      }
      gdelta[j * s.B * s.L + bt] = sa;
    }
  }
  for (int64_t n = 0; n < s.N; ++n)
    std::memcpy(gAt + (b * s.N + n) * s.d + i0, gA.data() + n * m, m * sizeof(scalar_t));
}

// Tasks: B rows × S channel segments of `seg` channels (at most 64, the stack arrays' size), S chosen so that
// there are about as many tasks as threads.
Shape make_shape(const torch::Tensor& u, const torch::Tensor& At, int64_t T) {
  Shape s;
  s.B = u.size(0), s.L = u.size(1), s.d = u.size(2), s.G = At.size(0), s.N = At.size(1);
  s.T = std::max<int64_t>(1, T);
  TORCH_CHECK(s.G > 0 && s.B % s.G == 0, "selective scan: ", s.G, " groups of A do not divide batch ", s.B);
  s.K = (s.L + s.T - 1) / s.T;
  const int64_t want = std::max<int64_t>((at::get_num_threads() + s.B - 1) / s.B, (s.d + 63) / 64);
  s.seg = (s.d + std::min(want, s.d) - 1) / std::min(want, s.d);
  s.S = (s.d + s.seg - 1) / s.seg;
  return s;
}

// f(std::integral_constant<int, W>{}) with W = m for the common segment widths, else W = 0 (m at run time): with
// the width known, the inner loops compile to whole vectors without run-time trip-count and epilogue handling.
template <typename F>
void with_width(int64_t m, F f) {
  switch (m) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

template <typename F>
void for_tasks(const Shape& s, F f) {
  at::parallel_for(0, s.B * s.S, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.S, j = task % s.S, i0 = j * s.seg;
      f(b, j, i0, std::min(s.d, i0 + s.seg) - i0);
    }
  });
}

}  // namespace

// delta (B L), At (G N d), Bm, Cm (B L N), u (B L d), T -> y (B L d), chunk start states (B K N d).
std::vector<torch::Tensor> selective_forward(torch::Tensor delta, torch::Tensor At, torch::Tensor Bm,
                                             torch::Tensor Cm, torch::Tensor u, int64_t T) {
  const Shape s = make_shape(u, At, T);
  auto y = torch::empty_like(u);
  auto ck = torch::empty({s.B, s.K, s.N, s.d}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_forward", [&] {
    for_tasks(s, [&](int64_t b, int64_t, int64_t i0, int64_t m) {
      with_width(m, [&](auto w) {
        forward_task<scalar_t, decltype(w)::value>(s, b, i0, m, delta.data_ptr<scalar_t>(),
                                                   At.data_ptr<scalar_t>() + s.a_offset(b), Bm.data_ptr<scalar_t>(),
                                                   Cm.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                                   y.data_ptr<scalar_t>(), ck.data_ptr<scalar_t>());
      });
    });
  });
  return {y, ck};
}

// The inputs of selective_forward, its chunk start states and ∂y (B L d) -> ∂Δ (B L), ∂Aᵀ, ∂B, ∂C (B L N),
// ∂u (B L d); ∂Aᵀ is (G N d).
std::vector<torch::Tensor> selective_backward(torch::Tensor delta, torch::Tensor At, torch::Tensor Bm,
                                              torch::Tensor Cm, torch::Tensor u, torch::Tensor ck,
                                              torch::Tensor gy, int64_t T) {
  const Shape s = make_shape(u, At, T);
  TORCH_CHECK(ck.size(1) == s.K && ck.size(0) == s.B, "selective_backward: checkpoints do not match the input");
  auto gu = torch::empty_like(u);
  auto gdelta = torch::empty({s.S, s.B, s.L}, u.options());
  auto gB = torch::empty({s.S, s.B, s.L, s.N}, u.options());
  auto gC = torch::empty({s.S, s.B, s.L, s.N}, u.options());
  auto gAt = torch::empty({s.B, s.N, s.d}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_backward", [&] {
    for_tasks(s, [&](int64_t b, int64_t j, int64_t i0, int64_t m) {
      with_width(m, [&](auto w) {
        backward_task<scalar_t, decltype(w)::value>(
            s, b, i0, m, j, delta.data_ptr<scalar_t>(), At.data_ptr<scalar_t>() + s.a_offset(b),
            Bm.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), ck.data_ptr<scalar_t>(),
            gy.data_ptr<scalar_t>(), gu.data_ptr<scalar_t>(), gdelta.data_ptr<scalar_t>(), gB.data_ptr<scalar_t>(),
            gC.data_ptr<scalar_t>(), gAt.data_ptr<scalar_t>());
      });
    });
  });
  auto total = [](const torch::Tensor& t, int64_t dim) { return t.size(dim) == 1 ? t.select(dim, 0) : t.sum(dim); };
  return {total(gdelta, 0), total(gAt.view({s.G, s.B / s.G, s.N, s.d}), 1), total(gB, 0), total(gC, 0), gu};
}
