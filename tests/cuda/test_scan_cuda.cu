// The CUDA scans (sequential, chunked SSD) and the exact Memory Converter against the float64
// oracle (tests/reference): reference::ssm_recurrence for y and the final state,
// reference::converter_state (plus the decayed initial state) and the recurrence's state for the
// converter. The oracle reads the inputs rounded to the storage type, so an error measures the
// kernels' arithmetic only.
//
// Bounds (max |got - want| / max |want|):
//   float storage: 1e-5 everywhere (SIMT fp32 for the sequential scan, 3xTF32 tensor-core products
//                  for the chunked scan and the converter);
//   bf16 storage:  5e-3 for the chunked scan's y (its mixing matrix L o C B^T o dt is rounded to
//                  bf16 for the tensor cores, as in mamba_ssm); 1e-4 for every state (fp32
//                  operands enter the tensor cores as bf16 hi + lo pairs) and 1e-5 for the
//                  sequential scan (fp32 arithmetic on bf16 inputs).
// y is poisoned with NaN before each call: rows outside [t_begin, t_end) must stay NaN, rows
// inside must be finite (max_relative_error is +inf otherwise).
#include <doctest/doctest.h>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include <transmamba/backend/cuda/converter.cuh>
#include <transmamba/backend/cuda/decode_scan.cuh>
#include <transmamba/backend/cuda/scan.cuh>

#include "reference/reference.hpp"

