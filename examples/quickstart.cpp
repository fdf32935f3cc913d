// A TransMamba layer on the CPU: one set of weights, run at two TransPoints.
#include <transmamba/transmamba.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace transmamba;
using layer = mixer<float, cpu, paper_policies>;  // Eigen backend, the paper's policies

int main() {
    mixer_config cfg;  // d_model 256, headdim 64, d_state 128, chunk 256
    cfg.ngroups = 2;
    layer mix(cfg);
    randomize(mix.params(), /*seed=*/1);

    const index_t batch = 2, L = 600, d = cfg.d_model, P = 300;  // tokens [0, P) by attention
    std::vector<float> u(batch * L * d), ssm(u.size()), hybrid(u.size());
    std::mt19937 rng(7);
    for (auto& v : u) v = std::uniform_real_distribution<float>(-1, 1)(rng);

    workspace<cpu> ws;  // grows once, reused by every call
    const tensor_view<const float, 3> in(u.data(), {batch, L, d});
    mix.forward(in, {ssm.data(), {batch, L, d}}, /*transpoint=*/0, ws);  // pure Mamba2
    mix.forward(in, {hybrid.data(), {batch, L, d}}, P, ws);

    // The Memory Converter hands the SSM the exact state at P, so tokens >= P agree with the
    // pure-SSM run; tokens < P were mixed by attention instead and differ.
    double before = 0, after = 0;
    for (index_t i = 0; i < batch * L * d; ++i) {
        double& m = (i / d) % L < P ? before : after;
        m = std::fmax(m, std::fabs(hybrid[i] - ssm[i]));
    }
    std::printf("max |hybrid - ssm| on tokens <  P: %.3g (attention differs)\n", before);
    std::printf("max |hybrid - ssm| on tokens >= P: %.3g (converter is exact)\n", after);
    return after < 1e-4 && before > 1e-3 ? 0 : 1;
}
