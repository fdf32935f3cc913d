// parallel/: one mixer's sequence split across R simulated ranks equals the single-rank mixer
// (outputs, final SSM state, final conv window; decoding after the prefill), for R = 1..4, L
// divisible by R or not, TransPoints at 0, L/4, L, past L, inside a slice and on a slice boundary,
// one and two groups, both query assignments. The conv window is also checked against a float64
// loop. The pieces (slices, assignments, the state fold) have tests of their own; bad input is
// refused with a message naming it.
#include <doctest/doctest.h>

#include <transmamba/parallel.hpp>
#include <transmamba/transmamba.hpp>

#include "support/error_of.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_parallel_context_parallel {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

mixer_config lean_config(index_t ngroups) {
    mixer_config c;
    c.d_model = 16;
    c.expand = 2;
    c.headdim = 8;  // 4 heads
    c.d_state = 8;
    c.ngroups = ngroups;
    c.d_conv = 4;
    c.chunk_size = 8;  // several converter tiles per slice
    return c;
}

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> d(-scale, scale);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(d(rng));
    return v;
}

// max |a - b| / max |b|; NaN anywhere gives infinity, so it never passes.
template <class T>
double relative_error(const std::vector<T>& a, const std::vector<T>& b) {
    REQUIRE(a.size() == b.size());
    double diff = 0, ref = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
        if (!std::isfinite(x) || !std::isfinite(y)) return std::numeric_limits<double>::infinity();
        diff = std::max(diff, std::abs(x - y));
        ref = std::max(ref, std::abs(y));
    }
    return ref > 0 ? diff / ref : diff;
}

template <class T>
constexpr double bound() {
    return std::is_same_v<T, double> ? 1e-12 : 1e-5;
}

template <class T, class Policies>
struct single_rank_result {
    std::vector<T> out, state;
};

// The single-rank mixer on the whole sequences.
template <class T, class Policies>
single_rank_result<T, Policies> single_rank(const mixer<T, cpu, Policies>& m, const std::vector<T>& u, index_t batch,
                                            index_t L, index_t P, const std::vector<T>* initial) {
    const auto& c = m.config();
    single_rank_result<T, Policies> r;
    r.out.assign(u.size(), std::numeric_limits<T>::quiet_NaN());
    r.state.assign(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state), std::numeric_limits<T>::quiet_NaN());
    workspace<cpu> ws;
    mixer_state_io<T> io;
    if (initial) io.initial_state = tensor_view<const T, 4>(initial->data(), {batch, c.nheads(), c.headdim, c.d_state});
    io.final_state = tensor_view<T, 4>(r.state.data(), {batch, c.nheads(), c.headdim, c.d_state});
    m.forward(tensor_view<const T, 3>(u.data(), {batch, L, c.d_model}), tensor_view<T, 3>(r.out.data(), {batch, L, c.d_model}),
              P, ws, io);
    return r;
}

// The conv window after L in float64: the in-projection rows of the last d_conv - 1 tokens, zeros
// before token 0.
template <class T, class Policies>
std::vector<double> window_in_double(const mixer<T, cpu, Policies>& m, const std::vector<T>& u, index_t batch, index_t L) {
    const auto& c = m.config();
    const index_t H = c.d_conv - 1, dp = c.d_in_proj(), dm = c.d_model;
    std::vector<double> w(static_cast<std::size_t>(batch * H * dp), 0.0);
    const T* W = m.params().in_proj.data();
    for (index_t b = 0; b < batch; ++b)
        for (index_t j = 0; j < H; ++j) {
            const index_t t = L - H + j;
            if (t < 0) continue;
            for (index_t o = 0; o < dp; ++o) {
                double acc = 0;
                for (index_t d = 0; d < dm; ++d)
                    acc += static_cast<double>(u[std::size_t((b * L + t) * dm + d)]) * static_cast<double>(W[o * dm + d]);
                w[std::size_t((b * H + j) * dp + o)] = acc;
            }
        }
    return w;
}

