// decode_attention_kernel<., cuda> (flash-decoding, backend/cuda/decode_attention.cuh) against a
// float64 oracle of the newest row of causal attention (SPEC.md section 3), itself checked against
// the full oracle reference::attention at small caches.
//
// Inputs are drawn in double, rounded to the storage type T, and the oracle reads the rounded values:
// what is measured is the kernel's own float32 arithmetic (scores, softmax statistics and the
// weighted sums are float32 for every T), so the bound is 1e-5 for float and bf16 alike, as in the
// other decode tests. Caches of 1, 7, 100, 1000 and 5000 tokens (off every split and slice size),
// ngroups 1, 2 and h, batch 1 (the session's entry, run) and 16 (run_batch, uniform and ragged
// lengths). Outputs are poisoned with NaN, with NaN rows between the sequences' outputs that must
// stay NaN.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <vector>

#include <transmamba/backend/cuda/decode_attention.cuh>

#include "reference/reference.hpp"
#include "support/oracle_variant.hpp"

namespace {

using namespace transmamba;
using testing::oracle_variant;

template <class T>
double round_to(double v) {
    return static_cast<double>(kernels::cuda::to_float(kernels::cuda::from_float<T>(static_cast<float>(v))));
}

template <class T>
const char* type_name() {
    return std::is_same_v<T, float> ? "float" : "bf16";
}

// One sequence's cache: x (len, h, p), B (len, g, n), and the newest token's query q (g, n).
struct sequence {
    index_t len;
    std::vector<double> x, B, q;
};

// The newest row in float64: y (h, p) = softmax(q B^T * scale) x + D x_newest, RoPE at the
// positions (query at len - 1), one softmax per group.
std::vector<double> newest_row(const reference::variant& var, const sequence& s, index_t h, index_t p, index_t n,
                               index_t g, const std::vector<double>& D) {
    const index_t hg = h / g, len = s.len;
    std::vector<double> y(static_cast<std::size_t>(h * p), 0.0), q(static_cast<std::size_t>(n)),
        k(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(len));
    for (index_t grp = 0; grp < g; ++grp) {
        std::copy_n(s.q.begin() + grp * n, n, q.begin());
        if (var.rope) reference::rope_rotate(q.data(), int(n), double(len - 1), var.rope_theta);
        double top = -std::numeric_limits<double>::infinity();
        for (index_t j = 0; j < len; ++j) {
            std::copy_n(s.B.begin() + (j * g + grp) * n, n, k.begin());
            if (var.rope) reference::rope_rotate(k.data(), int(n), double(j), var.rope_theta);
            double dot = 0;
            for (index_t i = 0; i < n; ++i) dot += q[std::size_t(i)] * k[std::size_t(i)];
            w[std::size_t(j)] = dot * var.scale;
            top = std::max(top, w[std::size_t(j)]);
        }
        double sum = 0;
        for (auto& e : w) sum += (e = std::exp(e - top));
        for (index_t head = grp * hg; head < (grp + 1) * hg; ++head)
            for (index_t c = 0; c < p; ++c) {
                double acc = 0;
                for (index_t j = 0; j < len; ++j) acc += w[std::size_t(j)] * s.x[std::size_t((j * h + head) * p + c)];
                const double skip = var.d_skip_attention ? D[std::size_t(head)] * s.x[std::size_t(((len - 1) * h + head) * p + c)] : 0.0;
                y[std::size_t(head * p + c)] = acc / sum + skip;
            }
    }
    return y;
}

// May rewrite a sequence's float64 inputs before they are rounded to T.
using input_shaper = std::function<void(sequence&, index_t h, index_t p, index_t n, index_t g)>;

struct decode_case {
    index_t batch, len, h, p, n, g;
    bool ragged = false;  // sequence b holds fewer tokens than max_len = len (sequence 0 holds len)
};

template <class T>
std::vector<T> to_storage(const std::vector<double>& v) {
    std::vector<T> r(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) r[i] = kernels::cuda::from_float<T>(float(v[i]));
    return r;
}

template <class T, class Variant>
void check_decode(const decode_case& dc, std::uint64_t seed, double query_range = 2.0, const input_shaper& shape = {}) {
    const index_t batch = dc.batch, L = dc.len, h = dc.h, p = dc.p, n = dc.n, g = dc.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.validate();
    const index_t hp = h * p, gn = g * n;
    // Sequences side by side at strides that are not multiples of the row (one spare token's row
    // after each cache), outputs with a NaN gap of p after each sequence's.
    const index_t key_stride = (L + 1) * gn, value_stride = (L + 1) * hp, y_stride = hp + p;
    std::vector<sequence> seqs(static_cast<std::size_t>(batch));
    std::vector<std::int32_t> lengths(static_cast<std::size_t>(batch));
    auto D = reference::random_vector(static_cast<std::size_t>(h), seed * 97 + 5, 0.5, 1.5);
    for (auto& e : D) e = static_cast<double>(static_cast<float>(e));
    std::vector<T> keys(static_cast<std::size_t>(batch * key_stride)), values(static_cast<std::size_t>(batch * value_stride)),
        query(static_cast<std::size_t>(batch * gn));
    for (index_t b = 0; b < batch; ++b) {
        auto& s = seqs[std::size_t(b)];
        s.len = dc.ragged && b > 0 ? 1 + (b * 7919) % L : L;
        lengths[std::size_t(b)] = static_cast<std::int32_t>(s.len);
        const auto rows = static_cast<std::size_t>(s.len), sd = seed * 1009 + static_cast<std::uint64_t>(b) * 13;
        s.x = reference::random_vector(rows * hp, sd + 1);
        s.B = reference::random_vector(rows * gn, sd + 2);
        s.q = reference::random_vector(static_cast<std::size_t>(gn), sd + 3, -query_range, query_range);
        if (shape) shape(s, h, p, n, g);
        for (auto* v : {&s.x, &s.B, &s.q})
            for (auto& e : *v) e = round_to<T>(e);
        const auto kx = to_storage<T>(s.B), vx = to_storage<T>(s.x), qx = to_storage<T>(s.q);
        std::copy(kx.begin(), kx.end(), keys.begin() + b * key_stride);
        std::copy(vx.begin(), vx.end(), values.begin() + b * value_stride);
        std::copy(qx.begin(), qx.end(), query.begin() + b * gn);
    }
    std::vector<float> D_f(D.begin(), D.end()),
        y_host(static_cast<std::size_t>(batch * y_stride), std::numeric_limits<float>::quiet_NaN());

    using traits = backend_traits<transmamba::cuda>;
    using kernel = decode_attention_kernel<Variant, transmamba::cuda>;
    const cuda_context ctx{};
    device_buffer<T> keys_d(keys.size()), values_d(values.size()), query_d(query.size());
    device_buffer<float> D_d(D_f.size()), y_d(y_host.size());
    device_buffer<std::int32_t> lengths_d(lengths.size());
    traits::copy_from_host(keys.data(), keys_d.data(), keys.size(), ctx);
    traits::copy_from_host(values.data(), values_d.data(), values.size(), ctx);
    traits::copy_from_host(query.data(), query_d.data(), query.size(), ctx);
    traits::copy_from_host(D_f.data(), D_d.data(), D_f.size(), ctx);
    traits::copy_from_host(lengths.data(), lengths_d.data(), lengths.size(), ctx);
    traits::copy_from_host(y_host.data(), y_d.data(), y_host.size(), ctx);
    device_buffer<std::byte> scratch(kernel::template batch_scratch_bytes<T>(cfg, batch, L));
    const workspace_span span = align_span({scratch.data(), scratch.size()});
    if (batch == 1 && !dc.ragged) {  // the session's entry
        kernel::template run<T>(ctx, cfg, query_d.data(), keys_d.data(), values_d.data(), D_d.data(), L, y_d.data(), span);
    } else {
        decode_attention_batch<T> in;
        in.batch = batch;
        in.query = query_d.data();
        in.query_stride = gn;
        in.keys = keys_d.data();
        in.key_stride = key_stride;
        in.values = values_d.data();
        in.value_stride = value_stride;
        in.lengths = dc.ragged ? lengths_d.data() : nullptr;
        in.max_len = L;
        in.y = y_d.data();
        in.y_stride = y_stride;
        kernel::template run_batch<T>(ctx, cfg, in, D_d.data(), span);
    }
    traits::copy_to_host(y_d.data(), y_host.data(), y_host.size(), ctx);
    traits::synchronize(ctx);

    const auto var = oracle_variant<Variant>(n);
    double worst = 0;
    bool gaps_nan = true;
    for (index_t b = 0; b < batch; ++b) {
        const auto first = y_host.begin() + b * y_stride;
        const std::vector<double> got(first, first + hp);
        const double rel = reference::max_relative_error(got, newest_row(var, seqs[std::size_t(b)], h, p, n, g, D));
        worst = std::max(worst, rel);
        if (batch == 1 || b < 3 || rel >= 1e-5) INFO("sequence ", b, " of ", seqs[std::size_t(b)].len, " tokens");
        CHECK(rel < 1e-5);  // NaN or inf give rel = inf
        for (index_t c = hp; c < y_stride; ++c) gaps_nan = gaps_nan && std::isnan(y_host[std::size_t(b * y_stride + c)]);
    }
    std::printf("decode attention cuda %-5s b=%td len=%td%s h=%td p=%td n=%td g=%td: worst rel err %.3e\n",
                type_name<T>(), batch, L, dc.ragged ? " (ragged)" : "", h, p, n, g, worst);
    INFO(type_name<T>(), " batch=", batch, " len=", L, " h=", h, " p=", p, " n=", n, " g=", g);
    CHECK(gaps_nan);
}

}  // namespace

