#pragma once
// Clipping by global norm: with N = sqrt(sum over every gradient element of g^2), the gradients are
// scaled by min(1, max_norm / (N + 1e-6)) before the update (the rule of torch.nn.utils.
// clip_grad_norm_, so runs compare with PyTorch's). The scale is handed to the optimizer, which
// applies it as it reads each gradient: the gradient buffers are never rewritten.
//
// The sum runs in double, parameter by parameter in the list's order and element by element, so
// the norm is the same bits at every thread count.
#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/train/named_parameters.hpp"

namespace transmamba {

// sqrt(sum g^2) over every span. A NaN or an infinity is an error naming the first gradient that
// holds one: an update from it would silently destroy the weights.
template <class T>
double global_norm(const std::vector<named_span<T>>& grads) {
    double sum = 0;
    for (const auto& g : grads) {
        double part = 0;
        for (const auto v : g.values) {
            const double d = static_cast<double>(v);
            part += d * d;
        }
        if (!std::isfinite(part)) {
            const auto bad = std::find_if(g.values.begin(), g.values.end(), [](auto v) { return !std::isfinite(double(v)); });
            if (bad != g.values.end())
                fail("the gradient of '", g.name, "' holds a non-finite value (", double(*bad), ") at flat index ",
                     bad - g.values.begin(), ": the loss or the backward pass overflowed (lower the learning rate?)");
            fail("the squared norm of the gradient of '", g.name, "' overflows a double");
        }
        sum += part;
    }
    return std::sqrt(sum);
}

// The factor the gradients are multiplied by: 1 when the norm is within max_norm (or max_norm is
// 0: clipping off).
inline double clip_scale(double norm, double max_norm) {
    require(max_norm >= 0 && std::isfinite(max_norm), "gradient clipping: max_norm must be finite and >= 0, got ", max_norm);
    if (max_norm == 0) return 1.0;
    return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace transmamba
