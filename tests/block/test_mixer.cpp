// block/mixer.hpp: the whole TransMamba mixer against reference::mixer_forward across shapes,
// TransPoints and policies; the identities of SPEC.md section 3 each as a test of its own; bad
// inputs rejected with a message naming the problem, before anything is written.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_mixer {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

// The oracle's variant for a policy bundle (the scale stays the oracle's default 1/sqrt(n)).
template <class Policies>
reference::variant variant_of() {
    using attention = typename Policies::attention;
    reference::variant v;
    v.gate_attention = attention::gate_by_z;
    v.d_skip_attention = attention::skip_D;
    v.rope = attention::position::rotary;
    if constexpr (attention::position::rotary) v.rope_theta = attention::position::theta;
    return v;
}

// One layer with the oracle's random weights (rounded to T) loaded, and inputs for it.
template <class T, class Policies = paper_policies>
struct layer {
    mixer_config cfg;
    index_t batch, L;
    reference::dims d;
    reference::mixer_weights w;
    std::vector<double> u;
    mixer<T, cpu, Policies> m;

    layer(const mixer_config& c, index_t b, index_t len, std::uint64_t seed)
        : cfg(c), batch(b), L(len), d(to_dims(c, b, len)), w(rounded<T>(reference::random_weights(d, seed))),
          u(rounded<T>(reference::random_vector(static_cast<std::size_t>(b * len * c.d_model), seed + 17))), m(c) {
        load_weights(m.params(), w);
    }

    std::size_t out_size() const { return static_cast<std::size_t>(batch * L * cfg.d_model); }
    std::size_t state_size() const { return static_cast<std::size_t>(batch * cfg.nheads() * cfg.headdim * cfg.d_state); }
    extents<3> out_shape() const { return {batch, L, cfg.d_model}; }
    extents<4> state_shape() const { return {batch, cfg.nheads(), cfg.headdim, cfg.d_state}; }

    struct result {
        std::vector<double> out, final_state;
    };
    // Runs the library; final_state is always requested (it is NaN-prefilled: it must be written).
    result run(index_t P, const std::vector<double>& init, workspace<cpu>& ws) const {
        const auto ut = to_vector<T>(u);
        std::vector<T> out(out_size(), nan_value<T>()), fs(state_size(), nan_value<T>());
        const auto it = to_vector<T>(init);
        mixer_state_io<T> io;
        if (!init.empty()) io.initial_state = tensor_view<const T, 4>(it.data(), state_shape());
        io.final_state = tensor_view<T, 4>(fs.data(), state_shape());
        m.forward(tensor_view<const T, 3>(ut.data(), out_shape()), tensor_view<T, 3>(out.data(), out_shape()), P, ws, io);
        return {reference::to_double(out), reference::to_double(fs)};
    }
    result run(index_t P, const std::vector<double>& init = {}) const {
        workspace<cpu> ws;
        return run(P, init, ws);
    }
    reference::mixer_result oracle(index_t P, const std::vector<double>& init = {}) const {
        return reference::mixer_forward(d, variant_of<Policies>(), w, u, int(P), init);
    }
    std::vector<double> random_state(std::uint64_t seed) const { return testing::random_state<T>(d, seed); }
    // rows [t0, t1) of every sequence of an output
    std::vector<double> rows(const std::vector<double>& out, index_t t0, index_t t1) const {
        return rows_of(out, batch, L, cfg.d_model, t0, t1);
    }
};

struct mixer_shape {
    index_t d_model, headdim, d_state, ngroups, chunk, batch, L;
};

// headdim and d_state from 16 to 128, ngroups 1, 2 and nheads, batch 1 and 3, L from 1 to 1999,
// never a multiple of the chunk (except L = 1 < chunk).
const mixer_shape shapes[] = {
    {16, 16, 16, 1, 16, 1, 1},        // h = 2
    {32, 16, 32, 2, 16, 3, 45},       // h = 4, g = 2
    {32, 16, 16, 4, 16, 1, 70},       // g = h = 4
    {64, 64, 64, 2, 64, 1, 150},      // g = h = 2
    {64, 128, 128, 1, 64, 1, 100},    // h = 1, p = n = 128
    {32, 32, 128, 1, 16, 3, 37},      // h = 2, n = 128
};