namespace {

using namespace transmamba;
namespace ref = transmamba::reference;
using kernels::cuda::check_cuda;

template <class T>
constexpr const char* type_name() {
    return std::is_same_v<T, float> ? "float" : "bf16";
}

template <class T>
std::vector<double> rounded(std::vector<double> v) {
    for (auto& e : v) e = static_cast<double>(kernels::cuda::to_float(kernels::cuda::from_float<T>(static_cast<float>(e))));
    return v;
}

struct shape {
    int batch, L, h, p, n, g, chunk;
    int t_begin, t_end;  // the scan's span; the converter's prefix is t_end
    int pad = 0;         // extra columns per xBC row: a non-zero pad breaks 16-byte alignment
};

template <class T>
std::vector<T> to_storage(const std::vector<double>& v) {
    std::vector<T> r(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) r[i] = kernels::cuda::from_float<T>(static_cast<float>(v[i]));
    return r;
}

template <class T>
void upload(device_buffer<T>& d, const std::vector<T>& h) {
    d.resize(h.size());
    check_cuda(cudaMemcpy(d.data(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
}

std::vector<double> download(const device_buffer<float>& d) {
    std::vector<float> h(d.size());
    check_cuda(cudaMemcpy(h.data(), d.data(), h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
    return {h.begin(), h.end()};
}

// Operands on the GPU in the mixer's layout: x, B, C are views into one xBC row per token.
template <class T>
struct gpu_operands {
    shape s;
    mixer_config cfg;
    ref::dims d;
    std::vector<double> x, B, C, dt, A, D, init;  // what the oracle reads
    device_buffer<T> xbc;
    device_buffer<float> dt_d, A_d, D_d;
    ssm_inputs<T> in;

    gpu_operands(const shape& sh, std::uint64_t seed) : s(sh) {
        cfg.expand = 1;
        cfg.d_model = s.h * s.p;
        cfg.headdim = s.p;
        cfg.d_state = s.n;
        cfg.ngroups = s.g;
        cfg.chunk_size = s.chunk;
        cfg.validate();
        d.batch = s.batch;
        d.seqlen = s.L;
        d.d_model = s.h * s.p;
        d.expand = 1;
        d.headdim = s.p;
        d.d_state = s.n;
        d.ngroups = s.g;
        const auto rows = static_cast<std::size_t>(s.batch * s.L);
        const std::size_t hp = std::size_t(s.h) * s.p, gn = std::size_t(s.g) * s.n;
        x = rounded<T>(ref::random_vector(rows * hp, seed * 7919 + 1));
        B = rounded<T>(ref::random_vector(rows * gn, seed * 7919 + 2));
        C = rounded<T>(ref::random_vector(rows * gn, seed * 7919 + 3));
        dt = rounded<float>(ref::random_vector(rows * s.h, seed * 7919 + 4, 1e-3, 0.2));
        A = rounded<float>(ref::random_vector(s.h, seed * 7919 + 5, -1.5, -0.05));
        D = rounded<float>(ref::random_vector(s.h, seed * 7919 + 6, 0.5, 1.5));
        init = rounded<float>(ref::random_vector(std::size_t(s.batch) * s.h * s.p * s.n, seed * 7919 + 7, -1.0, 1.0));

        const std::size_t width = hp + 2 * gn + s.pad;
        std::vector<double> row_major(rows * width, std::nan(""));
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t c = 0; c < hp; ++c) row_major[r * width + c] = x[r * hp + c];
            for (std::size_t c = 0; c < gn; ++c) row_major[r * width + hp + c] = B[r * gn + c];
            for (std::size_t c = 0; c < gn; ++c) row_major[r * width + hp + gn + c] = C[r * gn + c];
        }
        upload(xbc, to_storage<T>(row_major));
        upload(dt_d, to_storage<float>(dt));
        upload(A_d, to_storage<float>(A));
        upload(D_d, to_storage<float>(D));
        const index_t w = static_cast<index_t>(width), L = s.L;
        in.x = tensor_view<const T, 4>(xbc.data(), {s.batch, L, s.h, s.p}, {L * w, w, s.p, 1});
        in.B = tensor_view<const T, 4>(xbc.data() + hp, {s.batch, L, s.g, s.n}, {L * w, w, s.n, 1});
        in.C = tensor_view<const T, 4>(xbc.data() + hp + gn, {s.batch, L, s.g, s.n}, {L * w, w, s.n, 1});
        in.dt = tensor_view<const float, 3>(dt_d.data(), {s.batch, L, s.h});
        in.A = A_d.data();
        in.D = D_d.data();
    }

    extents<4> state_shape() const { return {s.batch, s.h, s.p, s.n}; }
    extents<4> y_shape() const { return {s.batch, s.L, s.h, s.p}; }
};

// Rows [t0, t1) of every sequence of a (batch, L, width) tensor.
std::vector<double> rows_of(const std::vector<double>& v, int batch, int L, std::size_t width, int t0, int t1) {
    std::vector<double> r;
    for (int b = 0; b < batch; ++b)
        for (int t = t0; t < t1; ++t)
            for (std::size_t c = 0; c < width; ++c) r.push_back(v[(std::size_t(b) * L + t) * width + c]);
    return r;
}

bool all_nan(const std::vector<double>& v) {
    for (double e : v)
        if (!std::isnan(e)) return false;
    return true;
}

struct scan_result {
    std::vector<double> y, state;
};

// Policy: void for the scan's run(); a chunked-SSD tuning policy (e.g. ssd::tf32_policy) for run_with.
template <class Scan, class T, class Policy = void>
scan_result run_scan(const gpu_operands<T>& op) {
    using kernel = scan_kernel<Scan, transmamba::cuda>;
    const auto& s = op.s;
    device_buffer<float> y(std::size_t(s.batch) * s.L * s.h * s.p), state;
    upload(state, to_storage<float>(op.init));
    check_cuda(cudaMemset(y.data(), 0xff, y.size() * sizeof(float)), "cudaMemset (NaN poison)");
    const tensor_view<float, 4> yv(y.data(), op.y_shape()), sv(state.data(), op.state_shape());
    const cuda_context ctx{};
    if constexpr (std::is_void_v<Policy>) {
        device_buffer<std::byte> scratch(kernel::template scratch_bytes<T>(op.cfg, s.batch, s.L) + 1);
        kernel::template run<T>(ctx, op.cfg, op.in, s.t_begin, s.t_end, yv, sv, {scratch.data(), scratch.size()});
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (scan)");
    } else {
        device_buffer<std::byte> scratch(
            kernels::cuda::ssd::chunk_scratch_bytes<T, Policy>(op.cfg, s.batch, s.L, true) + 1);
        kernel::template run_with<T, Policy>(ctx, op.cfg, op.in, s.t_begin, s.t_end, yv, sv,
                                             {scratch.data(), scratch.size()});
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (scan)");
    }
    return {download(y), download(state)};
}

template <class T>
std::vector<double> run_converter(const gpu_operands<T>& op, int prefix) {
    using kernel = converter_kernel<exact_converter, transmamba::cuda>;
    const auto& s = op.s;
    device_buffer<float> state;
    upload(state, to_storage<float>(op.init));
    device_buffer<std::byte> scratch(kernel::template scratch_bytes<T>(op.cfg, s.batch, s.L) + 1);
    kernel::template run<T>(cuda_context{}, op.cfg, op.in, prefix, tensor_view<float, 4>(state.data(), op.state_shape()),
                            {scratch.data(), scratch.size()});
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (converter)");
    return download(state);
}

// The converter's two steps with a forced segment length (chunks per chunk_state block); the
// converter picks it from the GPU's size, so small shapes would only ever see one chunk per block.
template <class T>
std::vector<double> run_converter_segments(const gpu_operands<T>& op, int prefix, int chunks_per_block) {
    namespace ssd = kernels::cuda::ssd;
    using policy = ssd::default_policy;
    const auto& s = op.s;
    device_buffer<float> state;
    upload(state, to_storage<float>(op.init));
    const tensor_view<float, 4> sv(state.data(), op.state_shape());
    device_buffer<std::byte> scratch(ssd::chunk_scratch_bytes<T, policy>(op.cfg, s.batch, s.L, false) + 64);
    const auto operands = ssd::make_operands<T, policy>(op.cfg, op.in, 0, prefix, sv, "test");
    workspace_arena arena(align_span({scratch.data(), scratch.size()}));
    const auto parts = ssd::take_chunk_scratch<T, policy>(arena, op.cfg, s.batch, s.L, false);
    const int segments = ssd::launch_chunk_state<T, policy>(cuda_context{}, operands, parts, chunks_per_block);
    CHECK(segments == (operands.nchunks + chunks_per_block - 1) / chunks_per_block);
    ssd::launch_state_passing<T, policy>(cuda_context{}, parts, state.data(), s.batch, s.h, segments, index_t(s.p) * s.n);
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (converter segments)");
    return download(state);
}

void describe(const char* what, const char* type, const shape& s) {
    std::printf("%-10s %-5s b%d L%d h%d p%d n%d g%d chunk%d span[%d,%d) pad%d:", what, type, s.batch, s.L, s.h, s.p,
                s.n, s.g, s.chunk, s.t_begin, s.t_end, s.pad);
}

template <class Scan, class T, class Policy = void>
void check_scan(const shape& s, std::uint64_t seed, double y_bound, double state_bound, const char* what) {
    CAPTURE(s.batch);
    CAPTURE(s.L);
    CAPTURE(s.p);
    CAPTURE(s.n);
    CAPTURE(s.g);
    CAPTURE(s.chunk);
    CAPTURE(s.t_begin);
    CAPTURE(s.t_end);
    const gpu_operands<T> op(s, seed);
    const auto got = run_scan<Scan, T, Policy>(op);
    const auto want = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init, s.t_begin, s.t_end);
    const std::size_t width = std::size_t(s.h) * s.p;
    const double y_err = ref::max_relative_error(rows_of(got.y, s.batch, s.L, width, s.t_begin, s.t_end),
                                                 rows_of(want.y, s.batch, s.L, width, s.t_begin, s.t_end));
    const double s_err = ref::max_relative_error(got.state, want.final_state);
    describe(what, type_name<T>(), s);
    std::printf(" y %.3g  state %.3g\n", y_err, s_err);
    CHECK(y_err <= y_bound);
    CHECK(s_err <= state_bound);
    CHECK(all_nan(rows_of(got.y, s.batch, s.L, width, 0, s.t_begin)));
    CHECK(all_nan(rows_of(got.y, s.batch, s.L, width, s.t_end, s.L)));
}

template <class T>
void check_converter(const shape& s, std::uint64_t seed, double bound) {
    CAPTURE(s.L);
    CAPTURE(s.p);
    CAPTURE(s.n);
    CAPTURE(s.g);
    CAPTURE(s.chunk);
    CAPTURE(s.t_end);
    const gpu_operands<T> op(s, seed);
    const int P = s.t_end;
    const auto got = run_converter(op, P);
    // converter_state starts from zeros: add the initial state decayed over the whole prefix.
    auto want = ref::converter_state(op.d, op.x, op.B, op.dt, op.A, P);
    const std::size_t pn = std::size_t(s.p) * s.n;
    for (int b = 0; b < s.batch; ++b)
        for (int k = 0; k < s.h; ++k) {
            double decay = 1.0;
            for (int m = 0; m < P; ++m) decay *= std::exp(op.dt[(std::size_t(b) * s.L + m) * s.h + k] * op.A[k]);
            for (std::size_t e = 0; e < pn; ++e) {
                const std::size_t i = (std::size_t(b) * s.h + k) * pn + e;
                want[i] += decay * op.init[i];
            }
        }
    const auto recurrence = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init, 0, P);
    const double err = ref::max_relative_error(got, want);
    const double err_rec = ref::max_relative_error(got, recurrence.final_state);
    describe("converter", type_name<T>(), s);
    std::printf(" state %.3g  vs recurrence %.3g\n", err, err_rec);
    CHECK(err <= bound);
    CHECK(err_rec <= bound);
}

// The decoding step (one token, s.L == 1) against the recurrence over that token.
template <class T>
void check_decode(const shape& s, std::uint64_t seed, double bound) {
    CAPTURE(s.batch);
    CAPTURE(s.h);
    CAPTURE(s.p);
    CAPTURE(s.n);
    CAPTURE(s.g);
    CAPTURE(s.pad);
    REQUIRE(s.L == 1);
    const gpu_operands<T> op(s, seed);
    device_buffer<float> y(std::size_t(s.batch) * s.h * s.p), state;
    upload(state, to_storage<float>(op.init));
    check_cuda(cudaMemset(y.data(), 0xff, y.size() * sizeof(float)), "cudaMemset (NaN poison)");
    decode_scan_kernel<transmamba::cuda>::run<T>(cuda_context{}, op.cfg, op.in, tensor_view<float, 4>(y.data(), op.y_shape()),
                                                 tensor_view<float, 4>(state.data(), op.state_shape()));
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (decode step)");
    const auto want = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init);
    const double y_err = ref::max_relative_error(download(y), want.y);
    const double s_err = ref::max_relative_error(download(state), want.final_state);
    describe("decode", type_name<T>(), s);
    std::printf(" y %.3g  state %.3g\n", y_err, s_err);
    CHECK(y_err <= bound);
    CHECK(s_err <= bound);
}

template <class T>
constexpr double chunked_y_bound() {
    return std::is_same_v<T, float> ? 1e-5 : 5e-3;
}
template <class T>
constexpr double state_bound() {
    return std::is_same_v<T, float> ? 1e-5 : 1e-4;
}

// t_begin and L not multiples of the chunk, L = 1, chunk 64 and 256, ngroups 1, 2 and nheads
// (C B^T shared by a group's heads, and computed inline per head),
// headdim and d_state from 16 to 128 (also 48, 80, 112: a column tile or a row length that is
// not a multiple of 32), a misaligned xBC row (scalar loads).
const shape chunked_shapes[] = {
    {2, 300, 4, 64, 128, 1, 64, 37, 300},
    {2, 520, 4, 32, 64, 2, 256, 0, 517},
    {2, 130, 4, 16, 16, 4, 64, 129, 130},
    {2, 300, 2, 128, 128, 1, 256, 3, 300},
    {2, 150, 16, 32, 64, 1, 64, 20, 150},
    {2, 200, 2, 128, 32, 2, 64, 64, 200},
    {2, 200, 4, 16, 128, 2, 256, 5, 198, 3},
    {2, 170, 4, 48, 48, 2, 64, 9, 170},  // headdim and d_state not multiples of 32
    {1, 140, 2, 80, 112, 1, 64, 0, 140},
};

// One warp multiplies a 16 x 32 A by a 32 x 16 B with every fragment loader of warp_mma.cuh
// (A stored [m][k] and [k][m], B stored [n][k] and [k][n]): out holds the 4 products, 16 x 16 each.
template <class T>
__global__ void fragment_probe(const float* a, const float* b, float* out) {
    namespace mma = kernels::cuda::mma;
    constexpr int M = 16, N = 16, K = 32, ld = 40;
    __shared__ alignas(16) T a_mk[M * ld], a_km[K * ld], b_nk[N * ld], b_kn[K * ld];
    for (int e = threadIdx.x; e < M * K; e += 32) {
        const int m = e / K, k = e % K;
        a_mk[m * ld + k] = a_km[k * ld + m] = kernels::cuda::from_float<T>(a[e]);
    }
    for (int e = threadIdx.x; e < K * N; e += 32) {
        const int k = e / N, n = e % N;
        b_kn[k * ld + n] = b_nk[n * ld + k] = kernels::cuda::from_float<T>(b[e]);
    }
    __syncwarp();
    mma::frag_c c[4][2];
    for (auto& v : c)
        for (auto& f : v) mma::zero(f);
    for (int k0 = 0; k0 < K; k0 += mma::k_step<T>) {
        mma::frag_a<T> a2[2];
        mma::frag_b<T> b2[2][2];
        mma::load_a_mk(a2[0], a_mk, ld, 0, k0);
        mma::load_a_km(a2[1], a_km, ld, 0, k0);
        mma::load_b2_nk(b2[0], b_nk, ld, 0, k0);
        mma::load_b2_kn(b2[1], b_kn, ld, 0, k0);
        for (int v = 0; v < 4; ++v)
            for (int nt = 0; nt < 2; ++nt) mma::mma<T>(c[v][nt], a2[v / 2], b2[v % 2][nt]);
    }
    const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    for (int v = 0; v < 4; ++v)
        for (int nt = 0; nt < 2; ++nt)
            for (int i = 0; i < 4; ++i) out[v * M * N + (g + 8 * (i >> 1)) * N + nt * 8 + 2 * t + (i & 1)] = c[v][nt].v[i];
}

// The float loaders that walk k in the permuted order of warp_mma.cuh, one warp: out[0] = A B from
// load_a_pair_mk (A[m][k]) and load_b_pair (B stored [n][k]); out[1] = (A B) X with the first
// product's accumulators as the A fragments (a_from_accumulator) and X [k][n] read at keys 2t, 2t + 1.
template <kernels::cuda::mma::float_mode Mode>
__global__ void float_pair_probe(const float* a, const float* b, const float* x, float* out) {
    namespace mma = kernels::cuda::mma;
    constexpr int M = 16, N = 16, K = 32, ld = 36;
    __shared__ alignas(16) float a_mk[M * ld], b_nk[N * ld], x_kn[N * ld];
    for (int e = threadIdx.x; e < M * K; e += 32) a_mk[(e / K) * ld + e % K] = a[e];
    for (int e = threadIdx.x; e < K * N; e += 32) b_nk[(e % N) * ld + e / N] = b[e];
    for (int e = threadIdx.x; e < N * N; e += 32) x_kn[(e / N) * ld + e % N] = x[e];
    __syncwarp();
    const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    mma::frag_c c[2], d[2];
    for (auto* f : {&c[0], &c[1], &d[0], &d[1]}) mma::zero(*f);
    for (int k0 = 0; k0 < K; k0 += 16) {
        mma::frag_a<float> a2[2];
        mma::load_a_pair_mk<Mode>(a2, a_mk, ld, 0, k0);
        for (int nt = 0; nt < 2; ++nt) {
            mma::frag_b<float> b2[2];
            mma::load_b_pair<Mode>(b2, b_nk + (nt * 8 + g) * ld + k0 + 4 * t);
            mma::mma<float, Mode>(c[nt], a2[0], b2[0]);
            mma::mma<float, Mode>(c[nt], a2[1], b2[1]);
        }
    }
    for (int ks = 0; ks < 2; ++ks) {  // k-step ks: the keys of c[ks], 8 ks + 2t and + 1
        mma::frag_a<float> af;
        mma::a_from_accumulator<Mode>(af, c[ks]);
        for (int nt = 0; nt < 2; ++nt) {
            mma::frag_b<float> bf;
            mma::set_tf32<Mode>(bf.hi[0], bf.lo[0], x_kn[(8 * ks + 2 * t) * ld + nt * 8 + g]);
            mma::set_tf32<Mode>(bf.hi[1], bf.lo[1], x_kn[(8 * ks + 2 * t + 1) * ld + nt * 8 + g]);
            mma::mma<float, Mode>(d[nt], af, bf);
        }
    }
    for (int nt = 0; nt < 2; ++nt)
        for (int i = 0; i < 4; ++i) {
            const int e = (g + 8 * (i >> 1)) * N + nt * 8 + 2 * t + (i & 1);
            out[e] = c[nt].v[i];
            out[M * N + e] = d[nt].v[i];
        }
}

}  // namespace