// One context-parallel pass: u split into the ranks' slices, out gathered back in token order.
template <class T, class Policies, class Queries>
struct cp_result {
    std::vector<T> out;
    std::vector<std::vector<T>> states, windows;  // per rank
    std::size_t bytes_received = 0, collectives = 0;
};

template <class T, class Policies, class Queries>
cp_result<T, Policies, Queries> context_parallel(const mixer<T, cpu, Policies>& m, const std::vector<T>& u, index_t batch,
                                                 index_t L, index_t P, index_t R, const std::vector<T>* initial) {
    const auto& c = m.config();
    const context_parallel_mixer<T, cpu, Policies, Queries> cp(m);
    simulated_ranks<cpu> comm(R);
    const token_slices slices(L, R);
    const index_t dm = c.d_model, H = c.d_conv - 1;
    const auto state_size = static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state);
    std::vector<std::vector<T>> us(static_cast<std::size_t>(R)), outs(static_cast<std::size_t>(R));
    std::vector<std::vector<std::byte>> wss(static_cast<std::size_t>(R));
    cp_result<T, Policies, Queries> res;
    res.states.assign(std::size_t(R), std::vector<T>(state_size, std::numeric_limits<T>::quiet_NaN()));
    res.windows.assign(std::size_t(R),
                       std::vector<T>(static_cast<std::size_t>(batch * H * c.d_in_proj()), std::numeric_limits<T>::quiet_NaN()));
    std::vector<context_parallel_rank_io<T>> io(static_cast<std::size_t>(R));
    for (index_t r = 0; r < R; ++r) {
        const token_slice s = slices.of(r);
        auto& ur = us[std::size_t(r)];
        for (index_t b = 0; b < batch; ++b)
            ur.insert(ur.end(), u.begin() + (b * L + s.begin) * dm, u.begin() + (b * L + s.end) * dm);
        outs[std::size_t(r)].assign(ur.size(), std::numeric_limits<T>::quiet_NaN());
        wss[std::size_t(r)].resize(cp.workspace_bytes(batch, L, P, R));
        auto& x = io[std::size_t(r)];
        x.u = tensor_view<const T, 3>(ur.data(), {batch, s.size(), dm});
        x.out = tensor_view<T, 3>(outs[std::size_t(r)].data(), {batch, s.size(), dm});
        x.ws = {wss[std::size_t(r)].data(), wss[std::size_t(r)].size()};
        if (initial) x.initial_state = tensor_view<const T, 4>(initial->data(), {batch, c.nheads(), c.headdim, c.d_state});
        x.final_state = tensor_view<T, 4>(res.states[std::size_t(r)].data(), {batch, c.nheads(), c.headdim, c.d_state});
        x.final_window = tensor_view<T, 3>(res.windows[std::size_t(r)].data(), {batch, H, c.d_in_proj()});
    }
    cp.forward(comm, std::span<const context_parallel_rank_io<T>>(io), L, P);
    res.out.assign(u.size(), std::numeric_limits<T>::quiet_NaN());
    for (index_t r = 0; r < R; ++r) {
        const token_slice s = slices.of(r);
        for (index_t b = 0; b < batch; ++b)
            std::copy_n(outs[std::size_t(r)].begin() + b * s.size() * dm, s.size() * dm, res.out.begin() + (b * L + s.begin) * dm);
    }
    res.bytes_received = comm.bytes_received_per_rank();
    res.collectives = comm.collectives();
    return res;
}

// The TransPoints the issue asks for at (L, R): 0, L/4, L, past L, inside a slice, on a slice boundary.
std::set<index_t> transpoints_for(index_t L, index_t R) {
    const token_slices slices(L, R);
    std::set<index_t> P{0, L / 4, L, L + 5};
    const token_slice last = slices.of(R - 1);
    P.insert(last.begin + last.size() / 2);  // inside the last slice
    P.insert(slices.of(R / 2).begin);        // on a boundary (0 when R = 1)
    if (R > 1) P.insert(slices.of(1).begin + 1);  // one token into the second slice
    return P;
}

