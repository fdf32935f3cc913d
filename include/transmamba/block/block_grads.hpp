#pragma once
// The gradients of one residual block's parameters (docs/training.md): the same names, shapes and
// for_each_parameter walk as the block's own, so an optimizer or a checkpoint writer visits a block
// and its gradients in step.
#include <string>
#include <string_view>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/block.hpp"
#include "transmamba/block/mixer_grads.hpp"

namespace transmamba {

// Of mixer_block: "norm.weight" (d_model) and "mixer.*" (a mixer_grads).
template <class T, class Backend>
struct mixer_block_grads {
    using buffer = typename backend_traits<Backend>::template buffer<T>;
    buffer norm_weight;
    mixer_grads<T, Backend> mixer;

    explicit mixer_block_grads(const model_config& cfg) : mixer(cfg.mixer) {
        norm_weight.resize(static_cast<std::size_t>(cfg.mixer.d_model));
    }

    template <class F>
    void for_each_parameter(F&& f) {
        visit(*this, f);
    }
    template <class F>
    void for_each_parameter(F&& f) const {
        visit(*this, f);
    }

private:
    template <class Self, class F>
    static void visit(Self& self, F& f) {
        f(std::string_view("norm.weight"), self.norm_weight, std::vector<index_t>{self.mixer.config.d_model});
        self.mixer.for_each([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
            f(std::string("mixer.") + std::string(name), buf, shape);
        });
    }
};

// Of mlp_block: "norm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight".
template <class T, class Backend>
struct mlp_block_grads {
    using buffer = typename backend_traits<Backend>::template buffer<T>;
    index_t d_model, d_ff;
    buffer norm_weight, gate_proj, up_proj, down_proj;

    explicit mlp_block_grads(const model_config& cfg) : d_model(cfg.mixer.d_model), d_ff(cfg.d_ff) {
        require(d_ff > 0, "mlp_block_grads needs model_config.d_ff > 0, got ", d_ff);
        for_each_parameter([](std::string_view, buffer& b, const std::vector<index_t>& shape) {
            std::size_t n = 1;
            for (auto e : shape) n *= static_cast<std::size_t>(e);
            b.resize(n);
        });
    }

    template <class F>
    void for_each_parameter(F&& f) {
        visit(*this, f);
    }
    template <class F>
    void for_each_parameter(F&& f) const {
        visit(*this, f);
    }

private:
    template <class Self, class F>
    static void visit(Self& self, F& f) {
        f(std::string_view("norm.weight"), self.norm_weight, std::vector<index_t>{self.d_model});
        f(std::string_view("mlp.gate_proj.weight"), self.gate_proj, std::vector<index_t>{self.d_ff, self.d_model});
        f(std::string_view("mlp.up_proj.weight"), self.up_proj, std::vector<index_t>{self.d_ff, self.d_model});
        f(std::string_view("mlp.down_proj.weight"), self.down_proj, std::vector<index_t>{self.d_model, self.d_ff});
    }
};

}  // namespace transmamba
