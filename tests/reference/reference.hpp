// transmamba test oracle: a plain, slow float64 implementation of docs/SPEC.md.
//
// Everything here is written straight from the formulas of SPEC.md with naive loops; it uses only
// the standard library and shares no code with include/. Every tensor is a std::vector<double> in
// contiguous row-major layout; the shape of each is written next to it, outermost index first.
//
//   u, out            (b, L, d_model)
//   zxbcdt            (b, L, d_in_proj)   columns [z (d_inner) | x (d_inner) | B (g*n) | C (g*n) | dt (h)]
//   xBC               (b, L, conv_dim)    columns [x (d_inner) | B (g*n) | C (g*n)]
//   x, y (per head)   (b, L, h, p)        == (b, L, d_inner) with channel = head*p + i
//   B, C              (b, L, g, n)
//   dt                (b, L, h)
//   state             (b, h, p, n)
//
// Head k belongs to group k / (h/g).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace transmamba::reference {

// ---------------------------------------------------------------------------------------------
// Sizes and parameters
// ---------------------------------------------------------------------------------------------

struct dims {
  int batch = 1, seqlen = 1, d_model = 16, expand = 2, headdim = 8, d_state = 8, ngroups = 1, d_conv = 4;
  double dt_min = 0.0;                                        // time_step_limit: clamp of dt AFTER softplus
  double dt_max = std::numeric_limits<double>::infinity();
  double norm_eps = 1e-5;                                     // eps of the gated RMSNorm (and block RMSNorms)

  int d_inner() const { return expand * d_model; }
  int nheads() const { return d_inner() / headdim; }
  int conv_dim() const { return d_inner() + 2 * ngroups * d_state; }
  int d_in_proj() const { return 2 * d_inner() + 2 * ngroups * d_state + nheads(); }
};

struct mixer_weights {                 // Mamba2 names
  std::vector<double> in_proj;        // (d_in_proj, d_model)  rows: [z (d_inner), x (d_inner), B (g*n), C (g*n), dt (h)]
  std::vector<double> conv_w;         // (conv_dim, d_conv)    conv1d.weight squeezed; channels in xBC order
  std::vector<double> conv_b;         // (conv_dim)
  std::vector<double> dt_bias, A_log, D;  // (h) each
  std::vector<double> norm_w;         // (d_inner)
  std::vector<double> out_proj;       // (d_model, d_inner)
};

struct variant {                       // attention-mode options (SPEC 3 and 6); defaults = paper
  bool gate_attention = false;         // true: attention tokens also multiplied by silu(z)
  bool d_skip_attention = true;        // false: no D*x on attention tokens
  bool rope = false;                   // RoPE on C and B in attention mode only
  double rope_theta = 10000.0;         // rotate-half (GPT-NeoX): pairs (i, i+n/2), freq_i = theta^(-2i/n), angle = t*freq_i
  double scale = 0.0;                  // 0 means 1/sqrt(d_state)
};

struct mlp_weights {
  std::vector<double> gate_proj;  // (d_ff, d_model)
  std::vector<double> up_proj;    // (d_ff, d_model)
  std::vector<double> down_proj;  // (d_model, d_ff)
  std::vector<double> norm_w;     // (d_model)
};

struct ssm_result {
  std::vector<double> y;            // (b, L, h, p)
  std::vector<double> final_state;  // (b, h, p, n)
};

struct mixer_result {
  std::vector<double> out;          // (b, L, d_model)
  std::vector<double> final_state;  // (b, h, p, n)
};

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

namespace detail {

inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("transmamba::reference: " + what);
}

inline void check_dims(const dims& d) {
  require(d.batch >= 1 && d.seqlen >= 0 && d.d_model >= 1 && d.expand >= 1 && d.headdim >= 1 &&
              d.d_state >= 1 && d.ngroups >= 1 && d.d_conv >= 1,
          "dims must be positive");
  require(d.d_inner() % d.headdim == 0, "d_inner must be a multiple of headdim");
  require(d.nheads() % d.ngroups == 0, "nheads must be a multiple of ngroups");
}

inline void check_size(const std::vector<double>& v, std::size_t n, const char* name) {
  require(v.size() == n, std::string(name) + " has size " + std::to_string(v.size()) + ", expected " +
                             std::to_string(n));
}

inline std::size_t sz(long long v) { return static_cast<std::size_t>(v); }

}  // namespace detail