template <class T, class Policies, class Queries>
void check_against_single_rank(index_t ngroups, index_t L, bool with_initial_state) {
    const mixer_config c = lean_config(ngroups);
    mixer<T, cpu, Policies> m(c);
    randomize(m.params(), 11 + static_cast<std::uint64_t>(ngroups));
    const index_t batch = 2;
    const auto u = random_values<T>(static_cast<std::size_t>(batch * L * c.d_model), 5 + static_cast<std::uint64_t>(L));
    const auto init = random_values<T>(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state), 77, 0.5);
    const std::vector<T>* initial = with_initial_state ? &init : nullptr;
    const auto window = window_in_double(m, u, batch, L);
    for (index_t R = 1; R <= 4; ++R)
        for (const index_t P : transpoints_for(L, R)) {
            CAPTURE(R);
            CAPTURE(P);
            const auto want = single_rank(m, u, batch, L, P, initial);
            const auto got = context_parallel<T, Policies, Queries>(m, u, batch, L, P, R, initial);
            CHECK(relative_error(got.out, want.out) < bound<T>());
            for (index_t r = 0; r < R; ++r) {
                CAPTURE(r);
                CHECK(relative_error(got.states[std::size_t(r)], want.state) < bound<T>());
                std::vector<double> w(got.windows[std::size_t(r)].begin(), got.windows[std::size_t(r)].end());
                CHECK(relative_error(w, window) < bound<T>());
            }
        }
}

}  // namespace

TEST_CASE("context parallel: token slices cover the sequence once, differ by at most one token") {
    for (index_t L : {1, 5, 23, 24, 1000})
        for (index_t R = 1; R <= std::min<index_t>(L, 7); ++R) {
            const token_slices s(L, R);
            index_t next = 0, shortest = L, longest = 0;
            for (index_t r = 0; r < R; ++r) {
                const token_slice sl = s.of(r);
                CHECK(sl.begin == next);
                next = sl.end;
                shortest = std::min(shortest, sl.size());
                longest = std::max(longest, sl.size());
                for (index_t t = sl.begin; t < sl.end; ++t) CHECK(s.owner(t) == r);
            }
            CHECK(next == L);
            CHECK(longest - shortest <= 1);
            CHECK(longest == s.longest());
        }
}

TEST_CASE("context parallel: the zig-zag assignment partitions the prefix and balances causal work") {
    for (index_t R = 1; R <= 8; ++R)
        for (index_t P : {0, 1, 7, 64, 1000, 4099}) {
            const token_slices slices(std::max(P, R), R);
            std::vector<int> seen(std::size_t(P), 0);
            double most = 0, least = std::numeric_limits<double>::infinity(), contiguous_most = 0, total = 0;
            for (index_t r = 0; r < R; ++r) {
                double work = 0, contiguous_work = 0;
                for (const auto& q : zigzag_queries::assigned(slices, r, P))
                    for (index_t t = q.begin; t < q.end; ++t) {
                        ++seen[std::size_t(t)];
                        work += double(t + 1);  // causal query t reads t + 1 keys
                    }
                for (const auto& q : contiguous_queries::assigned(slices, r, P))
                    for (index_t t = q.begin; t < q.end; ++t) contiguous_work += double(t + 1);
                most = std::max(most, work);
                least = std::min(least, work);
                contiguous_most = std::max(contiguous_most, contiguous_work);
                total += work;
            }
            CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }));
            if (P >= 64 * R) {
                const double mean = total / double(R);
                CHECK(most <= 1.01 * mean);  // balanced to rounding of the chunk edges
                CHECK(least >= 0.99 * mean);
                if (R >= 2 && P == std::max(P, R)) CHECK(contiguous_most > 1.4 * mean);  // what zig-zag avoids
            }
        }
}