// P at 0, 1, a chunk boundary, inside a chunk, L - 1, L and L + 5 (read as L).
std::vector<index_t> transpoints(index_t L, index_t chunk) {
    std::vector<index_t> ps = {0, 1};
    if (chunk < L) ps.push_back(chunk);
    if (chunk + 5 < L) ps.push_back(chunk + 5);
    if (L / 2 > 1 && L / 2 != chunk) ps.push_back(L / 2);
    if (L - 1 > 1) ps.push_back(L - 1);
    ps.push_back(L);
    ps.push_back(L + 5);
    return ps;
}

}  // namespace

TEST_CASE_TEMPLATE("mixer<paper_policies> matches reference::mixer_forward across shapes and TransPoints", T, float,
                   double) {
    std::uint64_t seed = 1;
    for (const auto& s : shapes) {
        CAPTURE(s.d_model);
        CAPTURE(s.headdim);
        CAPTURE(s.d_state);
        CAPTURE(s.ngroups);
        CAPTURE(s.batch);
        CAPTURE(s.L);
        const layer<T> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L, seed += 100);
        workspace<cpu> ws;
        for (index_t P : transpoints(s.L, s.chunk)) {
            CAPTURE(P);
            const auto want = lay.oracle(P);
            const auto got = lay.run(P, {}, ws);
            CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
            CHECK(reference::max_relative_error(got.final_state, want.final_state) <= tolerance<T>());
        }
    }
}

TEST_CASE_TEMPLATE("mixer: a long sequence (L = 1999) with small dims matches the oracle", T, float, double) {
    const layer<T> lay(small_config(16, 16, 16, 1, 64), 1, 1999, 700);
    workspace<cpu> ws;
    for (index_t P : {0, 1000}) {  // 1000 = 15 * 64 + 40: inside a chunk
        CAPTURE(P);
        const auto want = lay.oracle(P);
        const auto got = lay.run(P, {}, ws);
        CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
        CHECK(reference::max_relative_error(got.final_state, want.final_state) <= tolerance<T>());
    }
}

TEST_CASE_TEMPLATE("mixer: a non-zero initial state is carried through attention, converter and scan", T, float,
                   double) {
    std::uint64_t seed = 900;
    for (const auto& s : {shapes[1], shapes[3], shapes[5]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.ngroups);
        CAPTURE(s.L);
        const layer<T> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L, seed += 10);
        const auto init = lay.random_state(seed + 1);
        for (index_t P : {index_t(0), index_t(1), s.chunk + 5, s.L - 1, s.L}) {
            CAPTURE(P);
            const auto want = lay.oracle(P, init);
            const auto got = lay.run(P, init);
            CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
            CHECK(reference::max_relative_error(got.final_state, want.final_state) <= tolerance<T>());
            if (P < s.L) {  // the initial state matters for the SSM tokens (so the check above can fail)
                CHECK(reference::max_relative_error(lay.rows(got.out, P, s.L), lay.rows(lay.oracle(P).out, P, s.L)) >
                      1e-4);
            }
        }
    }
}

namespace {

template <class Policies, class T>
void check_policy(std::uint64_t seed) {
    for (const auto& s : {shapes[1], shapes[3]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.L);
        const layer<T, Policies> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L,
                                     seed += 10);
        const auto init = lay.random_state(seed + 3);
        for (index_t P : {index_t(0), index_t(1), s.chunk, s.chunk + 5, s.L}) {
            CAPTURE(P);
            const auto want = lay.oracle(P, init);
            const auto got = lay.run(P, init);
            CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
            CHECK(reference::max_relative_error(got.final_state, want.final_state) <= tolerance<T>());
        }
    }
}

}  // namespace

TEST_CASE_TEMPLATE("mixer<paper_policies::with_scan<sequential_scan>> matches the oracle", T, float, double) {
    check_policy<paper_policies::with_scan<sequential_scan>, T>(1100);
}

