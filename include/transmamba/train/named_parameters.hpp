#pragma once
// A module's parameters (or their gradients) as a list of named flat spans, in the module's own
// order (for_each_parameter: the checkpoint's names). The optimizer, the clipping and the training
// checkpoint all walk these lists, so they never depend on how a module stores its buffers.
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class T>
struct named_span {
    std::string name;
    std::span<T> values;
    std::vector<index_t> shape;
};

// The parameters of `module` (anything with for_each_parameter(name, buffer, shape), in host memory:
// the CPU backend) as spans into its buffers. The spans stay valid while the module's buffers are
// not resized.
template <class Module>
auto named_parameters(Module& module) {
    static_assert(backend_traits<typename std::remove_const_t<Module>::backend>::host_accessible,
                  "named_parameters: the optimizer runs on host memory (the CPU backend)");
    using T = std::remove_reference_t<decltype(*std::declval<typename std::remove_const_t<Module>::buffer&>().data())>;
    using element = std::conditional_t<std::is_const_v<Module>, const T, T>;
    std::vector<named_span<element>> out;
    module.for_each_parameter([&](const auto& name, auto& buf, const std::vector<index_t>& shape) {
        out.push_back({std::string(name), std::span<element>(buf.data(), buf.size()), shape});
    });
    return out;
}

inline std::string dims_text(const std::vector<index_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

// Throws unless `b` lists the same names and shapes as `a`, in the same order (a gradient list for
// a parameter list, a checkpoint's moments for a model).
template <class A, class B>
void require_same_layout(const std::vector<named_span<A>>& a, const std::vector<named_span<B>>& b, std::string_view what_a,
                         std::string_view what_b) {
    require(a.size() == b.size(), what_b, " lists ", b.size(), " tensors, but ", what_a, " has ", a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        require(a[i].name == b[i].name, what_b, " tensor ", i, " is '", b[i].name, "', but ", what_a, " tensor ", i, " is '",
                a[i].name, "'");
        require(a[i].shape == b[i].shape && a[i].values.size() == b[i].values.size(), what_b, " tensor '", b[i].name,
                "' has shape ", dims_text(b[i].shape), ", but ", what_a, " has ", dims_text(a[i].shape));
    }
}

}  // namespace transmamba
