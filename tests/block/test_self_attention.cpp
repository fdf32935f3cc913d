// The attention mixer of hybrid checkpoints (block/self_attention.hpp) against a float64 loop
// written from its definition: GQA (each query head h reads key/value head h / (H / KV)), RoPE
// rotate-half on the first rotary_dim channels of each head, causal softmax; and decoding
// (prefill + steps over its KV cache) against the forward pass.
#include <doctest/doctest.h>

#include <transmamba/backend/cpu.hpp>
#include <transmamba/block/self_attention.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "support/error_of.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_self_attention {

using namespace transmamba;

namespace {

struct case_sizes {
    index_t d, heads, kv_heads, head_dim, rotary_dim;
    double theta, scale;
};

std::vector<double> reference(const case_sizes& s, index_t batch, index_t L, const std::vector<double>& u,
                              const std::vector<double>& wq, const std::vector<double>& wk, const std::vector<double>& wv,
                              const std::vector<double>& wo) {
    const index_t qw = s.heads * s.head_dim, kvw = s.kv_heads * s.head_dim, rows = batch * L;
    const auto project = [&](const std::vector<double>& w, index_t width) {
        std::vector<double> out(static_cast<std::size_t>(rows * width));
        for (index_t r = 0; r < rows; ++r)
            for (index_t o = 0; o < width; ++o) {
                double acc = 0;
                for (index_t i = 0; i < s.d; ++i) acc += u[r * s.d + i] * w[o * s.d + i];
                out[r * width + o] = acc;
            }
        return out;
    };
    auto q = project(wq, qw), k = project(wk, kvw), v = project(wv, kvw);
    const auto rotate = [&](std::vector<double>& x, index_t heads, index_t width) {
        const index_t half = s.rotary_dim / 2;
        for (index_t r = 0; r < rows; ++r) {
            const double t = static_cast<double>(r % L);
            for (index_t h = 0; h < heads; ++h)
                for (index_t i = 0; i < half; ++i) {
                    const double angle = t * std::pow(s.theta, -2.0 * i / static_cast<double>(s.rotary_dim));
                    double& a = x[r * width + h * s.head_dim + i];
                    double& b = x[r * width + h * s.head_dim + i + half];
                    const double a0 = a, b0 = b;
                    a = a0 * std::cos(angle) - b0 * std::sin(angle);
                    b = b0 * std::cos(angle) + a0 * std::sin(angle);
                }
        }
    };
    rotate(q, s.heads, qw);
    rotate(k, s.kv_heads, kvw);
    const double scale = s.scale > 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
    std::vector<double> o(static_cast<std::size_t>(rows * qw));
    for (index_t b = 0; b < batch; ++b)
        for (index_t h = 0; h < s.heads; ++h) {
            const index_t g = h / (s.heads / s.kv_heads);
            for (index_t i = 0; i < L; ++i) {
                std::vector<double> p(static_cast<std::size_t>(i + 1));
                double most = -1e300, total = 0;
                for (index_t j = 0; j <= i; ++j) {
                    double dot = 0;
                    for (index_t c = 0; c < s.head_dim; ++c)
                        dot += q[(b * L + i) * qw + h * s.head_dim + c] * k[(b * L + j) * kvw + g * s.head_dim + c];
                    p[j] = dot * scale;
                    most = std::max(most, p[j]);
                }
                for (auto& x : p) total += (x = std::exp(x - most));
                for (index_t c = 0; c < s.head_dim; ++c) {
                    double acc = 0;
                    for (index_t j = 0; j <= i; ++j) acc += p[j] * v[(b * L + j) * kvw + g * s.head_dim + c];
                    o[(b * L + i) * qw + h * s.head_dim + c] = acc / total;
                }
            }
        }
    std::vector<double> out(static_cast<std::size_t>(rows * s.d));
    for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < s.d; ++j) {
            double acc = 0;
            for (index_t c = 0; c < qw; ++c) acc += o[r * qw + c] * wo[j * qw + c];
            out[r * s.d + j] = acc;
        }
    return out;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
    double most = 0, scale = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        const double d = std::abs(static_cast<double>(got[i]) - want[i]);
        if (std::isnan(d)) return d;
        most = std::max(most, d);
        scale = std::max(scale, std::abs(want[i]));
    }
    return most / scale;
}

}  // namespace

