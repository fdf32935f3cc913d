#pragma once
// Shared pieces of the CPU tests: operands for the SSM/attention/converter kernels built from the
// oracle's random vectors, row extraction, NaN poisoning and sentinel checks. Everything the oracle
// reads is first rounded to the library's type, so that a float test measures the library's
// arithmetic and not the rounding of its inputs.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

#include "support/bridge.hpp"

namespace transmamba::testing {

template <class T>
constexpr T nan_value() {
    return std::numeric_limits<T>::quiet_NaN();
}

// v with every element rounded to T (and back): what a T tensor holding v really holds.
template <class T>
std::vector<double> rounded(std::vector<double> v) {
    for (auto& e : v) e = static_cast<double>(static_cast<T>(e));
    return v;
}

template <class T>
reference::mixer_weights rounded(const reference::mixer_weights& w) {
    return {rounded<T>(w.in_proj), rounded<T>(w.conv_w), rounded<T>(w.conv_b), rounded<T>(w.dt_bias),
            rounded<T>(w.A_log),   rounded<T>(w.D),      rounded<T>(w.norm_w), rounded<T>(w.out_proj)};
}

// Rows [t0, t1) of every sequence of a (batch, L, width) tensor, as doubles.
template <class V>
std::vector<double> rows_of(const V& v, index_t batch, index_t L, index_t width, index_t t0, index_t t1) {
    std::vector<double> r;
    r.reserve(static_cast<std::size_t>(batch * (t1 - t0) * width));
    for (index_t b = 0; b < batch; ++b)
        for (index_t t = t0; t < t1; ++t)
            for (index_t c = 0; c < width; ++c) r.push_back(static_cast<double>(v[std::size_t((b * L + t) * width + c)]));
    return r;
}

// True when rows [t0, t1) of every sequence are all NaN (never written).
template <class V>
bool rows_all_nan(const V& v, index_t batch, index_t L, index_t width, index_t t0, index_t t1) {
    for (double e : rows_of(v, batch, L, width, t0, t1))
        if (!std::isnan(e)) return false;
    return true;
}

// True when every element equals `sentinel` bit for bit (i.e. the buffer was not written).
template <class T>
bool all_equal(const std::vector<T>& v, T sentinel) {
    for (const T& e : v)
        if (!(e == sentinel)) return false;
    return true;
}

template <class T>
std::vector<T> to_vector(const std::vector<double>& v) {
    return std::vector<T>(v.begin(), v.end());
}

// A mixer_config whose kernels' sizes match h heads of p channels, n states and g groups.
inline mixer_config kernel_config(index_t h, index_t p, index_t n, index_t g, index_t chunk) {
    mixer_config c;
    c.expand = 1;
    c.d_model = h * p;  // d_inner = h * p, nheads = h
    c.headdim = p;
    c.d_state = n;
    c.ngroups = g;
    c.chunk_size = chunk;
    c.validate();
    return c;
}

// Operands of the scan, attention and converter kernels: x, B, C, dt, A, D drawn with the oracle's
// random_vector (each from its own seed), held as doubles for the oracle and as T for the library.
// With `strided`, x, B and C live inside one wider row per token, [x | B | C | pad], the way the
// mixer lays out its conv output; the pad is NaN so that a read outside the views shows up.
template <class T>
struct ssm_operands {
    reference::dims d;
    mixer_config cfg;
    std::vector<double> x, B, C, dt, A, D;  // oracle layout (b, L, h, p), (b, L, g, n), (b, L, h), (h)
    std::vector<T> xbc, bc_sep, dt_t, A_t, D_t;
    ssm_inputs<T> in;

    ssm_operands(index_t batch, index_t L, index_t h, index_t p, index_t n, index_t g, index_t chunk,
                 std::uint64_t seed, bool strided, double a_lo = -1.5, double a_hi = -0.05, double dt_lo = 1e-3,
                 double dt_hi = 0.2)
        : cfg(kernel_config(h, p, n, g, chunk)) {
        d = to_dims(cfg, batch, L);
        const auto rows = static_cast<std::size_t>(batch * L);
        const auto hp = static_cast<std::size_t>(h * p), gn = static_cast<std::size_t>(g * n);
        x = rounded<T>(reference::random_vector(rows * hp, seed * 7919 + 1));
        B = rounded<T>(reference::random_vector(rows * gn, seed * 7919 + 2));
        C = rounded<T>(reference::random_vector(rows * gn, seed * 7919 + 3));
        dt = rounded<T>(reference::random_vector(rows * static_cast<std::size_t>(h), seed * 7919 + 4, dt_lo, dt_hi));
        A = rounded<T>(reference::random_vector(static_cast<std::size_t>(h), seed * 7919 + 5, a_lo, a_hi));
        D = rounded<T>(reference::random_vector(static_cast<std::size_t>(h), seed * 7919 + 6, 0.5, 1.5));
        dt_t = to_vector<T>(dt);
        A_t = to_vector<T>(A);
        D_t = to_vector<T>(D);

        const index_t pad = strided ? 3 : 0;
        const index_t width = strided ? h * p + 2 * g * n + pad : 0;
        if (strided) {
            xbc.assign(rows * static_cast<std::size_t>(width), nan_value<T>());
            for (std::size_t r = 0; r < rows; ++r) {
                T* row = xbc.data() + r * static_cast<std::size_t>(width);
                for (std::size_t c = 0; c < hp; ++c) row[c] = static_cast<T>(x[r * hp + c]);
                for (std::size_t c = 0; c < gn; ++c) row[hp + c] = static_cast<T>(B[r * gn + c]);
                for (std::size_t c = 0; c < gn; ++c) row[hp + gn + c] = static_cast<T>(C[r * gn + c]);
            }
            const T* base = xbc.data();
            in.x = tensor_view<const T, 4>(base, {batch, L, h, p}, {L * width, width, p, 1});
            in.B = tensor_view<const T, 4>(base + hp, {batch, L, g, n}, {L * width, width, n, 1});
            in.C = tensor_view<const T, 4>(base + hp + gn, {batch, L, g, n}, {L * width, width, n, 1});
        } else {
            xbc = to_vector<T>(x);
            bc_sep.resize(2 * rows * gn);
            for (std::size_t i = 0; i < rows * gn; ++i) {
                bc_sep[i] = static_cast<T>(B[i]);
                bc_sep[rows * gn + i] = static_cast<T>(C[i]);
            }
            in.x = tensor_view<const T, 4>(xbc.data(), {batch, L, h, p});
            in.B = tensor_view<const T, 4>(bc_sep.data(), {batch, L, g, n});
            in.C = tensor_view<const T, 4>(bc_sep.data() + rows * gn, {batch, L, g, n});
        }
        in.dt = tensor_view<const T, 3>(dt_t.data(), {batch, L, h});
        in.A = A_t.data();
        in.D = D_t.data();
    }