TEST_CASE("decode attention cuda: the float64 newest-row oracle equals the full causal oracle's last row") {
    // The oracle the cases below use, against reference::attention (every row, O(len^2)) at small caches.
    for (const index_t len : {1, 7, 100}) {
        const index_t h = 4, p = 8, n = 16, g = 2;
        reference::dims d;
        d.seqlen = int(len);
        d.d_model = int(h * p);
        d.expand = 1;
        d.headdim = int(p);
        d.d_state = int(n);
        d.ngroups = int(g);
        const auto rows = static_cast<std::size_t>(len);
        sequence s{len, reference::random_vector(rows * h * p, 11 + len), reference::random_vector(rows * g * n, 12 + len), {}};
        const auto C = reference::random_vector(rows * g * n, 13 + len, -2.0, 2.0);
        s.q.assign(C.end() - std::ptrdiff_t(g * n), C.end());
        const auto D = reference::random_vector(static_cast<std::size_t>(h), 14, 0.5, 1.5);
        for (const bool rope : {false, true}) {
            reference::variant v;
            v.rope = rope;
            v.scale = 1.0 / std::sqrt(double(n));
            const auto full = reference::attention(d, v, s.x, s.B, C, D, int(len));
            const std::vector<double> last(full.end() - std::ptrdiff_t(h * p), full.end());
            CHECK(reference::max_relative_error(newest_row(v, s, h, p, n, g, D), last) < 1e-12);
        }
    }
}

