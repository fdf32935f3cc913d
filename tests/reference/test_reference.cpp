// Self-checks of the float64 oracle in reference.hpp. Each check compares two independently written
// paths (or hand-derived numbers), so a bug in either side makes it fail.
#include <doctest/doctest.h>

#include "reference/reference.hpp"

#include <cmath>
#include <stdexcept>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_reference_reference {

namespace ref = transmamba::reference;

namespace {

ref::dims small_dims(int ngroups = 2, int batch = 2, int L = 13) {
  ref::dims d;
  d.batch = batch;
  d.seqlen = L;
  d.d_model = 16;
  d.expand = 2;   // d_inner 32
  d.headdim = 8;  // 4 heads
  d.d_state = 8;
  d.ngroups = ngroups;
  d.d_conv = 4;
  return d;
}

struct parts {
  std::vector<double> zxbcdt, xBC, dt, x, B, C, A;
};

parts make_parts(const ref::dims& d, const ref::mixer_weights& w, const std::vector<double>& u) {
  parts s;
  s.zxbcdt = ref::in_projection(d, w, u);
  s.xBC = ref::conv_silu(d, w, s.zxbcdt);
  s.dt = ref::time_steps(d, w, s.zxbcdt);
  s.x = ref::x_of(d, s.xBC);
  s.B = ref::B_of(d, s.xBC);
  s.C = ref::C_of(d, s.xBC);
  s.A = ref::A_of(w);
  return s;
}

std::vector<double> rows_from(const std::vector<double>& v, const ref::dims& d, int width, int t0) {
  // rows t >= t0 of every batch of a (b, L, width) tensor
  std::vector<double> r;
  for (int b = 0; b < d.batch; ++b)
    for (int t = t0; t < d.seqlen; ++t)
      for (int c = 0; c < width; ++c) r.push_back(v[static_cast<std::size_t>((b * d.seqlen + t) * width + c)]);
  return r;
}

std::vector<double> state_of(const ref::dims& d, std::uint64_t seed) {
  return ref::random_vector(static_cast<std::size_t>(d.batch * d.nheads() * d.headdim * d.d_state), seed, -1.0, 1.0);
}

}  // namespace

TEST_CASE("reference: random_weights is deterministic and well conditioned") {
  const auto d = small_dims();
  const auto w1 = ref::random_weights(d, 7), w2 = ref::random_weights(d, 7), w3 = ref::random_weights(d, 8);
  CHECK(w1.in_proj == w2.in_proj);
  CHECK(w1.dt_bias == w2.dt_bias);
  CHECK(w1.in_proj != w3.in_proj);
  CHECK(w1.in_proj.size() == static_cast<std::size_t>(d.d_in_proj() * d.d_model));
  CHECK(d.d_in_proj() == 2 * 32 + 2 * 2 * 8 + 4);
  for (double b : w1.dt_bias) {
    const double dt = ref::softplus(b);
    CHECK(dt >= 1e-3 * (1 - 1e-12));
    CHECK(dt <= 0.1 * (1 + 1e-12));
  }
  for (double a : w1.A_log) {
    CHECK(std::exp(a) >= 1.0 - 1e-12);
    CHECK(std::exp(a) <= 16.0 + 1e-12);
  }
}

TEST_CASE("reference: max_relative_error") {
  CHECK(ref::max_relative_error({1.0, 2.0}, {1.0, 2.0}) == 0.0);
  CHECK(ref::max_relative_error({1.0, 2.5}, {1.0, 2.0}) == doctest::Approx(0.25));
  CHECK(std::isinf(ref::max_relative_error({1.0}, {1.0, 2.0})));
  CHECK(std::isinf(ref::max_relative_error({std::nan(""), 2.0}, {1.0, 2.0})));
  CHECK(std::isinf(ref::max_relative_error({INFINITY, 2.0}, {1.0, 2.0})));
  const float f[3] = {1.5f, -2.0f, 0.25f};
  CHECK(ref::to_double(f, 3) == std::vector<double>{1.5, -2.0, 0.25});
}