TEST_CASE("self_attention: GQA with partial RoPE matches a float64 loop; decoding matches the forward pass") {
    for (const case_sizes s : {case_sizes{24, 4, 2, 6, 4, 500.0, 0.0}, case_sizes{16, 2, 2, 8, 0, 10000.0, 0.3},
                               case_sizes{20, 5, 1, 4, 4, 10000.0, 0.0}}) {
        CAPTURE(s.heads);
        CAPTURE(s.kv_heads);
        CAPTURE(s.rotary_dim);
        const index_t batch = 2, L = 9;
        self_attention_config cfg;
        cfg.num_heads = s.heads;
        cfg.num_kv_heads = s.kv_heads;
        cfg.head_dim = s.head_dim;
        cfg.rotary_dim = s.rotary_dim;
        cfg.rope_theta = s.theta;
        cfg.scale = s.scale;
        self_attention<float, cpu> layer(cfg, s.d);
        std::mt19937_64 rng(17 + static_cast<unsigned>(s.heads));
        std::uniform_real_distribution<double> unit(-1.0, 1.0);
        std::vector<std::vector<double>> weights;
        layer.for_each_parameter([&](std::string_view, auto& buf, const std::vector<index_t>&) {
            std::vector<double> w(buf.size());
            for (std::size_t i = 0; i < w.size(); ++i) buf.data()[i] = static_cast<float>(w[i] = unit(rng) * 0.5);
            weights.push_back(w);
        });
        std::vector<double> u(static_cast<std::size_t>(batch * L * s.d));
        std::vector<float> uf(u.size());
        for (std::size_t i = 0; i < u.size(); ++i) uf[i] = static_cast<float>(u[i] = unit(rng));
        for (std::size_t i = 0; i < u.size(); ++i) u[i] = static_cast<double>(uf[i]);
        const auto want = reference(s, batch, L, u, weights[0], weights[1], weights[2], weights[3]);

        std::vector<float> out(u.size(), std::nanf(""));
        std::vector<std::byte> ws(std::max(layer.workspace_bytes(batch, L), layer.step_workspace_bytes(L)));
        layer.forward({}, batch, L, uf.data(), out.data(), {ws.data(), ws.size()});
        CHECK(relative_error(out, want) < 1e-5);

        // Sequence 1 decoded: prefill of 4 tokens, then one step per token.
        self_attention<float, cpu>::cache_type cache;
        std::vector<float> decoded(static_cast<std::size_t>(L * s.d), std::nanf(""));
        const float* seq = uf.data() + L * s.d;
        layer.prefill({}, 4, L, seq, decoded.data(), {ws.data(), ws.size()}, cache);
        for (index_t t = 4; t < L; ++t)
            layer.step({}, seq + t * s.d, decoded.data() + t * s.d, {ws.data(), ws.size()}, cache);
        const std::vector<double> want_seq(want.begin() + L * s.d, want.end());
        CHECK(relative_error(decoded, want_seq) < 1e-5);
        CHECK(transmamba::testing::has(transmamba::testing::error_of([&] {
            layer.step({}, seq, decoded.data(), {ws.data(), ws.size()}, cache);
        }), "KV cache holds 9 of 9 tokens"));
    }
}

TEST_CASE("self_attention_config: sizes are validated by name") {
    self_attention_config c;
    c.num_heads = 6;
    c.num_kv_heads = 4;
    c.head_dim = 8;
    CHECK(transmamba::testing::has(transmamba::testing::error_of([&] { c.validate(32); }), "num_kv_heads = 4 does not divide"));
    c.num_kv_heads = 3;
    c.rotary_dim = 5;
    CHECK(transmamba::testing::has(transmamba::testing::error_of([&] { c.validate(32); }), "rotary_dim = 5 must be even"));
}

}  // namespace test_block_self_attention