TEST_CASE_TEMPLATE("decode attention cuda: caches off every split, ngroups 1, 2 and h, batch 1 and 16", T, float,
                   __nv_bfloat16) {
    std::uint64_t seed = 300;
    for (const index_t len : {1, 7, 100, 1000, 5000})
        for (const index_t g : {1, 2, 4})
            for (const index_t batch : {1, 16}) check_decode<T, paper_attention>({batch, len, 4, 32, 64, g}, ++seed);
    check_decode<T, paper_attention>({16, 1000, 4, 32, 64, 2, true}, ++seed);  // ragged lengths
    check_decode<T, paper_attention>({1, 1000, 8, 64, 128, 2}, ++seed);         // the layer's head shape
    check_decode<T, paper_attention>({2, 300, 80, 64, 32, 1}, ++seed);          // 5120 columns: several slices
    check_decode<T, paper_attention>({1, 33, 3, 10, 20, 3}, ++seed);            // rows off 16 bytes: element loads
    check_decode<T, no_skip_attention>({16, 333, 4, 32, 64, 4, true}, ++seed);
    check_decode<T, rope_attention>({1, 900, 4, 32, 64, 2}, ++seed);
    check_decode<T, rope_attention>({16, 100, 4, 16, 32, 1, true}, ++seed);
}