TEST_CASE("reference: (1) mixer_forward with P = 0 equals the separately written mamba2_forward") {
  for (int g : {1, 2, 4}) {
    const auto d = small_dims(g);
    const auto w = ref::random_weights(d, 11 + g);
    const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 100 + g);
    const ref::variant var;
    auto a = ref::mixer_forward(d, var, w, u, 0);
    auto b = ref::mamba2_forward(d, w, u);
    CHECK(ref::max_relative_error(a.out, b.out) <= 1e-12);
    CHECK(ref::max_relative_error(a.final_state, b.final_state) <= 1e-12);
    // with an initial state
    const auto s0 = state_of(d, 200 + g);
    a = ref::mixer_forward(d, var, w, u, 0, s0);
    b = ref::mamba2_forward(d, w, u, s0);
    CHECK(ref::max_relative_error(a.out, b.out) <= 1e-12);
    CHECK(ref::max_relative_error(a.final_state, b.final_state) <= 1e-12);
    // the initial state matters (else the check above would be vacuous)
    CHECK(ref::max_relative_error(b.out, ref::mamba2_forward(d, w, u).out) > 1e-6);
  }
}

TEST_CASE("reference: (2) converter_state(P) equals the recurrence state after P tokens") {
  for (int g : {1, 2}) {
    const auto d = small_dims(g);
    const auto w = ref::random_weights(d, 21);
    const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 22);
    const auto s = make_parts(d, w, u);
    for (int P : {0, 1, 2, 5, 8, 12, 13}) {
      CAPTURE(P);
      const auto conv = ref::converter_state(d, s.x, s.B, s.dt, s.A, P);
      const auto rec = ref::ssm_recurrence(d, s.x, s.B, s.C, s.dt, s.A, w.D, {}, 0, P);
      CHECK(ref::max_relative_error(conv, rec.final_state) <= 1e-12);
      if (P == 0) {
        for (double v : conv) CHECK(v == 0.0);
      } else {
        double mx = 0;
        for (double v : conv) mx = std::max(mx, std::abs(v));
        CHECK(mx > 1e-6);
      }
      // the y rows outside [0, P) are left at 0
      const auto tail = rows_from(rec.y, d, d.d_inner(), P);
      for (double v : tail) CHECK(v == 0.0);
    }
    // P > L clamps to L
    CHECK(ref::converter_state(d, s.x, s.B, s.dt, s.A, 100) == ref::converter_state(d, s.x, s.B, s.dt, s.A, d.seqlen));
  }
}

TEST_CASE("reference: recurrence split in two runs through its state") {
  const auto d = small_dims(2);
  const auto w = ref::random_weights(d, 31);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 32);
  const auto s = make_parts(d, w, u);
  const auto s0 = state_of(d, 33);
  const auto full = ref::ssm_recurrence(d, s.x, s.B, s.C, s.dt, s.A, w.D, s0);
  const auto first = ref::ssm_recurrence(d, s.x, s.B, s.C, s.dt, s.A, w.D, s0, 0, 6);
  const auto second = ref::ssm_recurrence(d, s.x, s.B, s.C, s.dt, s.A, w.D, first.final_state, 6);
  std::vector<double> y = first.y;
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += second.y[i];
  CHECK(ref::max_relative_error(y, full.y) <= 1e-13);
  CHECK(ref::max_relative_error(second.final_state, full.final_state) <= 1e-13);
  // empty range: final state is the initial state
  CHECK(ref::ssm_recurrence(d, s.x, s.B, s.C, s.dt, s.A, w.D, s0, 4, 4).final_state == s0);
}

TEST_CASE("reference: (3) attention over a single token returns x_0 + D x_0 exactly") {
  for (int g : {1, 2}) {
    const auto d = small_dims(g);
    const auto w = ref::random_weights(d, 41);
    const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 42);
    const auto s = make_parts(d, w, u);
    for (bool rope : {false, true})
      for (bool dskip : {true, false}) {
        ref::variant var;
        var.rope = rope;
        var.d_skip_attention = dskip;
        const auto y = ref::attention(d, var, s.x, s.B, s.C, w.D, 1);
        const int h = d.nheads(), p = d.headdim, L = d.seqlen;
        for (int b = 0; b < d.batch; ++b)
          for (int t = 0; t < L; ++t)
            for (int k = 0; k < h; ++k)
              for (int i = 0; i < p; ++i) {
                const auto idx = static_cast<std::size_t>(((b * L + t) * h + k) * p + i);
                if (t == 0) {
                  const double x0 = s.x[idx];
                  const double want = 1.0 * x0 + (dskip ? w.D[static_cast<std::size_t>(k)] * x0 : 0.0);
                  CHECK(y[idx] == want);
                } else {
                  CHECK(y[idx] == 0.0);
                }
              }
      }
  }
}