TEST_CASE_TEMPLATE("mixer<with_attention<z_gated_attention>> matches the oracle gating attention tokens", T, float,
                   double) {
    check_policy<paper_policies::with_attention<z_gated_attention>, T>(1200);
}

TEST_CASE_TEMPLATE("mixer<with_attention<no_skip_attention>> matches the oracle", T, float, double) {
    check_policy<paper_policies::with_attention<no_skip_attention>, T>(1300);
}

TEST_CASE_TEMPLATE("mixer<with_attention<rope_attention>> matches the oracle", T, float, double) {
    check_policy<paper_policies::with_attention<rope_attention>, T>(1400);
}

TEST_CASE("mixer: the attention policies change the attention tokens only (so the checks above can fail)") {
    const auto cfg = small_config(32, 16, 32, 2, 16);
    const layer<double> paper(cfg, 1, 40, 1500);
    const layer<double, paper_policies::with_attention<z_gated_attention>> gated(cfg, 1, 40, 1500);
    const layer<double, paper_policies::with_attention<no_skip_attention>> no_skip(cfg, 1, 40, 1500);
    const layer<double, paper_policies::with_attention<rope_attention>> rope(cfg, 1, 40, 1500);
    const auto a = paper.run(20).out;
    for (const auto& other : {gated.run(20).out, no_skip.run(20).out, rope.run(20).out}) {
        // well above the float bound (2e-5); RoPE at positions < 20 moves the outputs by ~1e-3
        CHECK(reference::max_relative_error(paper.rows(other, 0, 20), paper.rows(a, 0, 20)) > 1e-4);
        CHECK(reference::max_relative_error(paper.rows(other, 20, 40), paper.rows(a, 20, 40)) <= 1e-12);
    }
}

// ------------------------------------------------------------------------------------------------
// The identities of SPEC.md section 3
// ------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("identity: P = 0 is a Mamba2 layer (reference::mamba2_forward)", T, float, double) {
    std::uint64_t seed = 2000;
    for (const auto& s : {shapes[1], shapes[2], shapes[4]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.ngroups);
        const layer<T> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L, seed += 10);
        const auto want = reference::mamba2_forward(lay.d, lay.w, lay.u);
        const auto got = lay.run(0);
        CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
        CHECK(reference::max_relative_error(got.final_state, want.final_state) <= tolerance<T>());
        const auto init = lay.random_state(seed + 1);
        const auto want_init = reference::mamba2_forward(lay.d, lay.w, lay.u, init);
        const auto got_init = lay.run(0, init);
        CHECK(reference::max_relative_error(got_init.out, want_init.out) <= tolerance<T>());
        CHECK(reference::max_relative_error(got_init.final_state, want_init.final_state) <= tolerance<T>());
    }
}

TEST_CASE_TEMPLATE("identity: P = L is a pure attention layer", T, float, double) {
    std::uint64_t seed = 2100;
    for (const auto& s : {shapes[1], shapes[3], shapes[5]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.ngroups);
        const layer<T> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L, seed += 10);
        const auto want = lay.oracle(s.L);  // the oracle's attention path for every token
        const auto got = lay.run(s.L);
        CHECK(reference::max_relative_error(got.out, want.out) <= tolerance<T>());
        // and differs from the SSM layer's, token by token (so the check above can fail)
        const auto ssm = lay.run(0);
        for (index_t t = 1; t < s.L; t += 7) {
            CAPTURE(t);
            CHECK(reference::max_relative_error(lay.rows(got.out, t, t + 1), lay.rows(ssm.out, t, t + 1)) > 1e-3);
        }
        // P > L is read as L, bit for bit
        const auto beyond = lay.run(s.L + 5);
        CHECK(beyond.out == got.out);
        CHECK(beyond.final_state == got.final_state);
    }
}