inline double sigmoid(double x) {
  // exact in double for both signs, no overflow
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

inline double silu(double x) { return x * sigmoid(x); }

inline double softplus(double x) {
  // log(1 + exp(x)) without overflow
  if (x > 0) return x + std::log1p(std::exp(-x));
  return std::log1p(std::exp(x));
}

template <class T>
std::vector<double> to_double(const T* p, std::size_t n) {
  std::vector<double> r(n);
  for (std::size_t i = 0; i < n; ++i) r[i] = static_cast<double>(p[i]);
  return r;
}

template <class Container>
std::vector<double> to_double(const Container& c) {
  std::vector<double> r;
  r.reserve(c.size());
  for (const auto& v : c) r.push_back(static_cast<double>(v));
  return r;
}

// Uniform doubles in [lo, hi), deterministic in seed.
inline std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 gen(seed);
  std::vector<double> r(n);
  for (std::size_t i = 0; i < n; ++i) {
    // 53 random bits -> [0,1); independent of the library's distribution implementation
    const double u01 = static_cast<double>(gen() >> 11) * (1.0 / 9007199254740992.0);
    r[i] = lo + (hi - lo) * u01;
  }
  return r;
}

// Deterministic, well-conditioned random weights. Each tensor is drawn from its own stream
// (seed + a fixed per-tensor offset) so that changing one size never changes another tensor.
inline mixer_weights random_weights(const dims& d, std::uint64_t seed) {
  detail::check_dims(d);
  const std::size_t dm = d.d_model, di = d.d_inner(), h = d.nheads(), cd = d.conv_dim(), dip = d.d_in_proj(),
                    k = d.d_conv;
  mixer_weights w;
  w.in_proj = random_vector(dip * dm, seed * 1000003ULL + 1, -1.0, 1.0);
  for (auto& v : w.in_proj) v /= std::sqrt(static_cast<double>(dm));
  w.conv_w = random_vector(cd * k, seed * 1000003ULL + 2, -0.5, 0.5);
  w.conv_b = random_vector(cd, seed * 1000003ULL + 3, -0.1, 0.1);
  // dt = exp(U(log 1e-3, log 0.1)); dt_bias = softplus^{-1}(dt) = dt + log(1 - exp(-dt))
  const auto logdt = random_vector(h, seed * 1000003ULL + 4, std::log(1e-3), std::log(0.1));
  w.dt_bias.resize(h);
  for (std::size_t i = 0; i < h; ++i) {
    const double dt = std::exp(logdt[i]);
    w.dt_bias[i] = dt + std::log(-std::expm1(-dt));
  }
  w.A_log = random_vector(h, seed * 1000003ULL + 5, 1.0, 16.0);
  for (auto& v : w.A_log) v = std::log(v);
  w.D = random_vector(h, seed * 1000003ULL + 6, 0.5, 1.5);
  w.norm_w = random_vector(di, seed * 1000003ULL + 7, 0.5, 1.5);
  w.out_proj = random_vector(dm * di, seed * 1000003ULL + 8, -1.0, 1.0);
  for (auto& v : w.out_proj) v /= std::sqrt(static_cast<double>(di));
  return w;
}