TEST_CASE("reference: attention on two tokens matches a hand softmax, shared by the heads of a group") {
  // L = 2, g = 1, 2 heads sharing B, C; check token 1 against softmax written out by hand.
  ref::dims d;
  d.batch = 1;
  d.seqlen = 2;
  d.d_model = 2;
  d.expand = 2;   // d_inner 4
  d.headdim = 2;  // h = 2
  d.d_state = 2;
  d.ngroups = 1;
  const std::vector<double> x = {1, 2, 3, 4,     // t=0: head0 (1,2) head1 (3,4)
                                 -1, 0, 5, -2};  // t=1
  const std::vector<double> B = {1, 0, 0, 2};    // B_0 = (1,0), B_1 = (0,2)
  const std::vector<double> C = {9, 9, 1, 1};    // C_1 = (1,1)
  const std::vector<double> D = {0.5, 0.25};
  ref::variant var;  // scale 1/sqrt(2)
  const auto y = ref::attention(d, var, x, B, C, D, 2);
  // s_10 = (1*1 + 1*0)/sqrt2, s_11 = (0 + 2)/sqrt2
  const double s0 = 1 / std::sqrt(2.0), s1 = 2 / std::sqrt(2.0);
  const double p0 = std::exp(s0) / (std::exp(s0) + std::exp(s1)), p1 = 1 - p0;
  CHECK(y[4] == doctest::Approx(p0 * 1 + p1 * -1 + 0.5 * -1).epsilon(1e-14));
  CHECK(y[5] == doctest::Approx(p0 * 2 + p1 * 0 + 0.5 * 0).epsilon(1e-14));
  CHECK(y[6] == doctest::Approx(p0 * 3 + p1 * 5 + 0.25 * 5).epsilon(1e-14));
  CHECK(y[7] == doctest::Approx(p0 * 4 + p1 * -2 + 0.25 * -2).epsilon(1e-14));
  // explicit scale
  var.scale = 2.0;
  const auto y2 = ref::attention(d, var, x, B, C, D, 2);
  const double q0 = std::exp(2.0) / (std::exp(2.0) + std::exp(4.0));
  CHECK(y2[4] == doctest::Approx(q0 * 1 + (1 - q0) * -1 + 0.5 * -1).epsilon(1e-14));
}

TEST_CASE("reference: RoPE is relative and only affects the attention prefix") {
  const int n = 8;
  const auto q = ref::random_vector(n, 51), k = ref::random_vector(n, 52);
  auto dot_at = [&](int tq, int tk) {
    auto a = q, b = k;
    ref::rope_rotate(a.data(), n, tq, 10000.0);
    ref::rope_rotate(b.data(), n, tk, 10000.0);
    double s = 0;
    for (int i = 0; i < n; ++i) s += a[static_cast<std::size_t>(i)] * b[static_cast<std::size_t>(i)];
    return s;
  };
  CHECK(dot_at(7, 3) == doctest::Approx(dot_at(11, 7)).epsilon(1e-12));
  CHECK(std::abs(dot_at(7, 3) - dot_at(7, 4)) > 1e-6);
  // rotate-half convention: position 1, pair (0, n/2) rotates by angle 1 (freq_0 = 1)
  std::vector<double> v(n, 0.0);
  v[0] = 1.0;
  ref::rope_rotate(v.data(), n, 1.0, 10000.0);
  CHECK(v[0] == doctest::Approx(std::cos(1.0)));
  CHECK(v[n / 2] == doctest::Approx(std::sin(1.0)));
  // pair (1, 1 + n/2) at position 1 rotates by theta^(-2/n)
  std::vector<double> v1(n, 0.0);
  v1[1] = 1.0;
  ref::rope_rotate(v1.data(), n, 1.0, 10000.0);
  CHECK(v1[1] == doctest::Approx(std::cos(std::pow(10000.0, -2.0 / n))));
  CHECK(v1[1 + n / 2] == doctest::Approx(std::sin(std::pow(10000.0, -2.0 / n))));

  const auto d = small_dims(2);
  const auto w = ref::random_weights(d, 53);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 54);
  ref::variant plain, roped;
  roped.rope = true;
  const int P = 6;
  const auto a = ref::mixer_forward(d, plain, w, u, P), b = ref::mixer_forward(d, roped, w, u, P);
  CHECK(ref::max_relative_error(rows_from(b.out, d, d.d_model, P), rows_from(a.out, d, d.d_model, P)) <= 1e-14);
  CHECK(ref::max_relative_error(a.final_state, b.final_state) <= 1e-14);
  CHECK(ref::max_relative_error(b.out, a.out) > 1e-6);
}