TEST_CASE_TEMPLATE("identity: for any P the tokens >= P equal the pure SSM layer's outputs", T, float, double) {
    // Library against library: the converter hands the SSM exactly the state it would have had.
    std::uint64_t seed = 2200;
    for (const auto& s : {shapes[1], shapes[2], shapes[3], shapes[4]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.ngroups);
        CAPTURE(s.L);
        const layer<T> lay(small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk), s.batch, s.L, seed += 10);
        const auto ssm = lay.run(0);
        for (index_t P : transpoints(s.L, s.chunk)) {
            if (P == 0 || P >= s.L) continue;
            CAPTURE(P);
            const auto got = lay.run(P);
            CHECK(reference::max_relative_error(lay.rows(got.out, P, s.L), lay.rows(ssm.out, P, s.L)) <= tolerance<T>());
            CHECK(reference::max_relative_error(got.final_state, ssm.final_state) <= tolerance<T>());
            // and the attention tokens really were mixed differently
            CHECK(reference::max_relative_error(lay.rows(got.out, 0, P), lay.rows(ssm.out, 0, P)) > 1e-3);
        }
    }
}

TEST_CASE_TEMPLATE("identity: the converter's state equals the recurrence's (final_state at P = L)", T, float, double) {
    std::uint64_t seed = 2300;
    for (const auto& s : {shapes[1], shapes[3], shapes[4], shapes[5]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.L);
        const auto cfg = small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk);
        const layer<T> lay(cfg, s.batch, s.L, seed += 10);
        const layer<T, paper_policies::with_scan<sequential_scan>> seq(cfg, s.batch, s.L, seed);
        const auto init = lay.random_state(seed + 1);
        const auto converted = lay.run(s.L, init).final_state;  // converter only: no token is scanned
        const auto scanned = seq.run(0, init).final_state;      // sequential recurrence only
        CHECK(reference::max_relative_error(converted, scanned) <= tolerance<T>());
        CHECK(reference::max_relative_error(converted, lay.oracle(0, init).final_state) <= tolerance<T>());
    }
}

TEST_CASE_TEMPLATE("identity: chunked SSD equals the sequential recurrence in the mixer", T, float, double) {
    std::uint64_t seed = 2400;
    for (const auto& s : {shapes[2], shapes[3], shapes[4]}) {
        CAPTURE(s.d_model);
        CAPTURE(s.L);
        const auto cfg = small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk);
        const layer<T> chunked(cfg, s.batch, s.L, seed += 10);
        const layer<T, paper_policies::with_scan<sequential_scan>> seq(cfg, s.batch, s.L, seed);
        const auto init = chunked.random_state(seed + 1);
        for (index_t P : {index_t(0), index_t(3), s.chunk + 5}) {
            CAPTURE(P);
            const auto a = chunked.run(P, init), b = seq.run(P, init);
            CHECK(reference::max_relative_error(a.out, b.out) <= tolerance<T>());
            CHECK(reference::max_relative_error(a.final_state, b.final_state) <= tolerance<T>());
        }
    }
}