TEST_CASE("cuda warp_mma: float k-step pairs and accumulators reused as A multiply like the matrices") {
    namespace mma = kernels::cuda::mma;
    const auto a = ref::random_vector(16 * 32, 15), b = ref::random_vector(32 * 16, 16), x = ref::random_vector(16 * 16, 17);
    device_buffer<float> a_d, b_d, x_d, out(2 * 16 * 16);
    upload(a_d, to_storage<float>(a));
    upload(b_d, to_storage<float>(b));
    upload(x_d, to_storage<float>(x));
    std::vector<double> ab(16 * 16, 0.0), abx(16 * 16, 0.0);
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n)
            for (int k = 0; k < 32; ++k) ab[m * 16 + n] += double(float(a[m * 32 + k])) * double(float(b[k * 16 + n]));
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n)
            for (int k = 0; k < 16; ++k) abx[m * 16 + n] += ab[m * 16 + k] * double(float(x[k * 16 + n]));
    const auto check = [&](auto kernel, const char* mode, double bound) {
        kernel<<<1, 32>>>(a_d.data(), b_d.data(), x_d.data(), out.data());
        kernels::cuda::check_launch("float_pair_probe");
        const auto got = download(out);
        const double e1 = ref::max_relative_error(std::vector<double>(got.begin(), got.begin() + 256), ab);
        const double e2 = ref::max_relative_error(std::vector<double>(got.begin() + 256, got.end()), abx);
        std::printf("fragments  float %s pairs: A B %.3g, (A B) X %.3g\n", mode, e1, e2);
        CHECK(e1 <= bound);
        CHECK(e2 <= bound);
    };
    check(float_pair_probe<mma::float_mode::tf32x3>, "3xTF32", 1e-5);
    check(float_pair_probe<mma::float_mode::tf32>, "tf32", 2e-3);
}