TEST_CASE("reference: (4) hand-computed recurrence, L = 2, n = p = h = 1") {
  // x = (1, 2), B = (1, 0.5), C = (2, 1), dt = (0.5, 1), A = -2 ln 2, D = 0.5
  // a_0 = exp(0.5 * -2 ln2) = 1/2, a_1 = exp(1 * -2 ln2) = 1/4
  // from S = 0:  S_0 = 1/2*0 + 0.5*1*1 = 0.5            y_0 = 0.5*2 + 0.5*1 = 1.5
  //              S_1 = 1/4*0.5 + 1*2*0.5 = 1.125        y_1 = 1.125*1 + 0.5*2 = 2.125
  // from S = 4:  S_0 = 1/2*4 + 0.5 = 2.5                y_0 = 2.5*2 + 0.5 = 5.5
  //              S_1 = 1/4*2.5 + 1 = 1.625              y_1 = 1.625 + 1 = 2.625
  // converter at P = 2: a_1 * dt_0 x_0 B_0 + dt_1 x_1 B_1 = 0.25*0.5 + 1 = 1.125 (= S_1 from 0)
  // converter at P = 1: dt_0 x_0 B_0 = 0.5
  ref::dims d;
  d.batch = 1;
  d.seqlen = 2;
  d.d_model = 1;
  d.expand = 1;
  d.headdim = 1;
  d.d_state = 1;
  d.ngroups = 1;
  REQUIRE(d.nheads() == 1);
  const std::vector<double> x = {1, 2}, B = {1, 0.5}, C = {2, 1}, dt = {0.5, 1}, A = {-2 * std::log(2.0)},
                            D = {0.5};
  const double tol = 1e-14;
  auto r = ref::ssm_recurrence(d, x, B, C, dt, A, D, {});
  REQUIRE(r.y.size() == 2);
  CHECK(r.y[0] == doctest::Approx(1.5).epsilon(tol));
  CHECK(r.y[1] == doctest::Approx(2.125).epsilon(tol));
  CHECK(r.final_state[0] == doctest::Approx(1.125).epsilon(tol));
  r = ref::ssm_recurrence(d, x, B, C, dt, A, D, {4.0});
  CHECK(r.y[0] == doctest::Approx(5.5).epsilon(tol));
  CHECK(r.y[1] == doctest::Approx(2.625).epsilon(tol));
  CHECK(r.final_state[0] == doctest::Approx(1.625).epsilon(tol));
  // second token only, from the state after the first
  r = ref::ssm_recurrence(d, x, B, C, dt, A, D, {2.5}, 1, 2);
  CHECK(r.y[0] == 0.0);
  CHECK(r.y[1] == doctest::Approx(2.625).epsilon(tol));
  CHECK(ref::converter_state(d, x, B, dt, A, 2)[0] == doctest::Approx(1.125).epsilon(tol));
  CHECK(ref::converter_state(d, x, B, dt, A, 1)[0] == doctest::Approx(0.5).epsilon(tol));
  CHECK(ref::converter_state(d, x, B, dt, A, 0)[0] == 0.0);
}