TEST_CASE("context parallel: the state fold equals the recurrence over the concatenated runs") {
    // Three runs of random decays and contributions: folding their pairs equals applying them one by one.
    const state_pair_layout lay{2, 3, 2, 4};
    const index_t R = 3, pn = lay.headdim * lay.d_state;
    auto pairs = random_values<double>(static_cast<std::size_t>(R * lay.elements()), 3);
    for (index_t q = 0; q < R; ++q)
        for (index_t i = 0; i < lay.batch * lay.nheads; ++i)
            pairs[std::size_t(q * lay.elements() + lay.decay_offset() + i)] = 0.3 + 0.2 * double(q) + 0.05 * double(i);
    const auto init = random_values<double>(static_cast<std::size_t>(lay.state_elements()), 4);
    for (index_t count = 0; count <= R; ++count) {
        std::vector<double> got(static_cast<std::size_t>(lay.state_elements()));
        state_scan_kernel<cpu>::fold(cpu_context{}, lay, pairs.data(), count, init.data(), got.data());
        std::vector<double> want = init;
        for (index_t q = 0; q < count; ++q)
            for (index_t head = 0; head < lay.batch * lay.nheads; ++head) {
                const double lambda = pairs[std::size_t(q * lay.elements() + lay.decay_offset() + head)];
                for (index_t e = 0; e < pn; ++e) {
                    auto& s = want[std::size_t(head * pn + e)];
                    s = lambda * s + pairs[std::size_t(q * lay.elements() + head * pn + e)];
                }
            }
        CHECK(relative_error(got, want) < 1e-15);
    }
}

TEST_CASE("context parallel: R simulated ranks equal the single-rank mixer, float64") {
    for (index_t g : {1, 2}) {
        CAPTURE(g);
        check_against_single_rank<double, paper_policies, zigzag_queries>(g, 23, false);
        check_against_single_rank<double, paper_policies, contiguous_queries>(g, 24, false);
    }
    // From an initial state, and with the sequential scan policy.
    check_against_single_rank<double, paper_policies, zigzag_queries>(2, 24, true);
    check_against_single_rank<double, paper_policies::with_scan<sequential_scan>, zigzag_queries>(1, 23, true);
}

TEST_CASE("context parallel: R simulated ranks equal the single-rank mixer, float32") {
    check_against_single_rank<float, paper_policies, zigzag_queries>(1, 24, false);
    check_against_single_rank<float, paper_policies, contiguous_queries>(2, 23, true);
}

TEST_CASE("context parallel: slices shorter than the conv halo take it from several ranks") {
    // L = 5 on 4 ranks: slices of 1 and 2 tokens, a halo of 3 rows spans up to three ranks.
    const mixer_config c = lean_config(1);
    mixer<double, cpu> m(c);
    randomize(m.params(), 21);
    const index_t L = 5;
    const auto u = random_values<double>(static_cast<std::size_t>(L * c.d_model), 8);
    for (index_t P : {0, 2, 5}) {
        CAPTURE(P);
        const auto want = single_rank(m, u, index_t{1}, L, P, static_cast<const std::vector<double>*>(nullptr));
        const auto got = context_parallel<double, paper_policies, zigzag_queries>(m, u, 1, L, P, 4, nullptr);
        CHECK(relative_error(got.out, want.out) < 1e-12);
        CHECK(relative_error(got.states[0], want.state) < 1e-12);
    }
}

TEST_CASE("context parallel: the bytes a rank receives follow the volume formula of the docs") {
    const mixer_config c = lean_config(2);
    mixer<double, cpu> m(c);
    randomize(m.params(), 31);
    const index_t batch = 2, L = 24, R = 3, P = 10;
    const auto u = random_values<double>(static_cast<std::size_t>(batch * L * c.d_model), 9);
    const token_slices slices(L, R);
    const index_t H = c.d_conv - 1, slot = slices.longest();  // P = 10 > slice length 8: the slot is full
    const auto pair = std::size_t(batch * c.nheads() * (c.headdim * c.d_state + 1));
    const std::size_t fixed = (std::size_t(batch * H * c.d_in_proj()) + pair) * sizeof(double);
    const std::size_t prefix = std::size_t(batch * slot * c.conv_dim()) * sizeof(double);
    // Zig-zag: 2R = 6 chunks of 10 tokens: 1 or 2 tokens each, y_slot = the most one rank computes.
    index_t y_slot = 0;
    for (index_t r = 0; r < R; ++r) {
        index_t q = 0;
        for (const auto& range : zigzag_queries::assigned(slices, r, P)) q += range.size();
        y_slot = std::max(y_slot, q);
    }
    const std::size_t y = std::size_t(batch * y_slot * c.d_inner()) * sizeof(double);
    const auto zz = context_parallel<double, paper_policies, zigzag_queries>(m, u, batch, L, P, R, nullptr);
    CHECK(zz.bytes_received == std::size_t(R - 1) * (fixed + prefix + y));
    CHECK(zz.collectives == 4);
    const auto ct = context_parallel<double, paper_policies, contiguous_queries>(m, u, batch, L, P, R, nullptr);
    CHECK(ct.bytes_received == std::size_t(R - 1) * (fixed + prefix));
    CHECK(ct.collectives == 3);
    const auto ssm = context_parallel<double, paper_policies, zigzag_queries>(m, u, batch, L, 0, R, nullptr);
    CHECK(ssm.bytes_received == std::size_t(R - 1) * fixed);
    CHECK(ssm.collectives == 2);
}