TEST_CASE_TEMPLATE("cuda warp_mma fragments multiply like the matrices they load", T, float, __nv_bfloat16) {
    const auto a = rounded<T>(ref::random_vector(16 * 32, 5));
    const auto b = rounded<T>(ref::random_vector(32 * 16, 6));
    device_buffer<float> a_d, b_d, out(4 * 16 * 16);
    upload(a_d, to_storage<float>(a));
    upload(b_d, to_storage<float>(b));
    fragment_probe<T><<<1, 32>>>(a_d.data(), b_d.data(), out.data());
    kernels::cuda::check_launch("fragment_probe");
    const auto got = download(out);
    std::vector<double> want(16 * 16, 0.0);
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n)
            for (int k = 0; k < 32; ++k) want[m * 16 + n] += a[m * 32 + k] * b[k * 16 + n];
    const char* variants[] = {"A[m][k] B[n][k]", "A[m][k] B[k][n]", "A[k][m] B[n][k]", "A[k][m] B[k][n]"};
    for (int v = 0; v < 4; ++v) {
        const std::vector<double> part(got.begin() + v * 256, got.begin() + (v + 1) * 256);
        const double err = ref::max_relative_error(part, want);
        std::printf("fragments  %-5s %s: %.3g\n", type_name<T>(), variants[v], err);
        CHECK(err <= 1e-5);
    }
}