TEST_CASE("reference: (5) tokens >= P of mixer_forward equal mamba2_forward") {
  for (int g : {1, 2}) {
    const auto d = small_dims(g);
    const auto w = ref::random_weights(d, 61 + g);
    const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 62);
    const auto s0 = state_of(d, 63);
    for (bool with_state : {false, true}) {
      const std::vector<double> init = with_state ? s0 : std::vector<double>{};
      const auto m2 = ref::mamba2_forward(d, w, u, init);
      for (int P : {1, 2, 3, 4, 7, 12, 13}) {
        CAPTURE(g);
        CAPTURE(P);
        CAPTURE(with_state);
        for (bool gate_att : {false, true}) {
          ref::variant var;
          var.gate_attention = gate_att;
          const auto tm = ref::mixer_forward(d, var, w, u, P, init);
          CHECK(ref::max_relative_error(rows_from(tm.out, d, d.d_model, P), rows_from(m2.out, d, d.d_model, P)) <=
                1e-12);
          CHECK(ref::max_relative_error(tm.final_state, m2.final_state) <= 1e-12);
          // the prefix really is attention: token P-1 differs from the SSM output
          const auto pre_tm = rows_from(tm.out, d, d.d_model, P - 1), pre_m2 = rows_from(m2.out, d, d.d_model, P - 1);
          CHECK(ref::max_relative_error(pre_tm, pre_m2) > 1e-6);
        }
      }
    }
    // P == L: final state is the converter state at L
    const auto s = make_parts(d, w, u);
    const auto all_att = ref::mixer_forward(d, ref::variant{}, w, u, d.seqlen);
    CHECK(ref::max_relative_error(all_att.final_state, ref::converter_state(d, s.x, s.B, s.dt, s.A, d.seqlen)) <=
          1e-12);
    // P > L means L; P < 0 throws
    const auto over = ref::mixer_forward(d, ref::variant{}, w, u, d.seqlen + 5);
    CHECK(over.out == all_att.out);
    CHECK_THROWS_AS(ref::mixer_forward(d, ref::variant{}, w, u, -1), std::invalid_argument);
  }
}

TEST_CASE("reference: mixer is causal (a prefix of the input gives a prefix of the output)") {
  auto d = small_dims(2, 1, 13);
  const auto w = ref::random_weights(d, 71);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 72);
  const int P = 5;
  const auto full = ref::mixer_forward(d, ref::variant{}, w, u, P);
  for (int Lp : {3, 5, 9}) {
    auto dp = d;
    dp.seqlen = Lp;
    const std::vector<double> up(u.begin(), u.begin() + Lp * d.d_model);
    const auto part = ref::mixer_forward(dp, ref::variant{}, w, up, P);
    const std::vector<double> want(full.out.begin(), full.out.begin() + Lp * d.d_model);
    CHECK(ref::max_relative_error(part.out, want) <= 1e-13);
  }
}