TEST_CASE("identity: float equals double within 1e-4") {
    // Each precision is held to its own bound against the oracle (float 2e-5, double 1e-11); the
    // two together are therefore within about 2e-5 of each other. 1e-4 leaves room for shapes the
    // bounds above do not cover while still catching a float path that computes something else.
    const double bound = 1e-4;
    std::uint64_t seed = 2500;
    for (const auto& s : {shapes[1], shapes[3], shapes[4]}) {
        CAPTURE(s.d_model);
        const auto cfg = small_config(s.d_model, s.headdim, s.d_state, s.ngroups, s.chunk);
        const layer<float> f(cfg, s.batch, s.L, seed += 10);
        const layer<double> d(cfg, s.batch, s.L, seed);
        for (index_t P : {index_t(0), s.chunk + 5, s.L}) {
            CAPTURE(P);
            const auto a = f.run(P);
            const auto b = d.run(P);
            CHECK(reference::max_relative_error(a.out, b.out) <= bound);
            CHECK(reference::max_relative_error(a.final_state, b.final_state) <= bound);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Workspace
// ------------------------------------------------------------------------------------------------

TEST_CASE("mixer: two forward passes through one workspace<cpu> neither grow it nor differ") {
    const layer<float> lay(small_config(32, 16, 32, 2, 16), 3, 45, 3000);
    workspace<cpu> ws;
    const auto first = lay.run(21, {}, ws);
    const std::size_t cap = ws.capacity();
    CHECK(cap >= lay.m.workspace_bytes(3, 45));
    const auto data = ws.reserve(0).data;
    const auto second = lay.run(21, {}, ws);
    CHECK(ws.capacity() == cap);
    CHECK(ws.reserve(0).data == data);
    CHECK(first.out == second.out);  // bit-identical
    CHECK(first.final_state == second.final_state);
    // a shorter sequence fits in the same workspace
    const layer<float> shorter(small_config(32, 16, 32, 2, 16), 3, 20, 3001);
    shorter.run(7, {}, ws);
    CHECK(ws.capacity() == cap);
}

TEST_CASE("mixer: workspace_bytes is enough at any base address, and scratch is never read before written") {
    const layer<double> lay(small_config(32, 16, 32, 2, 16), 2, 45, 3100);
    const std::size_t need = lay.m.workspace_bytes(2, 45);
    const auto want = lay.oracle(30);
    const auto ut = to_vector<double>(lay.u);
    for (std::size_t shift : {0, 1, 8, 100}) {
        CAPTURE(shift);
        // NaN bit patterns everywhere (0xFF bytes): any read of unwritten scratch poisons the output
        std::vector<std::byte> storage(need + shift, std::byte{0xFF});
        std::vector<double> out(lay.out_size(), nan_value<double>());
        lay.m.forward(tensor_view<const double, 3>(ut.data(), lay.out_shape()),
                      tensor_view<double, 3>(out.data(), lay.out_shape()), 30, workspace_span{storage.data() + shift, need});
        CHECK(reference::max_relative_error(reference::to_double(out), want.out) <= tolerance<double>());
    }
}

// ------------------------------------------------------------------------------------------------
// Bad inputs: a transmamba::error naming the problem, and nothing written
// ------------------------------------------------------------------------------------------------

namespace {

constexpr float sentinel = -12345.5f;

struct bad_input_fixture {
    layer<float> lay{small_config(32, 16, 32, 2, 16), 2, 20, 4000};
    std::vector<float> u = to_vector<float>(lay.u);
    std::vector<float> out = std::vector<float>(lay.out_size(), sentinel);
    std::vector<float> final_state = std::vector<float>(lay.state_size(), sentinel);
    workspace<cpu> ws;

    tensor_view<const float, 3> u_view() const { return {u.data(), lay.out_shape()}; }
    tensor_view<float, 3> out_view() { return {out.data(), lay.out_shape()}; }
    tensor_view<float, 4> final_view() { return {final_state.data(), lay.state_shape()}; }

    // The error's message when forward throws transmamba::error, else a note that it did not.
    template <class F>
    static std::string message_of(F&& f) {
        try {
            f();
        } catch (const error& e) {
            return e.what();
        } catch (const std::exception& e) {
            return std::string("(another exception) ") + e.what();
        }
        return "(no error)";
    }
    bool untouched() const { return all_equal(out, sentinel) && all_equal(final_state, sentinel); }
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("mixer bad input: u and out shapes that do not match") {
    bad_input_fixture f;
    std::vector<float> small(2 * 19 * 32, sentinel);
    auto msg = f.message_of([&] {
        f.lay.m.forward(f.u_view(), tensor_view<float, 3>(small.data(), {2, 19, 32}), 5, f.ws);
    });
    CHECK(contains(msg, "tensor 'out'"));
    CHECK(contains(msg, "(2, 19, 32)"));
    CHECK(contains(msg, "(2, 20, 32)"));
    CHECK(all_equal(small, sentinel));
    // u with the wrong d_model
    std::vector<float> wide(2 * 20 * 33, 0.5f);
    msg = f.message_of([&] { f.lay.m.forward(tensor_view<const float, 3>(wide.data(), {2, 20, 33}), f.out_view(), 5, f.ws); });
    CHECK(contains(msg, "tensor 'u'"));
    CHECK(contains(msg, "(2, 20, 33)"));
    CHECK(contains(msg, "32"));
    // out not contiguous
    std::vector<float> big(2 * 20 * 64, sentinel);
    msg = f.message_of([&] {
        f.lay.m.forward(f.u_view(), tensor_view<float, 3>(big.data(), {2, 20, 32}, {20 * 64, 64, 1}), 5, f.ws);
    });
    CHECK(contains(msg, "tensor 'out' must be contiguous"));
    CHECK(all_equal(big, sentinel));
    CHECK(f.untouched());
}

TEST_CASE("mixer bad input: a negative TransPoint") {
    bad_input_fixture f;
    const auto msg = f.message_of([&] { f.lay.m.forward(f.u_view(), f.out_view(), -3, f.ws, {{}, f.final_view()}); });
    CHECK(contains(msg, "TransPoint P = -3"));
    CHECK(contains(msg, "negative"));
    CHECK(f.untouched());
}

TEST_CASE("mixer bad input: ngroups that does not divide nheads fails at construction") {
    auto cfg = small_config(32, 16, 32, 3, 16);  // 4 heads, 3 groups
    try {
        mixer<float, cpu> m(cfg);
        FAIL("a mixer was built with ngroups = 3 and nheads = 4");
    } catch (const error& e) {
        CHECK(contains(e.what(), "ngroups = 3"));
        CHECK(contains(e.what(), "nheads = 4"));
    }
}

TEST_CASE("mixer bad input: a NaN or an infinity in u names u and the index") {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        bad_input_fixture f;
        f.u[777] = bad;
        const auto msg = f.message_of([&] { f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws, {{}, f.final_view()}); });
        CHECK(contains(msg, "tensor 'u'"));
        CHECK(contains(msg, "non-finite"));
        CHECK(contains(msg, "777"));
        CHECK(f.untouched());
    }
}

TEST_CASE("mixer bad input: a NaN or an infinity in a weight, set through params(), names the parameter") {
    struct poison {
        const char* name;
        std::size_t index;
        float value;
    };
    for (const auto& p : {poison{"in_proj.weight", 123, std::numeric_limits<float>::quiet_NaN()},
                          poison{"A_log", 1, std::numeric_limits<float>::infinity()},
                          poison{"out_proj.weight", 0, -std::numeric_limits<float>::infinity()},
                          poison{"conv1d.bias", 7, std::numeric_limits<float>::quiet_NaN()},
                          poison{"norm.weight", 31, std::numeric_limits<float>::quiet_NaN()}}) {
        CAPTURE(p.name);
        bad_input_fixture f;
        // a first forward pass runs (and checks) the clean weights
        REQUIRE_NOTHROW(f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws));
        std::fill(f.out.begin(), f.out.end(), sentinel);
        bool found = false;
        f.lay.m.params().for_each([&](std::string_view name, auto& buf, const std::vector<index_t>&) {
            if (name == p.name) {
                buf.data()[p.index] = p.value;
                found = true;
            }
        });
        REQUIRE(found);
        const auto msg = f.message_of([&] { f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws, {{}, f.final_view()}); });
        CHECK(contains(msg, std::string("parameter '") + p.name + "'"));
        CHECK(contains(msg, "non-finite"));
        CHECK(contains(msg, "index " + std::to_string(p.index)));
        CHECK(f.untouched());
    }
}

TEST_CASE("mixer bad input: a wrong final_state or initial_state shape, a NaN in initial_state") {
    bad_input_fixture f;
    std::vector<float> fs(f.lay.state_size(), sentinel);
    // heads and headdim swapped
    const tensor_view<float, 4> wrong(fs.data(), {2, 16, 4, 32});
    auto msg = f.message_of([&] { f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws, {{}, wrong}); });
    CHECK(contains(msg, "tensor 'final_state'"));
    CHECK(contains(msg, "(2, 16, 4, 32)"));
    CHECK(contains(msg, "(2, 4, 16, 32)"));
    CHECK(all_equal(fs, sentinel));
    CHECK(f.untouched());

    std::vector<float> init(f.lay.state_size(), 0.25f);
    const tensor_view<const float, 4> wrong_init(init.data(), {1, 4, 16, 32});
    msg = f.message_of([&] { f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws, {wrong_init, f.final_view()}); });
    CHECK(contains(msg, "tensor 'initial_state'"));
    CHECK(contains(msg, "(1, 4, 16, 32)"));
    CHECK(f.untouched());

    init[99] = std::numeric_limits<float>::quiet_NaN();
    msg = f.message_of([&] {
        f.lay.m.forward(f.u_view(), f.out_view(), 5, f.ws,
                        {tensor_view<const float, 4>(init.data(), f.lay.state_shape()), f.final_view()});
    });
    CHECK(contains(msg, "tensor 'initial_state'"));
    CHECK(contains(msg, "non-finite"));
    CHECK(contains(msg, "99"));
    CHECK(f.untouched());
}