TEST_CASE_TEMPLATE("cuda chunked_ssd_scan matches the float64 recurrence", T, float, __nv_bfloat16) {
    std::uint64_t seed = 11;
    for (const auto& s : chunked_shapes) check_scan<chunked_ssd_scan, T>(s, seed++, chunked_y_bound<T>(), state_bound<T>(), "chunked");
}

// ssd::tf32_policy: one tf32 pass per product (~1e-3, mamba_ssm's accuracy for float inputs).
TEST_CASE("cuda chunked_ssd_scan with the tf32 policy is within 5e-3 of the float64 recurrence") {
    std::uint64_t seed = 91;
    for (const auto& s : chunked_shapes)
        check_scan<chunked_ssd_scan, float, kernels::cuda::ssd::tf32_policy>(s, seed++, 5e-3, 5e-3, "tf32");
}

TEST_CASE_TEMPLATE("cuda sequential_scan matches the float64 recurrence", T, float, __nv_bfloat16) {
    const shape shapes[] = {
        {2, 300, 4, 64, 128, 1, 64, 37, 300},
        {2, 130, 4, 16, 16, 4, 64, 129, 130},
        {2, 100, 2, 128, 128, 2, 64, 0, 97, 3},
    };
    std::uint64_t seed = 31;
    for (const auto& s : shapes) check_scan<sequential_scan, T>(s, seed++, 1e-5, 1e-5, "sequential");
}

