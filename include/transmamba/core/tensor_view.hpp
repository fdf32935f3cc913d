#pragma once
// A non-owning, strided view of caller memory (the CuTe idea of "a pointer plus a layout", kept to
// what the library needs). Views carry no memory space: on the CUDA backend they point to device
// memory, and only kernels of that backend dereference them.
#include <array>
#include <cstddef>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

#include "transmamba/core/error.hpp"

namespace transmamba {

using index_t = std::ptrdiff_t;

template <std::size_t Rank>
using extents = std::array<index_t, Rank>;

template <std::size_t Rank>
constexpr extents<Rank> row_major_strides(const extents<Rank>& shape) {
    extents<Rank> stride{};
    index_t s = 1;
    for (std::size_t i = Rank; i-- > 0;) {
        stride[i] = s;
        s *= shape[i];
    }
    return stride;
}

template <std::size_t Rank>
std::string shape_string(const extents<Rank>& shape) {
    std::ostringstream os;
    os << '(';
    for (std::size_t i = 0; i < Rank; ++i) os << (i ? ", " : "") << shape[i];
    os << ')';
    return os.str();
}

template <class T, std::size_t Rank>
class tensor_view {
public:
    using element_type = T;
    static constexpr std::size_t rank = Rank;

    constexpr tensor_view() = default;
    constexpr tensor_view(T* data, const extents<Rank>& shape)
        : data_(data), shape_(shape), stride_(row_major_strides(shape)) {}
    constexpr tensor_view(T* data, const extents<Rank>& shape, const extents<Rank>& stride)
        : data_(data), shape_(shape), stride_(stride) {}

    // A view of mutable elements converts to a view of const elements, never the reverse.
    template <class U>
        requires(std::is_same_v<std::remove_const_t<T>, U> && std::is_const_v<T>)
    constexpr tensor_view(const tensor_view<U, Rank>& other)
        : data_(other.data()), shape_(other.shape()), stride_(other.strides()) {}

    constexpr T* data() const { return data_; }
    constexpr bool empty() const { return data_ == nullptr; }
    constexpr const extents<Rank>& shape() const { return shape_; }
    constexpr const extents<Rank>& strides() const { return stride_; }
    constexpr index_t extent(std::size_t i) const { return shape_[i]; }
    constexpr index_t stride(std::size_t i) const { return stride_[i]; }
    constexpr index_t size() const {
        index_t n = 1;
        for (auto e : shape_) n *= e;
        return n;
    }
    constexpr bool is_contiguous() const { return stride_ == row_major_strides(shape_); }

    template <class... I>
        requires(sizeof...(I) == Rank)
    constexpr index_t offset(I... idx) const {
        const std::array<index_t, Rank> i{static_cast<index_t>(idx)...};
        index_t off = 0;
        for (std::size_t d = 0; d < Rank; ++d) off += i[d] * stride_[d];
        return off;
    }
    template <class... I>
        requires(sizeof...(I) == Rank)
    constexpr T& operator()(I... idx) const {
        return data_[offset(idx...)];
    }

private:
    T* data_ = nullptr;
    extents<Rank> shape_{};
    extents<Rank> stride_{};
};

template <class T, std::size_t Rank>
tensor_view(T*, const extents<Rank>&) -> tensor_view<T, Rank>;

// Checks a caller's tensor before anything is written. `name` is the tensor's name as the user
// knows it (e.g. "u", "final_state").
template <class T, std::size_t Rank>
void expect_shape(const tensor_view<T, Rank>& view, std::string_view name, const extents<Rank>& want) {
    require(view.data() != nullptr || view.size() == 0, "tensor '", name, "' has no data (null pointer)");
    require(view.shape() == want, "tensor '", name, "' has shape ", shape_string(view.shape()), ", expected ",
            shape_string(want));
}

template <class T, std::size_t Rank>
void expect_contiguous(const tensor_view<T, Rank>& view, std::string_view name) {
    require(view.is_contiguous(), "tensor '", name, "' must be contiguous (row-major), got strides ",
            shape_string(view.strides()), " for shape ", shape_string(view.shape()));
}

}  // namespace transmamba