TEST_CASE("mixer bad input: a workspace smaller than workspace_bytes") {
    bad_input_fixture f;
    const std::size_t need = f.lay.m.workspace_bytes(2, 20);
    std::vector<std::byte> storage(need);
    for (std::size_t have : {need - 1, need / 2, std::size_t(0)}) {
        CAPTURE(have);
        const auto msg = f.message_of([&] {
            f.lay.m.forward(f.u_view(), f.out_view(), 5, workspace_span{storage.data(), have}, {{}, f.final_view()});
        });
        CHECK(contains(msg, "workspace too small"));
        CHECK(contains(msg, "has " + std::to_string(have) + " bytes"));
        CHECK(contains(msg, "needs " + std::to_string(need)));
        CHECK(f.untouched());
    }
    // and exactly enough works
    CHECK_NOTHROW(f.lay.m.forward(f.u_view(), f.out_view(), 5, workspace_span{storage.data(), need}));
    CHECK_FALSE(all_equal(f.out, sentinel));
}

TEST_CASE("mixer input check policy: trusted_inputs skips the per-call check of u, never the weights' check") {
    using trusted = paper_policies::with_input_check<trusted_inputs>;
    static_assert(!trusted::input_check::per_call && paper_policies::input_check::per_call);
    const auto cfg = small_config(32, 16, 32, 2, 16);
    const layer<float> checked(cfg, 2, 20, 4100);
    layer<float, trusted> lay(cfg, 2, 20, 4100);
    // Clean inputs: the same numbers as the checked mixer, bit for bit.
    CHECK(lay.run(5).out == checked.run(5).out);

    // A NaN in u is not looked for: it flows into its own sequence's rows and nothing throws.
    auto u = to_vector<float>(lay.u);
    u[777] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(lay.out_size(), 0.0f);
    workspace<cpu> ws;
    REQUIRE_NOTHROW(lay.m.forward(tensor_view<const float, 3>(u.data(), lay.out_shape()),
                                  tensor_view<float, 3>(out.data(), lay.out_shape()), 5, ws));
    CHECK(std::any_of(out.begin(), out.end(), [](float v) { return std::isnan(v); }));

    // A NaN in a weight is still reported, before anything is written.
    layer<float, trusted> poisoned(cfg, 2, 20, 4100);
    poisoned.m.params().for_each([&](std::string_view name, auto& buf, const std::vector<index_t>&) {
        if (name == "in_proj.weight") buf.data()[3] = std::numeric_limits<float>::quiet_NaN();
    });
    std::fill(out.begin(), out.end(), sentinel);
    const auto clean = to_vector<float>(poisoned.u);
    const auto msg = bad_input_fixture::message_of([&] {
        poisoned.m.forward(tensor_view<const float, 3>(clean.data(), poisoned.out_shape()),
                           tensor_view<float, 3>(out.data(), poisoned.out_shape()), 5, ws);
    });
    CHECK(contains(msg, "parameter 'in_proj.weight'"));
    CHECK(all_equal(out, sentinel));
}

}  // namespace test_block_mixer