// Two "needle" keys, far apart and far from the query, each scoring about 25 after rotation while
// every other key scores near 0: the two share the softmax about evenly, so the output follows the
// difference of their scores. Each needle is the query turned to its position and then by a further
// pi/3 in every pair, so that its score sits on the slope of the cosine, not at its top (where an
// angle error only moves it to second order). Angles rounded to float32 are off by up to ~1e-3 rad at
// t ~ 40k: that moves the output by ~5e-4 here, fifty times the bound; random keys alone average
// such errors out.
input_shaper two_needles(std::vector<index_t> needles) {
    return [=](sequence& s, index_t, index_t, index_t n, index_t g) {
        using variant = rope_attention;
        const index_t gn = g * n, half = n / 2, query_pos = s.len - 1;
        const double scale = variant::scale::value(n), turn = std::acos(-1.0) / 3;
        for (auto& b : s.B) b *= 0.01;
        for (index_t grp = 0; grp < g; ++grp) {
            const double* q = s.q.data() + grp * n;
            double q2 = 0;
            for (index_t i = 0; i < n; ++i) q2 += q[i] * q[i];
            const double gain = 25.0 / (scale * q2 * std::cos(turn));
            for (const index_t j : needles) {
                double* k = s.B.data() + j * gn + grp * n;  // R(query_pos - j) q: rotated, it meets q again
                std::copy(q, q + n, k);
                reference::rope_rotate(k, int(n), double(query_pos - j), variant::position::theta);
                for (index_t i = 0; i < half; ++i) {
                    const double a = k[i], b = k[i + half];
                    k[i] = gain * (a * std::cos(turn) - b * std::sin(turn));
                    k[i + half] = gain * (b * std::cos(turn) + a * std::sin(turn));
                }
            }
        }
    };
}

TEST_CASE("decode attention cuda: RoPE at positions past 32k rotates as the float64 oracle") {
    check_decode<float, rope_attention>({1, 40000, 2, 16, 32, 1}, 901, 2.0, two_needles({17001, 30011}));
    check_decode<float, rope_attention>({2, 33000, 4, 16, 64, 2}, 902, 2.0, two_needles({9001, 25013}));
}

TEST_CASE("decode attention cuda: lengths outside [1, max_len] give NaN rows, the others their attention") {
    using kernel = decode_attention_kernel<paper_attention, transmamba::cuda>;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = 64;
    cfg.headdim = 16;
    cfg.d_state = 32;
    cfg.ngroups = 2;
    cfg.validate();
    const index_t L = 50, hp = 64, gn = 64;
    using traits = backend_traits<transmamba::cuda>;
    const cuda_context ctx{};
    std::vector<float> keys(static_cast<std::size_t>(3 * L * gn), 0.5f), values(static_cast<std::size_t>(3 * L * hp), 2.0f),
        query(static_cast<std::size_t>(3 * gn), 1.0f), D(4, 1.0f), y(static_cast<std::size_t>(3 * hp), 0.0f);
    const std::vector<std::int32_t> lengths{L, 0, L + 1};
    device_buffer<float> keys_d(keys.size()), values_d(values.size()), query_d(query.size()), D_d(D.size()), y_d(y.size());
    device_buffer<std::int32_t> lengths_d(3);
    traits::copy_from_host(keys.data(), keys_d.data(), keys.size(), ctx);
    traits::copy_from_host(values.data(), values_d.data(), values.size(), ctx);
    traits::copy_from_host(query.data(), query_d.data(), query.size(), ctx);
    traits::copy_from_host(D.data(), D_d.data(), D.size(), ctx);
    traits::copy_from_host(lengths.data(), lengths_d.data(), 3, ctx);
    device_buffer<std::byte> scratch(kernel::batch_scratch_bytes<float>(cfg, 3, L));
    decode_attention_batch<float> in;
    in.batch = 3;
    in.query = query_d.data();
    in.query_stride = gn;
    in.keys = keys_d.data();
    in.key_stride = L * gn;
    in.values = values_d.data();
    in.value_stride = L * hp;
    in.lengths = lengths_d.data();
    in.max_len = L;
    in.y = y_d.data();
    in.y_stride = hp;
    kernel::run_batch<float>(ctx, cfg, in, D_d.data(), align_span({scratch.data(), scratch.size()}));
    traits::copy_to_host(y_d.data(), y.data(), y.size(), ctx);
    traits::synchronize(ctx);
    // Every value 2 and D 1: softmax-weighted 2 plus D x = 4 for the valid sequence.
    for (index_t c = 0; c < hp; ++c) CHECK(std::abs(y[std::size_t(c)] - 4.0f) < 1e-5f);
    for (index_t c = hp; c < 3 * hp; ++c) CHECK(std::isnan(y[std::size_t(c)]));

    // A scratch span too small is an error, before anything runs.
    in.lengths = nullptr;
    CHECK_THROWS_WITH_AS(kernel::run_batch<float>(ctx, cfg, in, D_d.data(), {scratch.data(), 16}),
                         doctest::Contains("workspace too small"), transmamba::error);
}
