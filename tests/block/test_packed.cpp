// Packed variable-length batches (core/sequence_layout.hpp): sequences of different lengths back to
// back in one (1, total) call give, sequence by sequence, the outputs and final states of a forward
// pass over each sequence alone (which tests/block/test_mixer.cpp checks against the float64
// oracle). Lengths 1, below the chunk, across chunk boundaries and below/above the scan's row-wise
// threshold; TransPoints 0, inside some sequences and beyond others, per sequence; the mixer, the
// block, the stack and the language model.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <numeric>
#include <vector>

#include "support/bridge.hpp"
#include "support/error_of.hpp"
#include "reference/reference.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_packed {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

// chunk 16: lengths 1 and 5 (row-wise scan), 16 (one chunk), 37 and 22 (across chunk boundaries).
const std::vector<index_t> lengths{5, 1, 37, 16, 3, 22};

std::vector<index_t> offsets_of(const std::vector<index_t>& lens) {
    std::vector<index_t> cu{0};
    for (index_t n : lens) cu.push_back(cu.back() + n);
    return cu;
}

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0) {
    const auto v = reference::random_vector(n, seed, -scale, scale);
    return std::vector<T>(v.begin(), v.end());
}

template <class T>
double relative_error(const std::vector<T>& got, const std::vector<T>& want) {
    return reference::max_relative_error(std::vector<double>(got.begin(), got.end()),
                                         std::vector<double>(want.begin(), want.end()));
}

// The mixer over a packed batch against one dense pass per sequence, outputs and final states; with
// per_sequence, sequence s runs at points[s], else every sequence at points[0].
template <class T, class Policies>
void check_packed_mixer(const std::vector<index_t>& points, bool per_sequence, bool with_initial, double tol) {
    using A = compute_t<T>;
    const mixer_config cfg = small_config(32, 16, 16, 2, 16);  // 4 heads in 2 groups
    mixer<T, cpu, Policies> layer(cfg);
    randomize(layer.params(), 7);
    const auto cu = offsets_of(lengths);
    const index_t total = cu.back(), d = cfg.d_model, count = index_t(lengths.size());
    const index_t state_elems = cfg.nheads() * cfg.headdim * cfg.d_state;
    const auto u = random_values<T>(std::size_t(total * d), 11);
    const auto init = random_values<A>(std::size_t(count * state_elems), 12, 0.5);

    auto seqs = sequence_layout::packed(cu);
    seqs = per_sequence ? seqs.split_at(std::span<const index_t>(points)) : seqs.split_at(points[0]);
    std::vector<T> out(u.size(), T(-7));
    std::vector<A> final_states(init.size());
    workspace<cpu> ws;
    mixer_state_io<A> io{};
    io.final_state = {final_states.data(), {count, cfg.nheads(), cfg.headdim, cfg.d_state}};
    if (with_initial) io.initial_state = {init.data(), {count, cfg.nheads(), cfg.headdim, cfg.d_state}};
    layer.forward({u.data(), {1, total, d}}, {out.data(), {1, total, d}}, seqs, ws, io);

    for (index_t s = 0; s < count; ++s) {
        const index_t L = lengths[std::size_t(s)], P = per_sequence ? points[std::size_t(s)] : points[0];
        std::vector<T> alone(std::size_t(L * d));
        std::vector<A> state(static_cast<std::size_t>(state_elems));
        mixer_state_io<A> one{};
        one.final_state = {state.data(), {1, cfg.nheads(), cfg.headdim, cfg.d_state}};
        if (with_initial) one.initial_state = {init.data() + s * state_elems, {1, cfg.nheads(), cfg.headdim, cfg.d_state}};
        layer.forward({u.data() + cu[std::size_t(s)] * d, {1, L, d}}, {alone.data(), {1, L, d}}, P, ws, one);
        const std::vector<T> got(out.begin() + cu[std::size_t(s)] * d, out.begin() + cu[std::size_t(s) + 1] * d);
        const std::vector<A> got_state(final_states.begin() + s * state_elems, final_states.begin() + (s + 1) * state_elems);
        CAPTURE(s);
        CAPTURE(L);
        CAPTURE(P);
        CHECK(relative_error(got, alone) <= tol);
        CHECK(relative_error(got_state, state) <= tol);
    }
}

}  // namespace