TEST_CASE("context parallel: decoding after a context-parallel prefill equals decoding after the single-rank one") {
    const mixer_config c = lean_config(2);
    mixer<double, cpu> m(c);
    randomize(m.params(), 41);
    const index_t L = 13, steps = 6, max_tokens = L + steps, dm = c.d_model;
    const auto u = random_values<double>(static_cast<std::size_t>((L + steps) * dm), 12);
    const auto tok = [&](index_t t) { return tensor_view<const double, 1>(u.data() + t * dm, {dm}); };
    for (index_t P : {0, 5, 13, 16, 40}) {  // SSM, converted inside, at L, in the cache while decoding, never converted
        for (index_t R : {2, 3}) {
            CAPTURE(P);
            CAPTURE(R);
            // Single rank.
            std::vector<std::byte> ws1(m.decode_workspace_bytes(L, std::min(P, max_tokens)));
            mixer<double, cpu>::decode_state st1;
            std::vector<double> out1(static_cast<std::size_t>(L * dm));
            m.prefill(tensor_view<const double, 3>(u.data(), {1, L, dm}), tensor_view<double, 3>(out1.data(), {1, L, dm}), P,
                      max_tokens, {ws1.data(), ws1.size()}, st1);
            // R ranks.
            const context_parallel_mixer<double, cpu> cp(m);
            simulated_ranks<cpu> comm(R);
            const token_slices slices(L, R);
            std::vector<std::vector<double>> outs(static_cast<std::size_t>(R));
            std::vector<std::vector<std::byte>> wss(static_cast<std::size_t>(R));
            std::vector<mixer<double, cpu>::decode_state> sts(static_cast<std::size_t>(R));
            std::vector<mixer<double, cpu>::decode_state*> stp;
            std::vector<context_parallel_rank_io<double>> io(static_cast<std::size_t>(R));
            for (index_t r = 0; r < R; ++r) {
                const token_slice s = slices.of(r);
                outs[std::size_t(r)].assign(static_cast<std::size_t>(s.size() * dm), 0.0);
                wss[std::size_t(r)].resize(cp.workspace_bytes(1, L, P, R));
                io[std::size_t(r)].u = tensor_view<const double, 3>(u.data() + s.begin * dm, {1, s.size(), dm});
                io[std::size_t(r)].out = tensor_view<double, 3>(outs[std::size_t(r)].data(), {1, s.size(), dm});
                io[std::size_t(r)].ws = {wss[std::size_t(r)].data(), wss[std::size_t(r)].size()};
                stp.push_back(&sts[std::size_t(r)]);
            }
            cp.prefill(comm, std::span<const context_parallel_rank_io<double>>(io), L, P, max_tokens,
                       std::span<mixer<double, cpu>::decode_state* const>(stp));
            std::vector<double> prefill_out;
            for (const auto& o : outs) prefill_out.insert(prefill_out.end(), o.begin(), o.end());
            CHECK(relative_error(prefill_out, out1) < 1e-12);
            // Every rank's state continues the sequence: decode on each and compare every step.
            for (index_t r = 0; r < R; ++r) {
                CAPTURE(r);
                auto st1_copy = st1;
                auto& st = sts[std::size_t(r)];
                CHECK(st.position == L);
                CHECK(st.converted == st1.converted);
                std::vector<std::byte> ws(m.decode_workspace_bytes(1, std::min(P, max_tokens)));
                for (index_t t = L; t < L + steps; ++t) {
                    std::vector<double> a(static_cast<std::size_t>(dm)), b(static_cast<std::size_t>(dm));
                    m.step(tok(t), tensor_view<double, 1>(a.data(), {dm}), {ws.data(), ws.size()}, st);
                    m.step(tok(t), tensor_view<double, 1>(b.data(), {dm}), {ws.data(), ws.size()}, st1_copy);
                    CHECK(relative_error(a, b) < 1e-12);
                }
                std::vector<double> s_cp(st.state.data(), st.state.data() + st.state.size()),
                    s_1(st1_copy.state.data(), st1_copy.state.data() + st1_copy.state.size());
                CHECK(relative_error(s_cp, s_1) < 1e-12);
            }
        }
    }
}