// max|got-want| / max(max|want|, tiny); +inf if sizes differ or anything is NaN/inf.
inline double max_relative_error(const std::vector<double>& got, const std::vector<double>& want) {
  const double inf = std::numeric_limits<double>::infinity();
  if (got.size() != want.size()) return inf;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return inf;
    num = std::max(num, std::abs(got[i] - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return num / std::max(den, std::numeric_limits<double>::min());
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

inline void check_weights(const dims& d, const mixer_weights& w) {
  detail::check_dims(d);
  const std::size_t dm = d.d_model, di = d.d_inner(), h = d.nheads(), cd = d.conv_dim(), dip = d.d_in_proj();
  detail::check_size(w.in_proj, dip * dm, "in_proj");
  detail::check_size(w.conv_w, cd * d.d_conv, "conv_w");
  detail::check_size(w.conv_b, cd, "conv_b");
  detail::check_size(w.dt_bias, h, "dt_bias");
  detail::check_size(w.A_log, h, "A_log");
  detail::check_size(w.D, h, "D");
  detail::check_size(w.norm_w, di, "norm_w");
  detail::check_size(w.out_proj, dm * di, "out_proj");
}

// u (b, L, d_model) -> zxbcdt (b, L, d_in_proj): zxbcdt[r, o] = sum_c in_proj[o, c] * u[r, c]
inline std::vector<double> in_projection(const dims& d, const mixer_weights& w, const std::vector<double>& u) {
  check_weights(d, w);
  const int rows = d.batch * d.seqlen, dm = d.d_model, dip = d.d_in_proj();
  detail::check_size(u, detail::sz(1LL * rows * dm), "u");
  std::vector<double> r(detail::sz(1LL * rows * dip), 0.0);
  for (int row = 0; row < rows; ++row)
    for (int o = 0; o < dip; ++o) {
      double acc = 0.0;
      for (int c = 0; c < dm; ++c) acc += w.in_proj[detail::sz(1LL * o * dm + c)] * u[detail::sz(1LL * row * dm + c)];
      r[detail::sz(1LL * row * dip + o)] = acc;
    }
  return r;
}

// zxbcdt -> xBC (b, L, conv_dim): causal depthwise conv on columns [d_inner, 2*d_inner + 2gn), then SiLU.
// out[t,c] = bias[c] + sum_k w[c,k] * in[t - (d_conv-1) + k, c], in[s<0] = 0.
inline std::vector<double> conv_silu(const dims& d, const mixer_weights& w, const std::vector<double>& zxbcdt) {
  check_weights(d, w);
  const int L = d.seqlen, dip = d.d_in_proj(), cd = d.conv_dim(), di = d.d_inner(), K = d.d_conv;
  detail::check_size(zxbcdt, detail::sz(1LL * d.batch * L * dip), "zxbcdt");
  std::vector<double> r(detail::sz(1LL * d.batch * L * cd), 0.0);
  for (int b = 0; b < d.batch; ++b)
    for (int t = 0; t < L; ++t)
      for (int c = 0; c < cd; ++c) {
        double acc = w.conv_b[detail::sz(c)];
        for (int k = 0; k < K; ++k) {
          const int s = t - (K - 1) + k;
          if (s < 0) continue;
          acc += w.conv_w[detail::sz(1LL * c * K + k)] * zxbcdt[detail::sz((1LL * b * L + s) * dip + di + c)];
        }
        r[detail::sz((1LL * b * L + t) * cd + c)] = silu(acc);
      }
  return r;
}

// zxbcdt -> dt (b, L, h): clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)
inline std::vector<double> time_steps(const dims& d, const mixer_weights& w, const std::vector<double>& zxbcdt) {
  check_weights(d, w);
  const int L = d.seqlen, dip = d.d_in_proj(), h = d.nheads(), off = 2 * d.d_inner() + 2 * d.ngroups * d.d_state;
  detail::check_size(zxbcdt, detail::sz(1LL * d.batch * L * dip), "zxbcdt");
  std::vector<double> r(detail::sz(1LL * d.batch * L * h), 0.0);
  for (int b = 0; b < d.batch; ++b)
    for (int t = 0; t < L; ++t)
      for (int k = 0; k < h; ++k) {
        double v = softplus(zxbcdt[detail::sz((1LL * b * L + t) * dip + off + k)] + w.dt_bias[detail::sz(k)]);
        if (v < d.dt_min) v = d.dt_min;
        if (v > d.dt_max) v = d.dt_max;
        r[detail::sz((1LL * b * L + t) * h + k)] = v;
      }
  return r;
}

// z (b, L, d_inner): columns [0, d_inner) of zxbcdt
inline std::vector<double> z_of(const dims& d, const std::vector<double>& zxbcdt) {
  const int L = d.seqlen, dip = d.d_in_proj(), di = d.d_inner();
  detail::check_size(zxbcdt, detail::sz(1LL * d.batch * L * dip), "zxbcdt");
  std::vector<double> r(detail::sz(1LL * d.batch * L * di));
  for (int row = 0; row < d.batch * L; ++row)
    for (int c = 0; c < di; ++c) r[detail::sz(1LL * row * di + c)] = zxbcdt[detail::sz(1LL * row * dip + c)];
  return r;
}

// x (b, L, h, p): x(b,t,head,i) = xBC[b,t, head*headdim + i]
inline std::vector<double> x_of(const dims& d, const std::vector<double>& xBC) {
  const int L = d.seqlen, cd = d.conv_dim(), di = d.d_inner();
  detail::check_size(xBC, detail::sz(1LL * d.batch * L * cd), "xBC");
  std::vector<double> r(detail::sz(1LL * d.batch * L * di));
  for (int row = 0; row < d.batch * L; ++row)
    for (int c = 0; c < di; ++c) r[detail::sz(1LL * row * di + c)] = xBC[detail::sz(1LL * row * cd + c)];
  return r;
}

// B (b, L, g, n): B(b,t,grp,j) = xBC[b,t, d_inner + grp*n + j]
inline std::vector<double> B_of(const dims& d, const std::vector<double>& xBC) {
  const int L = d.seqlen, cd = d.conv_dim(), di = d.d_inner(), gn = d.ngroups * d.d_state;
  detail::check_size(xBC, detail::sz(1LL * d.batch * L * cd), "xBC");
  std::vector<double> r(detail::sz(1LL * d.batch * L * gn));
  for (int row = 0; row < d.batch * L; ++row)
    for (int c = 0; c < gn; ++c) r[detail::sz(1LL * row * gn + c)] = xBC[detail::sz(1LL * row * cd + di + c)];
  return r;
}

// C (b, L, g, n): C(b,t,grp,j) = xBC[b,t, d_inner + g*n + grp*n + j]
inline std::vector<double> C_of(const dims& d, const std::vector<double>& xBC) {
  const int L = d.seqlen, cd = d.conv_dim(), di = d.d_inner(), gn = d.ngroups * d.d_state;
  detail::check_size(xBC, detail::sz(1LL * d.batch * L * cd), "xBC");
  std::vector<double> r(detail::sz(1LL * d.batch * L * gn));
  for (int row = 0; row < d.batch * L; ++row)
    for (int c = 0; c < gn; ++c) r[detail::sz(1LL * row * gn + c)] = xBC[detail::sz(1LL * row * cd + di + gn + c)];
  return r;
}

// A (h) = -exp(A_log)
inline std::vector<double> A_of(const mixer_weights& w) {
  std::vector<double> r(w.A_log.size());
  for (std::size_t k = 0; k < r.size(); ++k) r[k] = -std::exp(w.A_log[k]);
  return r;
}

// Sequential SSM recurrence on tokens [t_begin, t_end) starting from initial_state (empty = zeros):
//   S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,  y_t = S_t C_t + D x_t.
// y (b, L, h, p) with rows outside [t_begin, t_end) equal to 0; final_state (b,h,p,n) = S after t_end-1
// (= initial_state when the range is empty).
inline ssm_result ssm_recurrence(const dims& d, const std::vector<double>& x, const std::vector<double>& B,
                                 const std::vector<double>& C, const std::vector<double>& dt,
                                 const std::vector<double>& A, const std::vector<double>& D,
                                 const std::vector<double>& initial_state, int t_begin = 0, int t_end = -1) {
  detail::check_dims(d);
  const int L = d.seqlen, h = d.nheads(), p = d.headdim, n = d.d_state, g = d.ngroups, nb = d.batch;
  const int hpg = h / g;
  if (t_end < 0) t_end = L;
  detail::require(0 <= t_begin && t_begin <= t_end && t_end <= L, "ssm_recurrence: bad token range");
  detail::check_size(x, detail::sz(1LL * nb * L * h * p), "x");
  detail::check_size(B, detail::sz(1LL * nb * L * g * n), "B");
  detail::check_size(C, detail::sz(1LL * nb * L * g * n), "C");
  detail::check_size(dt, detail::sz(1LL * nb * L * h), "dt");
  detail::check_size(A, detail::sz(h), "A");
  detail::check_size(D, detail::sz(h), "D");
  const std::size_t state_size = detail::sz(1LL * nb * h * p * n);
  std::vector<double> S(state_size, 0.0);
  if (!initial_state.empty()) {
    detail::check_size(initial_state, state_size, "initial_state");
    S = initial_state;
  }
  std::vector<double> y(detail::sz(1LL * nb * L * h * p), 0.0);
  for (int b = 0; b < nb; ++b)
    for (int k = 0; k < h; ++k) {
      const int grp = k / hpg;
      for (int t = t_begin; t < t_end; ++t) {
        const double dtv = dt[detail::sz((1LL * b * L + t) * h + k)];
        const double a = std::exp(dtv * A[detail::sz(k)]);
        for (int i = 0; i < p; ++i) {
          const double xv = x[detail::sz(((1LL * b * L + t) * h + k) * p + i)];
          double yv = 0.0;
          for (int j = 0; j < n; ++j) {
            double& s = S[detail::sz(((1LL * b * h + k) * p + i) * n + j)];
            s = a * s + dtv * xv * B[detail::sz(((1LL * b * L + t) * g + grp) * n + j)];
            yv += s * C[detail::sz(((1LL * b * L + t) * g + grp) * n + j)];
          }
          y[detail::sz(((1LL * b * L + t) * h + k) * p + i)] = yv + D[detail::sz(k)] * xv;
        }
      }
    }
  return {std::move(y), std::move(S)};
}

// Rotate-half RoPE of one n-vector at position pos (n even): pairs (i, i+n/2), i < n/2.
inline void rope_rotate(double* v, int n, double pos, double theta) {
  detail::require(n % 2 == 0, "rope needs an even d_state");
  const int half = n / 2;
  for (int i = 0; i < half; ++i) {
    const double freq = std::pow(theta, -2.0 * i / n);
    const double ang = pos * freq;
    const double c = std::cos(ang), s = std::sin(ang);
    const double a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

// Causal softmax attention for tokens t < P (Q = C, K = B, V = x), y (b, L, h, p), rows t >= P = 0.
// s_tj = (C_t . B_j) * scale, j <= t;  y_t = sum_j softmax_j(s_t.) x_j (+ D x_t if d_skip_attention).
inline std::vector<double> attention(const dims& d, const variant& var, const std::vector<double>& x,
                                     const std::vector<double>& B, const std::vector<double>& C,
                                     const std::vector<double>& D, int P) {
  detail::check_dims(d);
  const int L = d.seqlen, h = d.nheads(), p = d.headdim, n = d.d_state, g = d.ngroups, nb = d.batch;
  const int hpg = h / g;
  detail::require(P >= 0, "attention: P < 0");
  if (P > L) P = L;
  detail::check_size(x, detail::sz(1LL * nb * L * h * p), "x");
  detail::check_size(B, detail::sz(1LL * nb * L * g * n), "B");
  detail::check_size(C, detail::sz(1LL * nb * L * g * n), "C");
  detail::check_size(D, detail::sz(h), "D");
  const double scale = var.scale != 0.0 ? var.scale : 1.0 / std::sqrt(static_cast<double>(n));
  std::vector<double> y(detail::sz(1LL * nb * L * h * p), 0.0);
  std::vector<double> q(detail::sz(n)), key(detail::sz(n)), s(detail::sz(L > 0 ? L : 1));
  for (int b = 0; b < nb; ++b)
    for (int k = 0; k < h; ++k) {
      const int grp = k / hpg;
      for (int t = 0; t < P; ++t) {
        for (int j = 0; j < n; ++j) q[detail::sz(j)] = C[detail::sz(((1LL * b * L + t) * g + grp) * n + j)];
        if (var.rope) rope_rotate(q.data(), n, t, var.rope_theta);
        double smax = -std::numeric_limits<double>::infinity();
        for (int jt = 0; jt <= t; ++jt) {
          for (int j = 0; j < n; ++j) key[detail::sz(j)] = B[detail::sz(((1LL * b * L + jt) * g + grp) * n + j)];
          if (var.rope) rope_rotate(key.data(), n, jt, var.rope_theta);
          double dot = 0.0;
          for (int j = 0; j < n; ++j) dot += q[detail::sz(j)] * key[detail::sz(j)];
          s[detail::sz(jt)] = dot * scale;
          if (s[detail::sz(jt)] > smax) smax = s[detail::sz(jt)];
        }
        double denom = 0.0;
        for (int jt = 0; jt <= t; ++jt) {
          s[detail::sz(jt)] = std::exp(s[detail::sz(jt)] - smax);
          denom += s[detail::sz(jt)];
        }
        for (int i = 0; i < p; ++i) {
          double acc = 0.0;
          for (int jt = 0; jt <= t; ++jt)
            acc += (s[detail::sz(jt)] / denom) * x[detail::sz(((1LL * b * L + jt) * h + k) * p + i)];
          if (var.d_skip_attention) acc += D[detail::sz(k)] * x[detail::sz(((1LL * b * L + t) * h + k) * p + i)];
          y[detail::sz(((1LL * b * L + t) * h + k) * p + i)] = acc;
        }
      }
    }
  return y;
}

// Memory Converter (SPEC eq. 8-9): S = sum_{j<P} (prod_{m=j+1}^{P-1} a_m) dt_j x_j B_j^T, a_m = exp(dt_m A).
// (b, h, p, n); zeros when P == 0. P > L means L.
inline std::vector<double> converter_state(const dims& d, const std::vector<double>& x, const std::vector<double>& B,
                                           const std::vector<double>& dt, const std::vector<double>& A, int P) {
  detail::check_dims(d);
  const int L = d.seqlen, h = d.nheads(), p = d.headdim, n = d.d_state, g = d.ngroups, nb = d.batch;
  const int hpg = h / g;
  detail::require(P >= 0, "converter_state: P < 0");
  if (P > L) P = L;
  detail::check_size(x, detail::sz(1LL * nb * L * h * p), "x");
  detail::check_size(B, detail::sz(1LL * nb * L * g * n), "B");
  detail::check_size(dt, detail::sz(1LL * nb * L * h), "dt");
  detail::check_size(A, detail::sz(h), "A");
  std::vector<double> S(detail::sz(1LL * nb * h * p * n), 0.0);
  for (int b = 0; b < nb; ++b)
    for (int k = 0; k < h; ++k) {
      const int grp = k / hpg;
      for (int jt = 0; jt < P; ++jt) {
        double decay = 1.0;
        for (int m = jt + 1; m <= P - 1; ++m) decay *= std::exp(dt[detail::sz((1LL * b * L + m) * h + k)] * A[detail::sz(k)]);
        const double coef = decay * dt[detail::sz((1LL * b * L + jt) * h + k)];
        for (int i = 0; i < p; ++i) {
          const double xv = x[detail::sz(((1LL * b * L + jt) * h + k) * p + i)];
          for (int j = 0; j < n; ++j)
            S[detail::sz(((1LL * b * h + k) * p + i) * n + j)] +=
                coef * xv * B[detail::sz(((1LL * b * L + jt) * g + grp) * n + j)];
        }
      }
    }
  return S;
}

// Gated RMSNorm (mamba_ssm RMSNormGated, norm_before_gate = False, group_size = d_inner/g):
// v = y * gate, gate_t = silu(z_t) for t >= P (and for t < P only if gate_attention, else 1);
// per group of d_inner/g channels: v / sqrt(mean(v^2) + eps), times norm_w. -> (b, L, d_inner)
inline std::vector<double> gated_rmsnorm(const dims& d, const variant& var, const mixer_weights& w,
                                         const std::vector<double>& y, const std::vector<double>& zxbcdt, int P) {
  detail::check_dims(d);
  const int L = d.seqlen, di = d.d_inner(), dip = d.d_in_proj(), g = d.ngroups, nb = d.batch;
  detail::require(di % g == 0, "d_inner must be a multiple of ngroups");
  detail::require(P >= 0, "gated_rmsnorm: P < 0");
  detail::check_size(y, detail::sz(1LL * nb * L * di), "y");
  detail::check_size(zxbcdt, detail::sz(1LL * nb * L * dip), "zxbcdt");
  detail::check_size(w.norm_w, detail::sz(di), "norm_w");
  const int gs = di / g;
  std::vector<double> r(y.size(), 0.0), v(detail::sz(di));
  for (int b = 0; b < nb; ++b)
    for (int t = 0; t < L; ++t) {
      const long long row = 1LL * b * L + t;
      const bool gated = t >= P || var.gate_attention;
      for (int c = 0; c < di; ++c) {
        const double gate = gated ? silu(zxbcdt[detail::sz(row * dip + c)]) : 1.0;
        v[detail::sz(c)] = y[detail::sz(row * di + c)] * gate;
      }
      for (int grp = 0; grp < g; ++grp) {
        double ms = 0.0;
        for (int c = grp * gs; c < (grp + 1) * gs; ++c) ms += v[detail::sz(c)] * v[detail::sz(c)];
        ms /= gs;
        const double inv = 1.0 / std::sqrt(ms + d.norm_eps);
        for (int c = grp * gs; c < (grp + 1) * gs; ++c)
          r[detail::sz(row * di + c)] = v[detail::sz(c)] * inv * w.norm_w[detail::sz(c)];
      }
    }
  return r;
}

// (b, L, d_inner) -> (b, L, d_model): out[r, o] = sum_c out_proj[o, c] v[r, c]
inline std::vector<double> out_projection(const dims& d, const mixer_weights& w, const std::vector<double>& v) {
  detail::check_dims(d);
  const int rows = d.batch * d.seqlen, dm = d.d_model, di = d.d_inner();
  detail::check_size(v, detail::sz(1LL * rows * di), "v");
  detail::check_size(w.out_proj, detail::sz(1LL * dm * di), "out_proj");
  std::vector<double> r(detail::sz(1LL * rows * dm), 0.0);
  for (int row = 0; row < rows; ++row)
    for (int o = 0; o < dm; ++o) {
      double acc = 0.0;
      for (int c = 0; c < di; ++c) acc += w.out_proj[detail::sz(1LL * o * di + c)] * v[detail::sz(1LL * row * di + c)];
      r[detail::sz(1LL * row * dm + o)] = acc;
    }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

// Full TransMamba mixer. P in [0, L] (P > L means L, P < 0 throws std::invalid_argument).
// Attention for t < P; at P the state = initial_state decayed through the prefix + converter state
// (= the recurrence state after token P-1); SSM recurrence for t >= P; gated norm; out_proj.
// final_state = state after the last token (P == L: the converter state at L).
inline mixer_result mixer_forward(const dims& d, const variant& var, const mixer_weights& w,
                                  const std::vector<double>& u, int P,
                                  const std::vector<double>& initial_state = {}) {
  check_weights(d, w);
  if (P < 0) throw std::invalid_argument("transmamba::reference::mixer_forward: P < 0");
  const int L = d.seqlen, h = d.nheads(), p = d.headdim, n = d.d_state, nb = d.batch;
  if (P > L) P = L;
  const std::size_t state_size = detail::sz(1LL * nb * h * p * n);
  if (!initial_state.empty()) detail::check_size(initial_state, state_size, "initial_state");

  const auto zxbcdt = in_projection(d, w, u);
  const auto xBC = conv_silu(d, w, zxbcdt);
  const auto dt = time_steps(d, w, zxbcdt);
  const auto x = x_of(d, xBC);
  const auto B = B_of(d, xBC);
  const auto C = C_of(d, xBC);
  const auto A = A_of(w);

  // attention prefix
  const auto y_att = attention(d, var, x, B, C, w.D, P);

  // state at the TransPoint: converter + decayed initial state
  auto S = converter_state(d, x, B, dt, A, P);
  if (!initial_state.empty()) {
    for (int b = 0; b < nb; ++b)
      for (int k = 0; k < h; ++k) {
        double decay = 1.0;
        for (int m = 0; m < P; ++m) decay *= std::exp(dt[detail::sz((1LL * b * L + m) * h + k)] * A[detail::sz(k)]);
        for (int e = 0; e < p * n; ++e) {
          const std::size_t idx = detail::sz((1LL * b * h + k) * p * n + e);
          S[idx] += decay * initial_state[idx];
        }
      }
  }

  // SSM suffix
  auto ssm = ssm_recurrence(d, x, B, C, dt, A, w.D, S, P, L);

  std::vector<double> y(ssm.y.size(), 0.0);
  for (int b = 0; b < nb; ++b)
    for (int t = 0; t < L; ++t)
      for (int c = 0; c < h * p; ++c) {
        const std::size_t idx = detail::sz((1LL * b * L + t) * h * p + c);
        y[idx] = t < P ? y_att[idx] : ssm.y[idx];
      }

  const auto v = gated_rmsnorm(d, var, w, y, zxbcdt, P);
  return {out_projection(d, w, v), std::move(ssm.final_state)};
}

// The pure Mamba2 layer, written out on its own (NOT via mixer_forward): recurrence on all tokens,
// gate silu(z) on all tokens, grouped RMSNorm, out_proj.
inline mixer_result mamba2_forward(const dims& d, const mixer_weights& w, const std::vector<double>& u,
                                   const std::vector<double>& initial_state = {}) {
  check_weights(d, w);
  const int L = d.seqlen, h = d.nheads(), p = d.headdim, n = d.d_state, g = d.ngroups, nb = d.batch;
  const int di = d.d_inner(), dip = d.d_in_proj(), cd = d.conv_dim(), hpg = h / g, gs = di / g;
  const std::size_t state_size = detail::sz(1LL * nb * h * p * n);
  std::vector<double> S(state_size, 0.0);
  if (!initial_state.empty()) {
    detail::check_size(initial_state, state_size, "initial_state");
    S = initial_state;
  }
  const auto zxbcdt = in_projection(d, w, u);
  const auto xBC = conv_silu(d, w, zxbcdt);
  const auto dt = time_steps(d, w, zxbcdt);

  std::vector<double> v(detail::sz(1LL * nb * L * di), 0.0);
  std::vector<double> yrow(detail::sz(di));
  for (int b = 0; b < nb; ++b)
    for (int t = 0; t < L; ++t) {
      const long long row = 1LL * b * L + t;
      // SSM step for every head, reading x, B, C straight from xBC
      for (int k = 0; k < h; ++k) {
        const int grp = k / hpg;
        const double dtv = dt[detail::sz(row * h + k)];
        const double a = std::exp(dtv * -std::exp(w.A_log[detail::sz(k)]));
        for (int i = 0; i < p; ++i) {
          const double xv = xBC[detail::sz(row * cd + k * p + i)];
          double acc = 0.0;
          for (int j = 0; j < n; ++j) {
            const double Bv = xBC[detail::sz(row * cd + di + grp * n + j)];
            const double Cv = xBC[detail::sz(row * cd + di + g * n + grp * n + j)];
            double& s = S[detail::sz(((1LL * b * h + k) * p + i) * n + j)];
            s = a * s + dtv * xv * Bv;
            acc += s * Cv;
          }
          yrow[detail::sz(k * p + i)] = acc + w.D[detail::sz(k)] * xv;
        }
      }
      // gate and grouped RMSNorm
      for (int c = 0; c < di; ++c) yrow[detail::sz(c)] *= silu(zxbcdt[detail::sz(row * dip + c)]);
      for (int grp = 0; grp < g; ++grp) {
        double ss = 0.0;
        for (int c = grp * gs; c < (grp + 1) * gs; ++c) ss += yrow[detail::sz(c)] * yrow[detail::sz(c)];
        const double rms = std::sqrt(ss / gs + d.norm_eps);
        for (int c = grp * gs; c < (grp + 1) * gs; ++c)
          v[detail::sz(row * di + c)] = yrow[detail::sz(c)] / rms * w.norm_w[detail::sz(c)];
      }
    }
  return {out_projection(d, w, v), std::move(S)};
}

// RMSNorm over rows of `width`: u / sqrt(mean(u^2) + eps) * w
inline std::vector<double> rmsnorm(const std::vector<double>& u, const std::vector<double>& w, int width, double eps) {
  detail::require(width >= 1 && u.size() % detail::sz(width) == 0, "rmsnorm: size not a multiple of width");
  detail::check_size(w, detail::sz(width), "rmsnorm weight");
  std::vector<double> r(u.size());
  const std::size_t rows = u.size() / detail::sz(width);
  for (std::size_t row = 0; row < rows; ++row) {
    double ss = 0.0;
    for (int c = 0; c < width; ++c) ss += u[row * width + c] * u[row * width + c];
    const double inv = 1.0 / std::sqrt(ss / width + eps);
    for (int c = 0; c < width; ++c) r[row * width + c] = u[row * width + c] * inv * w[detail::sz(c)];
  }
  return r;
}

// Pre-norm residual block: u + mixer(rmsnorm(u) * block_norm_w), eps = d.norm_eps. (b, L, d_model)
inline std::vector<double> residual_block(const dims& d, const variant& var, const mixer_weights& w,
                                          const std::vector<double>& block_norm_w, const std::vector<double>& u,
                                          int P) {
  const auto hn = rmsnorm(u, block_norm_w, d.d_model, d.norm_eps);
  const auto m = mixer_forward(d, var, w, hn, P).out;
  std::vector<double> r(u.size());
  for (std::size_t i = 0; i < u.size(); ++i) r[i] = u[i] + m[i];
  return r;
}

// SwiGLU MLP block (LLaMA style): u + down(silu(gate(h)) * up(h)), h = rmsnorm(u) * norm_w. u (rows, d_model)
inline std::vector<double> mlp_block(const mlp_weights& w, int d_model, int d_ff, double eps,
                                     const std::vector<double>& u, int rows) {
  detail::require(d_model >= 1 && d_ff >= 1 && rows >= 0, "mlp_block: bad sizes");
  detail::check_size(u, detail::sz(1LL * rows * d_model), "u");
  detail::check_size(w.gate_proj, detail::sz(1LL * d_ff * d_model), "gate_proj");
  detail::check_size(w.up_proj, detail::sz(1LL * d_ff * d_model), "up_proj");
  detail::check_size(w.down_proj, detail::sz(1LL * d_model * d_ff), "down_proj");
  const auto hn = rmsnorm(u, w.norm_w, d_model, eps);
  std::vector<double> r(u.size()), act(detail::sz(d_ff));
  for (int row = 0; row < rows; ++row) {
    for (int f = 0; f < d_ff; ++f) {
      double gsum = 0.0, usum = 0.0;
      for (int c = 0; c < d_model; ++c) {
        const double hv = hn[detail::sz(1LL * row * d_model + c)];
        gsum += w.gate_proj[detail::sz(1LL * f * d_model + c)] * hv;
        usum += w.up_proj[detail::sz(1LL * f * d_model + c)] * hv;
      }
      act[detail::sz(f)] = silu(gsum) * usum;
    }
    for (int o = 0; o < d_model; ++o) {
      double acc = 0.0;
      for (int f = 0; f < d_ff; ++f) acc += w.down_proj[detail::sz(1LL * o * d_ff + f)] * act[detail::sz(f)];
      r[detail::sz(1LL * row * d_model + o)] = u[detail::sz(1LL * row * d_model + o)] + acc;
    }
  }
  return r;
}

}  // namespace transmamba::reference