TEST_CASE_TEMPLATE("cuda exact_converter equals the prefix's recurrence state", T, float, __nv_bfloat16) {
    // t_end is the prefix P: not a multiple of the chunk, 1, L, exactly one chunk.
    const shape shapes[] = {
        {2, 300, 4, 64, 128, 1, 64, 0, 200},
        {2, 300, 4, 32, 64, 2, 256, 0, 1},
        {2, 300, 4, 16, 32, 4, 64, 0, 300},
        {2, 300, 2, 128, 128, 1, 256, 0, 256},
        {2, 300, 4, 64, 16, 2, 64, 0, 131, 3},
    };
    std::uint64_t seed = 51;
    for (const auto& s : shapes) check_converter<T>(s, seed++, state_bound<T>());
}

// Segments of 2, 3 and all chunks per block give the state of one chunk per block (and of the
// recurrence), the initial state included.
TEST_CASE_TEMPLATE("cuda exact_converter: chunk_state blocks that reduce a segment of chunks", T, float, __nv_bfloat16) {
    const shape shapes[] = {
        {2, 300, 4, 64, 128, 1, 64, 0, 300},  // 5 chunks, the last one short
        {1, 600, 2, 32, 64, 2, 64, 0, 517},   // 9 chunks
        {2, 300, 2, 128, 32, 1, 256, 0, 300, 3},
    };
    std::uint64_t seed = 61;
    for (const auto& s : shapes) {
        const gpu_operands<T> op(s, seed++);
        const auto one = run_converter_segments(op, s.t_end, 1);
        const auto recurrence = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init, 0, s.t_end);
        const int nchunks = (s.t_end + s.chunk - 1) / s.chunk;
        for (int per_block : {2, 3, nchunks}) {
            CAPTURE(per_block);
            const auto got = run_converter_segments(op, s.t_end, per_block);
            const double err = ref::max_relative_error(got, recurrence.final_state);
            const double vs_one = ref::max_relative_error(got, one);
            describe("segments", type_name<T>(), s);
            std::printf(" %d chunks per block: vs recurrence %.3g, vs one chunk per block %.3g\n", per_block, err, vs_one);
            CHECK(err <= state_bound<T>());
            CHECK(vs_one <= 1e-5);
        }
    }
}