    std::size_t state_size() const { return static_cast<std::size_t>(d.batch * d.nheads() * d.headdim * d.d_state); }
    std::size_t y_size() const { return static_cast<std::size_t>(d.batch * d.seqlen * d.nheads() * d.headdim); }
    extents<4> state_shape() const { return {d.batch, d.nheads(), d.headdim, d.d_state}; }
    extents<4> y_shape() const { return {d.batch, d.seqlen, d.nheads(), d.headdim}; }
};

// A random SSM state (b, h, p, n), rounded to T.
template <class T>
std::vector<double> random_state(const reference::dims& d, std::uint64_t seed) {
    return rounded<T>(reference::random_vector(static_cast<std::size_t>(d.batch * d.nheads() * d.headdim * d.d_state),
                                               seed, -1.0, 1.0));
}

// Scratch memory for one kernel call.
struct scratch_buffer {
    std::vector<std::byte> bytes;
    explicit scratch_buffer(std::size_t n) : bytes(n) {}
    workspace_span span() { return {bytes.data(), bytes.size()}; }
};

// Checkpoint-style tensors by name, to load a block or a stack through its for_each_parameter.
using named_tensors = std::map<std::string, std::vector<double>>;

inline void add_mixer_tensors(named_tensors& t, const std::string& prefix, const reference::mixer_weights& w) {
    t[prefix + "in_proj.weight"] = w.in_proj;
    t[prefix + "conv1d.weight"] = w.conv_w;
    t[prefix + "conv1d.bias"] = w.conv_b;
    t[prefix + "dt_bias"] = w.dt_bias;
    t[prefix + "A_log"] = w.A_log;
    t[prefix + "D"] = w.D;
    t[prefix + "norm.weight"] = w.norm_w;
    t[prefix + "out_proj.weight"] = w.out_proj;
}

inline void add_mlp_tensors(named_tensors& t, const std::string& prefix, const reference::mlp_weights& w) {
    t[prefix + "norm.weight"] = w.norm_w;
    t[prefix + "mlp.gate_proj.weight"] = w.gate_proj;
    t[prefix + "mlp.up_proj.weight"] = w.up_proj;
    t[prefix + "mlp.down_proj.weight"] = w.down_proj;
}

// SwiGLU weights ~ U(-1, 1) / sqrt(fan_in), norm weight in [0.5, 1.5], rounded to T.
template <class T>
reference::mlp_weights random_mlp_weights(index_t d_model, index_t d_ff, std::uint64_t seed) {
    const auto dm = static_cast<std::size_t>(d_model), ff = static_cast<std::size_t>(d_ff);
    reference::mlp_weights w;
    w.gate_proj = reference::random_vector(ff * dm, seed * 31 + 1);
    w.up_proj = reference::random_vector(ff * dm, seed * 31 + 2);
    w.down_proj = reference::random_vector(dm * ff, seed * 31 + 3);
    for (auto& v : w.gate_proj) v /= std::sqrt(double(d_model));
    for (auto& v : w.up_proj) v /= std::sqrt(double(d_model));
    for (auto& v : w.down_proj) v /= std::sqrt(double(d_ff));
    w.norm_w = reference::random_vector(dm, seed * 31 + 4, 0.5, 1.5);
    return {rounded<T>(w.gate_proj), rounded<T>(w.up_proj), rounded<T>(w.down_proj), rounded<T>(w.norm_w)};
}

// Loads every parameter a block or stack visits from `tensors` by its name; every visited name
// must be there with the right number of elements, and every tensor must be used. Returns the
// names in visiting order with their shapes.
struct visited_parameter {
    std::string name;
    std::vector<index_t> shape;
    bool operator==(const visited_parameter&) const = default;
};

template <class Model>
std::vector<visited_parameter> load_by_name(Model& model, const named_tensors& tensors) {
    std::vector<visited_parameter> visited;
    model.for_each_parameter([&](const auto& name_like, auto& buf, const std::vector<index_t>& shape) {
        const std::string name{std::string_view(name_like)};
        visited.push_back({name, shape});
        const auto it = tensors.find(name);
        REQUIRE_MESSAGE(it != tensors.end(), "no tensor named " << name);
        std::size_t count = 1;
        for (auto e : shape) count *= static_cast<std::size_t>(e);
        REQUIRE(buf.size() == count);
        REQUIRE(it->second.size() == count);
        using V = std::remove_cvref_t<decltype(*buf.data())>;
        for (std::size_t i = 0; i < count; ++i) buf.data()[i] = static_cast<V>(it->second[i]);
    });
    REQUIRE(visited.size() == tensors.size());
    return visited;
}

}  // namespace transmamba::testing