TEST_CASE_TEMPLATE("packed mixer: each sequence equals its own forward pass", T, double, float) {
    const double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;
    for (index_t P : {0, 4, 20, 100}) {
        CAPTURE(P);
        check_packed_mixer<T, paper_policies>({P}, false, false, tol);
    }
    // Per sequence: all SSM, inside, beyond (all attention), at the end exactly, inside, 0.
    check_packed_mixer<T, paper_policies>({0, 3, 17, 16, 100, 0}, true, true, tol);
}

TEST_CASE("packed mixer: the other scan and RoPE attention keep sequences apart too") {
    check_packed_mixer<double, paper_policies::with_scan<sequential_scan>>({0, 3, 17, 16, 100, 9}, true, true, 1e-10);
    check_packed_mixer<double, paper_policies::with_attention<rope_attention>>({2, 1, 30, 16, 3, 9}, true, false, 1e-10);
}

TEST_CASE("packed mixer: bad cu_seqlens and mismatched shapes are errors naming them") {
    const mixer_config cfg = small_config(32, 16, 16, 2, 16);
    mixer<double, cpu> layer(cfg);
    randomize(layer.params(), 3);
    std::vector<double> u(std::size_t(10 * cfg.d_model)), out(u.size());
    workspace<cpu> ws;
    const std::vector<index_t> bad_start{1, 10}, not_increasing{0, 4, 4, 10}, one{0};
    CHECK(has(error_of([&] { (void)sequence_layout::packed(bad_start); }), "start at 0"));
    CHECK(has(error_of([&] { (void)sequence_layout::packed(not_increasing); }), "increase strictly"));
    CHECK(has(error_of([&] { (void)sequence_layout::packed(one); }), "at least 2"));
    const std::vector<index_t> short_total{0, 4, 9};
    const auto msg = error_of([&] {
        layer.forward({u.data(), {1, 10, cfg.d_model}}, {out.data(), {1, 10, cfg.d_model}},
                      sequence_layout::packed(short_total).split_at(2), ws);
    });
    CHECK(has(msg, "'u'"));
    const std::vector<index_t> cu{0, 4, 10}, three{1, 2, 3};
    CHECK(has(error_of([&] { (void)sequence_layout::packed(cu).split_at(std::span<const index_t>(three)); }),
              "3 for 2 sequences"));
}

TEST_CASE("packed language model (the 1:1 mixer/MLP pattern): each sequence's logits equal its own forward pass") {
    using model_type = language_model<double, cpu, paper_pattern>;
    language_model_config cfg;
    cfg.backbone.mixer = small_config(32, 16, 16, 2, 16);
    cfg.backbone.d_ff = 48;
    cfg.backbone.num_layers = 3;
    cfg.vocab_size = 40;
    cfg.tie_word_embeddings = false;
    model_type model(cfg);
    randomize(model, 5);
    const auto cu = offsets_of(lengths);
    const index_t total = cu.back(), V = cfg.vocab_size;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(total));
    for (index_t i = 0; i < total; ++i) ids[std::size_t(i)] = (i * 11 + 3) % V;

    // A length-dependent policy (each sequence at a fraction of its own length) and a fixed table.
    auto check = [&](const auto& policy) {
        std::vector<double> logits(std::size_t(total * V));
        workspace<cpu> ws;
        model.forward({ids.data(), {1, total}}, cu, {logits.data(), {1, total, V}}, policy, ws);
        for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
            const index_t L = cu[s + 1] - cu[s];
            std::vector<double> alone(std::size_t(L * V));
            model.forward({ids.data() + cu[s], {1, L}}, {alone.data(), {1, L, V}}, policy, ws);
            const std::vector<double> got(logits.begin() + cu[s] * V, logits.begin() + cu[s + 1] * V);
            CAPTURE(s);
            CHECK(reference::max_relative_error(got, alone) < 1e-10);
        }
    };
    check(fraction_of_length{1, 2});
    check(cyclic_transpoints{0, 4, 20});
}

}  // namespace test_block_packed