// float32 arithmetic on inputs rounded to T: 1e-5 for every storage type.
TEST_CASE_TEMPLATE("cuda decode_scan: one token of a batch equals the recurrence", T, float, __nv_bfloat16) {
    std::uint64_t seed = 500;
    for (const shape& s : {shape{1, 1, 4, 16, 32, 1, 64, 0, 1}, shape{3, 1, 4, 16, 32, 2, 64, 0, 1},
                           shape{2, 1, 8, 64, 128, 8, 64, 0, 1}, shape{5, 1, 6, 32, 16, 3, 64, 0, 1},
                           shape{2, 1, 64, 64, 128, 1, 64, 0, 1}, shape{4, 1, 4, 128, 64, 2, 64, 0, 1},
                           shape{2, 1, 4, 16, 32, 2, 64, 0, 1, 3},  // misaligned B / C rows: scalar loads
                           shape{136, 1, 64, 64, 128, 8, 64, 0, 1}})  // a large batch
        check_decode<T>(s, ++seed, 1e-5);
}

// Two decoding steps in a row on the same state buffer (s.L == 2: token 0, then token 1) against
// the recurrence over both tokens: the state is advanced in place, and the second step reads what
// the first wrote. `rows`: the kernel's rows per thread (decode_scan_kernel::run_with).
template <class T>
void check_decode_steps(const shape& s, int rows, std::uint64_t seed, double bound) {
    CAPTURE(s.batch);
    CAPTURE(s.h);
    CAPTURE(s.p);
    CAPTURE(s.n);
    CAPTURE(s.g);
    CAPTURE(s.pad);
    CAPTURE(rows);
    REQUIRE(s.L == 2);
    const gpu_operands<T> op(s, seed);
    const index_t hp = index_t(s.h) * s.p;
    device_buffer<float> y(std::size_t(s.batch) * 2 * hp), state;
    upload(state, to_storage<float>(op.init));
    check_cuda(cudaMemset(y.data(), 0xff, y.size() * sizeof(float)), "cudaMemset (NaN poison)");
    const auto token = [](const auto& v, index_t t) {
        using V = std::remove_cvref_t<decltype(v)>;
        auto sh = v.shape();
        sh[1] = 1;
        return V(v.data() + t * v.stride(1), sh, v.strides());
    };
    for (index_t t = 0; t < 2; ++t) {
        ssm_inputs<T> in = op.in;
        in.x = token(op.in.x, t);
        in.B = token(op.in.B, t);
        in.C = token(op.in.C, t);
        in.dt = token(op.in.dt, t);
        const tensor_view<float, 4> yt(y.data() + t * hp, {s.batch, 1, s.h, s.p}, {2 * hp, hp, s.p, 1});
        decode_scan_kernel<transmamba::cuda>::run_with<T>(cuda_context{}, op.cfg, in, yt,
                                                          tensor_view<float, 4>(state.data(), op.state_shape()), rows);
    }
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (decode steps)");
    const auto want = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init);
    const double y_err = ref::max_relative_error(download(y), want.y);
    const double s_err = ref::max_relative_error(download(state), want.final_state);
    describe("decode x2", type_name<T>(), s);
    std::printf(" (%d rows per thread) y %.3g  state %.3g\n", rows, y_err, s_err);
    CHECK(y_err <= bound);
    CHECK(s_err <= bound);
}

// The benchmark's shapes (64 heads x 64 x 128 at batch 1 and 64) and odd ones: headdim not a
// multiple of the block's rows, d_state 4 (one lane per row), 48 (16 lanes, 4 idle), 256 (two
// chunks per lane), misaligned B / C rows (scalar loads, float too), with each of the kernel's
// shapes (1, 2 and 4 rows per thread).
TEST_CASE_TEMPLATE("cuda decode_scan: two steps in place equal the recurrence, every kernel shape", T, float,
                   __nv_bfloat16) {
    std::uint64_t seed = 700;
    for (const shape& s : {shape{1, 2, 64, 64, 128, 1, 64, 0, 2}, shape{64, 2, 64, 64, 128, 8, 64, 0, 2},
                           shape{1, 2, 3, 37, 48, 1, 64, 0, 2}, shape{1, 2, 2, 5, 4, 1, 64, 0, 2, 3},
                           shape{3, 2, 4, 24, 256, 2, 64, 0, 2}, shape{7, 2, 12, 37, 48, 3, 64, 0, 2, 3}})
        for (int rows : {1, 2, 4}) check_decode_steps<T>(s, rows, ++seed, 1e-5);
    const gpu_operands<T> op(shape{1, 1, 2, 8, 16, 1, 64, 0, 1}, 9);
    device_buffer<float> y(16), state(2 * 8 * 16);
    CHECK_THROWS_AS(decode_scan_kernel<transmamba::cuda>::run_with<T>(
                        cuda_context{}, op.cfg, op.in, tensor_view<float, 4>(y.data(), op.y_shape()),
                        tensor_view<float, 4>(state.data(), op.state_shape()), 3),
                    error);
}