TEST_CASE("context parallel: bad input is refused with a message naming it") {
    const mixer_config c = lean_config(1);
    mixer<double, cpu> m(c);
    randomize(m.params(), 51);
    const context_parallel_mixer<double, cpu> cp(m);
    const index_t L = 8, dm = c.d_model;
    std::vector<double> u(static_cast<std::size_t>(L * dm), 0.1), out(u.size());
    std::vector<std::byte> ws(cp.workspace_bytes(1, L, 4, 2));
    auto io_for = [&](index_t R, index_t len_of_rank0) {
        const token_slices slices(L, R);
        std::vector<context_parallel_rank_io<double>> io(static_cast<std::size_t>(R));
        for (index_t r = 0; r < R; ++r) {
            const token_slice s = slices.of(r);
            const index_t len = r == 0 ? len_of_rank0 : s.size();
            io[std::size_t(r)].u = tensor_view<const double, 3>(u.data() + s.begin * dm, {1, len, dm});
            io[std::size_t(r)].out = tensor_view<double, 3>(out.data() + s.begin * dm, {1, len, dm});
            io[std::size_t(r)].ws = {ws.data(), ws.size()};
        }
        return io;
    };
    using span_t = std::span<const context_parallel_rank_io<double>>;

    CHECK(has(error_of([] { simulated_ranks<cpu> comm(0); }), "at least 1, got 0"));
    CHECK(has(error_of([] { token_slices s(3, 4); }), "4 ranks for a sequence of 3 tokens"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(9);
              auto io = io_for(2, 4);
              io.resize(9, io[0]);
              cp.forward(comm, span_t(io), L, 4);
          }),
          "9 ranks for a sequence of 8 tokens"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 3);  // rank 0 holds 4 tokens
              cp.forward(comm, span_t(io), L, 4);
          }),
          "rank 0 holds tokens [0, 4) of L = 8 on 2 ranks, but its tensor 'u' has shape (1, 3, 16)"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 4);
              io.pop_back();
              cp.forward(comm, span_t(io), L, 4);
          }),
          "2 local ranks but 1 rank inputs"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 4);
              cp.forward(comm, span_t(io), L, -1);
          }),
          "TransPoint P = -1 is negative"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 4);
              io[1].ws.bytes = 100;
              cp.forward(comm, span_t(io), L, 4);
          }),
          "workspace of rank 1 too small: has 100 bytes"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 4);
              std::vector<double> wrong(10);
              io[1].final_state = tensor_view<double, 4>(wrong.data(), {1, 1, 2, 5});
              cp.forward(comm, span_t(io), L, 4);
          }),
          "final_state"));
    CHECK(has(error_of([&] {
              simulated_ranks<cpu> comm(2);
              auto io = io_for(2, 4);
              u[5] = std::numeric_limits<double>::quiet_NaN();
              cp.forward(comm, span_t(io), L, 4);
          }),
          "tensor 'u' of rank 0 holds a non-finite value at flat index 5"));
    // Nothing was written by the refused calls.
    CHECK(std::all_of(out.begin(), out.end(), [](double v) { return v == 0.0; }));
}

}  // namespace test_parallel_context_parallel
