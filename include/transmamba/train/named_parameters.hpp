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

// The parameters of `module` (anything with for_each_parameter(name, buffer, shape) in host memory:
// the CPU backend; a model, or its gradients) as spans of T into its buffers, T the buffers' element
// type (const for a read-only view). The spans stay valid while the module's buffers are not resized.
template <class T, class Module>
std::vector<named_span<T>> named_parameters(Module& module) {
    std::vector<named_span<T>> out;
    module.for_each_parameter([&](const auto& name, auto& buf, const std::vector<index_t>& shape) {
        using E = std::remove_reference_t<decltype(*buf.data())>;
        static_assert(std::is_same_v<std::remove_const_t<E>, std::remove_const_t<T>>,
                      "named_parameters<T>: T is not the element type of the module's buffers");
        out.push_back({std::string(name), std::span<T>(buf.data(), buf.size()), shape});
    });
    return out;
}

// The same for a model, its element type taken from the model (const for a const model).
template <class Module>
    requires requires { typename std::remove_const_t<Module>::value_type; }
auto named_parameters(Module& module) {
    static_assert(backend_traits<typename std::remove_const_t<Module>::backend>::host_accessible,
                  "named_parameters: the optimizer runs on host memory (the CPU backend)");
    using T = typename std::remove_const_t<Module>::value_type;
    return named_parameters<std::conditional_t<std::is_const_v<Module>, const T, T>>(module);
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