TEST_CASE("reference: conv, dt clamp, z/x/B/C views") {
  auto d = small_dims(2, 1, 5);
  const auto w = ref::random_weights(d, 81);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 82);
  const auto zx = ref::in_projection(d, w, u);
  const auto xBC = ref::conv_silu(d, w, zx);
  const int dip = d.d_in_proj(), cd = d.conv_dim(), di = d.d_inner(), K = d.d_conv;
  // token 0 sees only itself (weight index K-1); token 1 sees tokens 0 and 1 (weights K-2, K-1)
  for (int c = 0; c < cd; ++c) {
    const auto cc = static_cast<std::size_t>(c);
    const double pre0 = w.conv_b[cc] + w.conv_w[cc * K + K - 1] * zx[static_cast<std::size_t>(di + c)];
    CHECK(xBC[cc] == doctest::Approx(ref::silu(pre0)).epsilon(1e-14));
    const double pre1 = w.conv_b[cc] + w.conv_w[cc * K + K - 2] * zx[static_cast<std::size_t>(di + c)] +
                        w.conv_w[cc * K + K - 1] * zx[static_cast<std::size_t>(dip + di + c)];
    CHECK(xBC[static_cast<std::size_t>(cd + c)] == doctest::Approx(ref::silu(pre1)).epsilon(1e-14));
  }
  // views
  const auto B = ref::B_of(d, xBC), C = ref::C_of(d, xBC), z = ref::z_of(d, zx);
  const int n = d.d_state, g = d.ngroups;
  CHECK(B[static_cast<std::size_t>(1 * g * n + 1 * n + 3)] == xBC[static_cast<std::size_t>(1 * cd + di + 1 * n + 3)]);
  CHECK(C[static_cast<std::size_t>(1 * g * n + 1 * n + 3)] ==
        xBC[static_cast<std::size_t>(1 * cd + di + g * n + 1 * n + 3)]);
  CHECK(z[static_cast<std::size_t>(di + 5)] == zx[static_cast<std::size_t>(dip + 5)]);
  // dt clamp
  d.dt_min = 0.02;
  d.dt_max = 0.03;
  for (double v : ref::time_steps(d, w, zx)) {
    CHECK(v >= 0.02);
    CHECK(v <= 0.03);
  }
  CHECK(ref::softplus(0.0) == doctest::Approx(std::log(2.0)));
  CHECK(ref::softplus(800.0) == 800.0);
  CHECK(ref::softplus(-800.0) == 0.0);
}

TEST_CASE("reference: (6) gated_rmsnorm normalizes per group, which differs from the whole of d_inner") {
  const auto d = small_dims(4, 1, 4);  // d_inner 32, 4 groups of 8
  const auto w = ref::random_weights(d, 91);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 92);
  const auto zx = ref::in_projection(d, w, u);
  const int di = d.d_inner(), dip = d.d_in_proj(), L = d.seqlen, gs = di / d.ngroups;
  // y with very different scales per group so the grouping shows
  auto y = ref::random_vector(static_cast<std::size_t>(L * di), 93);
  for (int t = 0; t < L; ++t)
    for (int c = 0; c < di; ++c) y[static_cast<std::size_t>(t * di + c)] *= std::pow(10.0, c / gs);
  const int P = 2;
  const auto got = ref::gated_rmsnorm(d, ref::variant{}, w, y, zx, P);
  std::vector<double> whole(got.size());
  for (int t = 0; t < L; ++t) {
    std::vector<double> v(static_cast<std::size_t>(di));
    double ss = 0;
    for (int c = 0; c < di; ++c) {
      const double gate = t >= P ? ref::silu(zx[static_cast<std::size_t>(t * dip + c)]) : 1.0;
      v[static_cast<std::size_t>(c)] = y[static_cast<std::size_t>(t * di + c)] * gate;
      ss += v[static_cast<std::size_t>(c)] * v[static_cast<std::size_t>(c)];
    }
    const double inv = 1 / std::sqrt(ss / di + d.norm_eps);
    for (int c = 0; c < di; ++c)
      whole[static_cast<std::size_t>(t * di + c)] = v[static_cast<std::size_t>(c)] * inv * w.norm_w[static_cast<std::size_t>(c)];
    // each group of got / norm_w has mean square ms/(ms+eps) ~ 1
    for (int grp = 0; grp < d.ngroups; ++grp) {
      double gss = 0, vss = 0;
      for (int c = grp * gs; c < (grp + 1) * gs; ++c) {
        const double r = got[static_cast<std::size_t>(t * di + c)] / w.norm_w[static_cast<std::size_t>(c)];
        gss += r * r;
        vss += v[static_cast<std::size_t>(c)] * v[static_cast<std::size_t>(c)];
      }
      const double ms = vss / gs;
      CHECK(gss / gs == doctest::Approx(ms / (ms + d.norm_eps)).epsilon(1e-12));
      // and the direction within the group is v's
      for (int c = grp * gs; c < (grp + 1) * gs; ++c)
        CHECK(got[static_cast<std::size_t>(t * di + c)] ==
              doctest::Approx(v[static_cast<std::size_t>(c)] / std::sqrt(ms + d.norm_eps) *
                              w.norm_w[static_cast<std::size_t>(c)])
                  .epsilon(1e-12));
    }
  }
  CHECK(ref::max_relative_error(got, whole) > 1e-2);
  // with one group they agree
  auto d1 = d;
  d1.ngroups = 1;
  const auto w1 = ref::random_weights(d1, 91);
  const auto zx1 = ref::in_projection(d1, w1, u);
  const auto got1 = ref::gated_rmsnorm(d1, ref::variant{}, w1, y, zx1, P);
  std::vector<double> whole1(got1.size());
  for (int t = 0; t < L; ++t) {
    double ss = 0;
    std::vector<double> v(static_cast<std::size_t>(di));
    for (int c = 0; c < di; ++c) {
      const double gate = t >= P ? ref::silu(zx1[static_cast<std::size_t>(t * d1.d_in_proj() + c)]) : 1.0;
      v[static_cast<std::size_t>(c)] = y[static_cast<std::size_t>(t * di + c)] * gate;
      ss += v[static_cast<std::size_t>(c)] * v[static_cast<std::size_t>(c)];
    }
    for (int c = 0; c < di; ++c)
      whole1[static_cast<std::size_t>(t * di + c)] =
          v[static_cast<std::size_t>(c)] / std::sqrt(ss / di + d1.norm_eps) * w1.norm_w[static_cast<std::size_t>(c)];
  }
  CHECK(ref::max_relative_error(got1, whole1) <= 1e-13);
  // gate_attention gates the prefix too
  ref::variant ga;
  ga.gate_attention = true;
  const auto gated_all = ref::gated_rmsnorm(d, ga, w, y, zx, P);
  CHECK(ref::max_relative_error(gated_all, ref::gated_rmsnorm(d, ref::variant{}, w, y, zx, 0)) == 0.0);
  CHECK(ref::max_relative_error(gated_all, got) > 1e-6);
}