TEST_CASE("cuda decode_scan: shapes that do not match are a transmamba::error") {
    const gpu_operands<float> op(shape{2, 1, 4, 16, 32, 2, 64, 0, 1}, 9);
    device_buffer<float> y(2 * 4 * 16), state(2 * 4 * 16 * 32);
    auto wrong = op.cfg;
    wrong.d_state = 16;
    CHECK_THROWS_AS(decode_scan_kernel<transmamba::cuda>::run<float>(cuda_context{}, wrong, op.in,
                                                                      tensor_view<float, 4>(y.data(), op.y_shape()),
                                                                      tensor_view<float, 4>(state.data(), op.state_shape())),
                    error);
    CHECK_THROWS_AS(decode_scan_kernel<transmamba::cuda>::run<float>(cuda_context{}, op.cfg, op.in,
                                                                      tensor_view<float, 4>(y.data(), op.y_shape()),
                                                                      tensor_view<float, 4>(state.data(), {2, 4, 32, 16})),
                    error);
}

TEST_CASE("cuda ssd: unsupported sizes are a transmamba::error") {
    const shape s{1, 8, 2, 24, 16, 1, 64, 0, 8};
    const gpu_operands<float> op(s, 3);
    CHECK_THROWS_AS(run_scan<chunked_ssd_scan>(op), transmamba::error);
    CHECK_THROWS_AS(run_converter(op, 4), transmamba::error);
}

// Float chunk_state blocks that walk several 64-token tiles through the two cp.async stages (chunk
// 256: four tiles and a short one; a converter segment of four chunks), small enough for racecheck:
// the case the float step's old extra barriers were for (docs/cuda.md). Run with -tc="*sanitizer*".
TEST_CASE("cuda ssd: float tiles walked several per block, for the sanitizer") {
    const shape long_chunks{1, 300, 2, 16, 32, 1, 256, 0, 300};
    check_scan<chunked_ssd_scan, float>(long_chunks, 81, chunked_y_bound<float>(), state_bound<float>(), "chunked");
    check_scan<chunked_ssd_scan, float, kernels::cuda::ssd::tf32_policy>(long_chunks, 82, 5e-3, 5e-3, "tf32");
    check_converter<float>(long_chunks, 83, state_bound<float>());
    const shape chunks{1, 250, 2, 16, 32, 1, 64, 0, 250};
    const gpu_operands<float> op(chunks, 84);
    const auto recurrence = ref::ssm_recurrence(op.d, op.x, op.B, op.C, op.dt, op.A, op.D, op.init, 0, chunks.t_end);
    const double err = ref::max_relative_error(run_converter_segments(op, chunks.t_end, 4), recurrence.final_state);
    describe("segments", "float", chunks);
    std::printf(" 4 chunks per block: vs recurrence %.3g\n", err);
    CHECK(err <= state_bound<float>());
}

// A small subset for compute-sanitizer (memcheck, racecheck): run with -tc="*sanitizer*".
TEST_CASE("cuda ssd: small shapes for the sanitizer") {
    const shape s{2, 90, 4, 16, 32, 2, 64, 7, 90};
    check_scan<chunked_ssd_scan, __nv_bfloat16>(s, 71, chunked_y_bound<__nv_bfloat16>(), state_bound<__nv_bfloat16>(), "chunked");
    check_scan<chunked_ssd_scan, float>(s, 72, chunked_y_bound<float>(), state_bound<float>(), "chunked");
    const shape wide{1, 70, 2, 128, 64, 1, 64, 0, 70};
    check_scan<chunked_ssd_scan, __nv_bfloat16>(wide, 73, chunked_y_bound<__nv_bfloat16>(), state_bound<__nv_bfloat16>(), "chunked");
    const shape per_head{2, 90, 4, 16, 32, 4, 64, 7, 90};  // C B^T computed inline (one head per group)
    check_scan<chunked_ssd_scan, __nv_bfloat16>(per_head, 76, chunked_y_bound<__nv_bfloat16>(), state_bound<__nv_bfloat16>(), "chunked");
    check_scan<sequential_scan, __nv_bfloat16>(s, 74, 1e-5, 1e-5, "sequential");
    check_converter<__nv_bfloat16>(shape{2, 90, 4, 16, 32, 2, 64, 0, 77}, 75, state_bound<__nv_bfloat16>());
}
