// ggml's FLASH_ATTN_EXT on the CPU at the shapes of our CPU attention benchmark (bench/cpu/kernels.cpp,
// `attention/transmamba/fp32/b:1/L:P/h:24/p:64/n:128/g:G/P:P`): causal attention over a prefix of
// P tokens, queries C and keys B shared by the h / g heads of a group (d_state n), values x per head
// (headdim p). Built and run by bench/peers/ggml_cpu.sh against the ggml it builds in .peers/.
//
// Two formulations, both with ggml's usual f32 queries and f16 K/V and a causal f16 mask:
//   ggml          as a user of ggml runs it: one attention head per query head (C and B repeated h
//                 times, ggml's multi-head layout), values of width p;
//   ggml_grouped  the cheapest ggml can do: one head per group whose values are the h/g heads' x
//                 side by side (width h/g * p), so the scores and the softmax are computed once per
//                 group, as our kernel does.
// Prints one line per case: `<name> <median ms> <runs>` (median of `runs` timed graph computations
// after one warm-up).
//
// Usage: ggml_attention <threads> <P> [<P> ...]
#include <ggml-cpu.h>
#include <ggml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int heads = 24, headdim = 64, dstate = 128;

void fill_uniform(ggml_tensor* t, std::mt19937& rng) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int64_t n = ggml_nelements(t);
    if (t->type == GGML_TYPE_F32) {
        auto* d = static_cast<float*>(t->data);
        for (int64_t i = 0; i < n; ++i) d[i] = u(rng);
    } else {
        auto* d = static_cast<ggml_fp16_t*>(t->data);
        for (int64_t i = 0; i < n; ++i) d[i] = ggml_fp32_to_fp16(u(rng));
    }
}

// One case: `groups` heads of queries/keys, each with values of width `value_width`, `query_heads`
// query heads per key head (ggml's broadcast).
double run_case(int threads, int P, int kv_heads, int value_width, int runs) {
    const std::size_t bytes = std::size_t(P) * (dstate * 4 * kv_heads + dstate * 2 * kv_heads + value_width * 2 * kv_heads +
                                                 value_width * 4 * kv_heads + 2 * P) +
                              (64u << 20);
    ggml_init_params params{bytes, nullptr, false};
    ggml_context* ctx = ggml_init(params);
    if (!ctx) {
        std::fprintf(stderr, "ggml_init failed (%zu bytes)\n", bytes);
        std::exit(1);
    }
    ggml_tensor* q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, dstate, P, kv_heads, 1);
    ggml_tensor* k = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, dstate, P, kv_heads, 1);
    ggml_tensor* v = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, value_width, P, kv_heads, 1);
    ggml_tensor* mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, P, P, 1, 1);
    std::mt19937 rng(1234);
    fill_uniform(q, rng);
    fill_uniform(k, rng);
    fill_uniform(v, rng);
    auto* m = static_cast<ggml_fp16_t*>(mask->data);
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f), minus_inf = ggml_fp32_to_fp16(-INFINITY);
    for (int i = 0; i < P; ++i)
        for (int j = 0; j < P; ++j) m[std::size_t(i) * P + j] = j <= i ? zero : minus_inf;
    ggml_tensor* out = ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0f / std::sqrt(float(dstate)), 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32);
    ggml_cgraph* graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, out);

    ggml_graph_compute_with_ctx(ctx, graph, threads);  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < runs; ++r) {
        const int64_t t0 = ggml_time_us();
        ggml_graph_compute_with_ctx(ctx, graph, threads);
        ms.push_back(double(ggml_time_us() - t0) / 1e3);
    }
    ggml_free(ctx);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <threads> <P> [<P> ...]\n", argv[0]);
        return 2;
    }
    ggml_time_init();
    const int threads = std::atoi(argv[1]);
    for (int a = 2; a < argc; ++a) {
        const int P = std::atoi(argv[a]);
        const int runs = P <= 1024 ? 7 : 3;
        {
            const int g = 1;  // one group: bench_cpu_kernels' g = 1 rows
            const std::string keys = "/b:1/L:" + std::to_string(P) + "/h:" + std::to_string(heads) + "/p:" +
                                     std::to_string(headdim) + "/n:" + std::to_string(dstate) + "/g:" +
                                     std::to_string(g) + "/P:" + std::to_string(P);
            const double per_head = run_case(threads, P, heads, headdim, runs);
            std::printf("attention/ggml/f16%s %.4f %d\n", keys.c_str(), per_head, runs);
            const double grouped = run_case(threads, P, g, heads / g * headdim, runs);
            std::printf("attention/ggml_grouped/f16%s %.4f %d\n", keys.c_str(), grouped, runs);
            std::fflush(stdout);
        }
    }
    return 0;
}