TEST_CASE("reference: rmsnorm, residual and MLP blocks") {
  // rmsnorm of (3, 4): mean square 12.5
  const auto r = ref::rmsnorm({3, 4, 0, 2}, {1, 2}, 2, 0.0);
  CHECK(r[0] == doctest::Approx(3 / std::sqrt(12.5)));
  CHECK(r[1] == doctest::Approx(8 / std::sqrt(12.5)));
  CHECK(r[2] == doctest::Approx(0.0));
  CHECK(r[3] == doctest::Approx(2 * 2 / std::sqrt(2.0)));

  const auto d = small_dims(2, 1, 6);
  auto w = ref::random_weights(d, 101);
  const auto u = ref::random_vector(static_cast<std::size_t>(d.batch * d.seqlen * d.d_model), 102);
  const auto bw = ref::random_vector(static_cast<std::size_t>(d.d_model), 103, 0.5, 1.5);
  const auto blk = ref::residual_block(d, ref::variant{}, w, bw, u, 3);
  const auto mix = ref::mixer_forward(d, ref::variant{}, w, ref::rmsnorm(u, bw, d.d_model, d.norm_eps), 3).out;
  for (std::size_t i = 0; i < u.size(); ++i) CHECK(blk[i] == doctest::Approx(u[i] + mix[i]).epsilon(1e-14));

  // MLP: one row, d_model 2, d_ff 1, by hand
  ref::mlp_weights m;
  m.gate_proj = {1.0, -1.0};
  m.up_proj = {0.5, 2.0};
  m.down_proj = {1.0, 3.0};
  m.norm_w = {1.0, 1.0};
  const std::vector<double> x = {1.0, 0.0};
  // h = x / sqrt(0.5) = (sqrt2, 0); gate = sqrt2, up = sqrt2/2; act = silu(sqrt2) * sqrt2/2
  const double s2 = std::sqrt(2.0);
  const double act = s2 / (1 + std::exp(-s2)) * s2 / 2;
  const auto out = ref::mlp_block(m, 2, 1, 0.0, x, 1);
  CHECK(out[0] == doctest::Approx(1.0 + act).epsilon(1e-14));
  CHECK(out[1] == doctest::Approx(0.0 + 3 * act).epsilon(1e-14));
}

}  // namespace test_reference_reference
