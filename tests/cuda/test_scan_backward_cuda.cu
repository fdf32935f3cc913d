// The CUDA SSM backward (backend/cuda/scan_backward.cuh, converter_backward.cuh) against the CPU
// backward in double (backend/cpu/scan_backward.hpp, converter_backward.hpp, themselves checked
// against finite differences in tests/backend/cpu/), chained as the mixer chains them: the scan over
// [P, L) from dL/dS_final, then the converter over [0, P) from the scan's dL/dS at P. Both read the
// same inputs (x, B, C rounded to the storage type), the same saved block states.
//
// Bounds (max |got - want| / max |want| per gradient): float 1e-4, bf16 2e-2 (the brief's); the
// arithmetic is float32 on both storages, so both sit near 1e-6.
// The scratch is poisoned with NaN and d_initial too: a partial or gradient left unwritten shows as
// NaN, which max_relative_error turns into +inf.
#include <doctest/doctest.h>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include <transmamba/backend/cuda/converter_backward.cuh>
#include <transmamba/backend/cuda/scan_backward.cuh>
#include <transmamba/training.hpp>

#include "reference/reference.hpp"

namespace test_scan_backward_cuda {

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

template <class T>
void upload(device_buffer<T>& d, const std::vector<double>& h) {
    std::vector<T> s(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) s[i] = kernels::cuda::from_float<T>(static_cast<float>(h[i]));
    d.resize(h.size());
    check_cuda(cudaMemcpy(d.data(), s.data(), s.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
}

std::vector<double> download(const device_buffer<float>& d) {
    std::vector<float> h(d.size());
    check_cuda(cudaMemcpy(h.data(), d.data(), h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
    return {h.begin(), h.end()};
}

struct shape {
    int batch, L, h, p, n, g, chunk;
    int P;  // the scan runs over [P, L), the converter over [0, P)
};

struct grads_result {
    std::vector<double> x, B, C, dt, A, D, dstate, d_initial;
};

template <class T>
void check_case(const shape& s, std::uint64_t seed, double bound) {
    CAPTURE(s.L);
    CAPTURE(s.p);
    CAPTURE(s.n);
    CAPTURE(s.g);
    CAPTURE(s.chunk);
    CAPTURE(s.P);
    const std::size_t rows = std::size_t(s.batch) * s.L, hp = std::size_t(s.h) * s.p, gn = std::size_t(s.g) * s.n;
    const std::size_t pn = std::size_t(s.p) * s.n, states = std::size_t(s.batch) * s.h * pn;
    auto x = rounded<T>(ref::random_vector(rows * hp, seed * 7919 + 1));
    auto B = rounded<T>(ref::random_vector(rows * gn, seed * 7919 + 2));
    auto C = rounded<T>(ref::random_vector(rows * gn, seed * 7919 + 3));
    auto dt = rounded<float>(ref::random_vector(rows * s.h, seed * 7919 + 4, 1e-3, 0.2));
    auto A = rounded<float>(ref::random_vector(s.h, seed * 7919 + 5, -1.5, -0.05));
    auto D = rounded<float>(ref::random_vector(s.h, seed * 7919 + 6, 0.5, 1.5));
    auto init = rounded<float>(ref::random_vector(states, seed * 7919 + 7));
    auto dy = rounded<float>(ref::random_vector(rows * hp, seed * 7919 + 8));
    auto dfinal = rounded<float>(ref::random_vector(states, seed * 7919 + 9));
    auto state_at_P = rounded<float>(ref::random_vector(states, seed * 7919 + 10));

    // The saved block states: the recurrence from the state at P, before P + i * chunk.
    const index_t blocks = kernels::cpu::scan_blocks(s.P, s.L, s.chunk);
    std::vector<double> block_states(std::size_t(s.batch) * blocks * s.h * pn);
    for (int b = 0; b < s.batch; ++b)
        for (int k = 0; k < s.h; ++k) {
            std::vector<double> S(state_at_P.begin() + (std::size_t(b) * s.h + k) * pn,
                                  state_at_P.begin() + (std::size_t(b) * s.h + k + 1) * pn);
            const int grp = k / (s.h / s.g);
            for (int t = s.P; t < s.L; ++t) {
                if ((t - s.P) % s.chunk == 0) {
                    const std::size_t blk = (t - s.P) / s.chunk;
                    std::copy(S.begin(), S.end(), block_states.begin() + ((std::size_t(b) * blocks + blk) * s.h + k) * pn);
                }
                const std::size_t r = std::size_t(b) * s.L + t;
                const double d = dt[r * s.h + k], a = std::exp(d * A[k]);
                for (int i = 0; i < s.p; ++i)
                    for (int j = 0; j < s.n; ++j)
                        S[i * s.n + j] = a * S[i * s.n + j] + d * x[r * hp + k * s.p + i] * B[r * gn + grp * s.n + j];
            }
        }
    block_states = rounded<float>(block_states);

    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = s.h * s.p;
    cfg.headdim = s.p;
    cfg.d_state = s.n;
    cfg.ngroups = s.g;
    cfg.chunk_size = s.chunk;
    cfg.validate();
    const index_t bt = s.batch, L = s.L, h = s.h, p = s.p, n = s.n, g = s.g;
    const extents<4> state_shape{bt, h, p, n};

    // The CPU, in double.
    grads_result want;
    {
        want.x.assign(rows * hp, 0.0);
        want.B.assign(rows * gn, 0.0);
        want.C.assign(rows * gn, 0.0);
        want.dt.assign(rows * s.h, 0.0);
        want.A.assign(std::size_t(s.batch) * s.h, 0.0);
        want.D.assign(std::size_t(s.batch) * s.h, 0.0);
        want.dstate = dfinal;
        want.d_initial.assign(states, std::nan(""));
        const ssm_inputs<double> in{tensor_view<const double, 4>(x.data(), {bt, L, h, p}),
                                    tensor_view<const double, 4>(B.data(), {bt, L, g, n}),
                                    tensor_view<const double, 4>(C.data(), {bt, L, g, n}),
                                    tensor_view<const double, 3>(dt.data(), {bt, L, h}),
                                    A.data(),
                                    D.data()};
        const ssm_grads<double> gr{tensor_view<double, 4>(want.x.data(), {bt, L, h, p}),
                                   tensor_view<double, 4>(want.B.data(), {bt, L, g, n}),
                                   tensor_view<double, 4>(want.C.data(), {bt, L, g, n}),
                                   tensor_view<double, 3>(want.dt.data(), {bt, L, h}),
                                   tensor_view<double, 2>(want.A.data(), {bt, h}),
                                   tensor_view<double, 2>(want.D.data(), {bt, h})};
        using scan = scan_backward_kernel<chunked_ssd_scan, cpu>;
        using conv = converter_backward_kernel<exact_converter, cpu>;
        std::vector<std::byte> scratch(std::max(scan::scratch_bytes<double>(cfg, bt, L), conv::scratch_bytes<double>(cfg, bt, L)) + 64);
        const workspace_span ws{scratch.data(), scratch.size()};
        scan::run(cpu_context{}, cfg, in, s.P, L, tensor_view<const double, 5>(block_states.data(), {bt, blocks, h, p, n}),
                  tensor_view<const double, 4>(dy.data(), {bt, L, h, p}), tensor_view<double, 4>(want.dstate.data(), state_shape),
                  gr, ws);
        conv::run(cpu_context{}, cfg, in, s.P, tensor_view<const double, 4>(init.data(), state_shape),
                  tensor_view<const double, 4>(want.dstate.data(), state_shape), gr,
                  tensor_view<double, 4>(want.d_initial.data(), state_shape), ws);
    }

    // The GPU.
    grads_result got;
    {
        device_buffer<T> xd, Bd, Cd;
        device_buffer<float> dtd, Ad, Dd, initd, dyd, bsd, Gd, dI, gx, gB, gC, gdt, gA, gD;
        upload(xd, x);
        upload(Bd, B);
        upload(Cd, C);
        upload(dtd, dt);
        upload(Ad, A);
        upload(Dd, D);
        upload(initd, init);
        upload(dyd, dy);
        upload(bsd, block_states);
        upload(Gd, dfinal);
        upload(dI, std::vector<double>(states, std::nan("")));
        upload(gx, std::vector<double>(rows * hp, 0.0));
        upload(gB, std::vector<double>(rows * gn, 0.0));
        upload(gC, std::vector<double>(rows * gn, 0.0));
        upload(gdt, std::vector<double>(rows * s.h, 0.0));
        upload(gA, std::vector<double>(std::size_t(s.batch) * s.h, 0.0));
        upload(gD, std::vector<double>(std::size_t(s.batch) * s.h, 0.0));
        const ssm_inputs<T> in{tensor_view<const T, 4>(xd.data(), {bt, L, h, p}),
                               tensor_view<const T, 4>(Bd.data(), {bt, L, g, n}),
                               tensor_view<const T, 4>(Cd.data(), {bt, L, g, n}),
                               tensor_view<const float, 3>(dtd.data(), {bt, L, h}),
                               Ad.data(),
                               Dd.data()};
        const ssm_grads<float> gr{tensor_view<float, 4>(gx.data(), {bt, L, h, p}),
                                  tensor_view<float, 4>(gB.data(), {bt, L, g, n}),
                                  tensor_view<float, 4>(gC.data(), {bt, L, g, n}),
                                  tensor_view<float, 3>(gdt.data(), {bt, L, h}),
                                  tensor_view<float, 2>(gA.data(), {bt, h}),
                                  tensor_view<float, 2>(gD.data(), {bt, h})};
        using scan = scan_backward_kernel<chunked_ssd_scan, transmamba::cuda>;
        using conv = converter_backward_kernel<exact_converter, transmamba::cuda>;
        device_buffer<std::byte> scratch(
            std::max(scan::scratch_bytes<T>(cfg, bt, L), conv::scratch_bytes<T>(cfg, bt, L)) + 256);
        check_cuda(cudaMemset(scratch.data(), 0xff, scratch.size()), "cudaMemset (NaN poison)");
        const workspace_span ws{scratch.data(), scratch.size()};
        const cuda_context ctx{};
        scan::run<T>(ctx, cfg, in, s.P, L, tensor_view<const float, 5>(bsd.data(), {bt, blocks, h, p, n}),
                     tensor_view<const float, 4>(dyd.data(), {bt, L, h, p}), tensor_view<float, 4>(Gd.data(), state_shape),
                     gr, ws);
        conv::run<T>(ctx, cfg, in, s.P, tensor_view<const float, 4>(initd.data(), state_shape),
                     tensor_view<const float, 4>(Gd.data(), state_shape), gr, tensor_view<float, 4>(dI.data(), state_shape),
                     ws);
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (scan and converter backward)");
        got = {download(gx), download(gB), download(gC), download(gdt), download(gA), download(gD), download(Gd), download(dI)};
    }

    std::printf("scan+converter backward %-5s b%d L%d h%d p%d n%d g%d chunk%d P%d:", type_name<T>(), s.batch, s.L, s.h,
                s.p, s.n, s.g, s.chunk, s.P);
    const auto expect = [&](const char* name, const std::vector<double>& a, const std::vector<double>& w) {
        const double err = ref::max_relative_error(a, w);
        std::printf(" %s %.2g", name, err);
        CAPTURE(name);
        CHECK(err <= bound);
    };
    expect("dx", got.x, want.x);
    expect("dB", got.B, want.B);
    expect("dC", got.C, want.C);
    expect("ddt", got.dt, want.dt);
    expect("dA", got.A, want.A);
    expect("dD", got.D, want.D);
    expect("dS_P", got.dstate, want.dstate);
    expect("dS_init", got.d_initial, want.d_initial);
    std::printf("\n");
}

template <class T>
constexpr double bound() {
    return std::is_same_v<T, float> ? 1e-4 : 2e-2;
}

// P at 0, inside a chunk, on a chunk boundary, at L; ngroups 1, 2 and h; L not a multiple of the chunk.
TEST_CASE_TEMPLATE("cuda scan backward small: scan and converter gradients equal the CPU's in double", T, float,
                   __nv_bfloat16) {
    const shape shapes[] = {
        {2, 37, 4, 16, 16, 1, 8, 0},
        {2, 37, 4, 16, 32, 2, 8, 13},
        {1, 40, 4, 32, 16, 4, 8, 16},
        {2, 29, 2, 16, 16, 1, 8, 29},
    };
    std::uint64_t seed = 3;
    for (const auto& s : shapes) check_case<T>(s, seed++, bound<T>());
}

TEST_CASE_TEMPLATE("cuda scan backward: the mixer's sizes, chunk 64 and 256, equal the CPU's in double", T, float,
                   __nv_bfloat16) {
    const shape shapes[] = {
        {2, 300, 4, 64, 128, 1, 64, 37},
        {1, 520, 4, 32, 64, 4, 256, 256},
        {2, 200, 2, 128, 128, 2, 64, 0},
        {1, 150, 8, 64, 64, 2, 64, 150},
    };
    std::uint64_t seed = 41;
    for (const auto& s : shapes) check_case<T>(s, seed++, bound<T>());
}

}  // namespace test_scan_backward_cuda
