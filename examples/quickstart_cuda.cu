// The quickstart on the GPU: the same layer with `cuda` as its backend and bfloat16 storage.
#include <transmamba/backend/cuda.cuh>
#include <transmamba/transmamba.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace transmamba;
using T = __nv_bfloat16;  // storage; arithmetic, softmax statistics and the state are float32
using layer = mixer<T, transmamba::cuda, paper_policies>;

int main() {
    mixer_config cfg;
    cfg.ngroups = 2;
    layer mix(cfg);
    randomize(mix.params(), /*seed=*/1);

    const index_t batch = 2, L = 600, d = cfg.d_model, P = 300;
    std::vector<T> u(batch * L * d), ssm(u.size()), hybrid(u.size());
    std::mt19937 rng(7);
    for (auto& v : u) v = __float2bfloat16(std::uniform_real_distribution<float>(-1, 1)(rng));

    device_buffer<T> du(u.size()), dout(u.size());
    backend_traits<transmamba::cuda>::copy_from_host(u.data(), du.data(), u.size(), {});
    workspace<transmamba::cuda> ws;
    const tensor_view<const T, 3> in(du.data(), {batch, L, d});
    for (auto [P_run, host] : {std::pair{index_t(0), &ssm}, std::pair{P, &hybrid}}) {
        mix.forward(in, {dout.data(), {batch, L, d}}, P_run, ws);
        backend_traits<transmamba::cuda>::copy_to_host(dout.data(), host->data(), u.size(), {});
        backend_traits<transmamba::cuda>::synchronize({});
    }
    double before = 0, after = 0;
    for (index_t i = 0; i < batch * L * d; ++i) {
        double& m = (i / d) % L < P ? before : after;
        m = std::fmax(m, std::fabs(__bfloat162float(hybrid[i]) - __bfloat162float(ssm[i])));
    }
    std::printf("max |hybrid - ssm| on tokens <  P: %.3g (attention differs)\n", before);
    std::printf("max |hybrid - ssm| on tokens >= P: %.3g (bf16 rounding of the output only)\n", after);
    return after < 0.1 && before > 0.1 ? 0 : 1;
}
