#pragma once
// safetensors files (https://github.com/huggingface/safetensors), read and written (docs/checkpoints.md):
//
//   [8 bytes: N, little-endian u64] [N bytes: JSON header] [data section]
//   header = {"__metadata__": {"key": "value", ...},                        (optional)
//             "<tensor>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the data section. Reading validates everything before any tensor is
// touched: the header length against the file size, the JSON itself, each entry's fields, the dtype,
// the shape (with overflow checks), each tensor's byte span against its dtype and shape, and that the
// spans tile the data section exactly (no overlap, no gap, nothing after the last), as the reference
// implementation requires. Any violation is a transmamba::error naming the file and, where there is
// one, the tensor. Nothing is read outside the file.
//
// safetensors_view parses a byte span someone else owns (a buffer, a fuzzer input); safetensors_file
// memory-maps a file and owns the mapping. safetensors_writer builds a file and writes it atomically.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/core/error.hpp"
#include "transmamba/io/atomic_file.hpp"
#include "transmamba/io/dtype.hpp"
#include "transmamba/io/mapped_file.hpp"
#include "transmamba/io/printable.hpp"

namespace transmamba {

// The largest header accepted (the reference implementation's limit): a corrupt length cannot make
// the parser allocate more.
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;

struct tensor_info {
    std::string name;
    dtype type = dtype::F32;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0;  // byte offsets into the data section
    std::uint64_t end = 0;
    std::uint64_t elements = 1;  // product of the shape (validated: no overflow)

    std::uint64_t bytes() const { return end - begin; }
};

inline std::string shape_string(std::span<const std::int64_t> shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

namespace io_detail {

// a * b, or nullopt when it does not fit in 64 bits.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
    return a * b;
}

// double -> float rounding to nearest even, with overflow to infinity spelled out (the plain cast
// of an out-of-range double is undefined behaviour in C++).
inline float double_to_float(double d) {
    constexpr double max = static_cast<double>(std::numeric_limits<float>::max());
    if (std::fabs(d) <= max || std::isnan(d)) return static_cast<float>(d);
    // Between FLT_MAX and FLT_MAX + half an ulp (2^103) the value rounds down; from the midpoint on
    // (a tie goes to the even neighbour, which is 2^128 = infinity) it rounds to infinity.
    constexpr double midpoint = max + 0x1p103;
    const float mag = std::fabs(d) >= midpoint ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::max();
    return d < 0 ? -mag : mag;
}

inline double decode_double(dtype t, const std::byte* p) {
    switch (t) {
        case dtype::F64: return std::bit_cast<double>(load_le<std::uint64_t>(p));
        case dtype::F32: return static_cast<double>(std::bit_cast<float>(load_le<std::uint32_t>(p)));
        case dtype::F16: return static_cast<double>(f16_bits_to_float(load_le<std::uint16_t>(p)));
        case dtype::BF16: return static_cast<double>(bf16_bits_to_float(load_le<std::uint16_t>(p)));
        default: return 0.0;  // unreachable: callers check is_float_dtype
    }
}

inline float decode_float(dtype t, const std::byte* p) {
    switch (t) {
        case dtype::F64: return double_to_float(std::bit_cast<double>(load_le<std::uint64_t>(p)));
        case dtype::F32: return std::bit_cast<float>(load_le<std::uint32_t>(p));
        case dtype::F16: return f16_bits_to_float(load_le<std::uint16_t>(p));
        case dtype::BF16: return bf16_bits_to_float(load_le<std::uint16_t>(p));
        default: return 0.0f;
    }
}

// Integers of any integer dtype, widened: signed ones sign-extended into `s`, unsigned into `u`.
struct integer_value {
    bool is_signed;
    std::int64_t s;
    std::uint64_t u;
};
inline integer_value decode_integer(dtype t, const std::byte* p) {
    switch (t) {
        case dtype::I8: return {true, static_cast<std::int8_t>(load_le<std::uint8_t>(p)), 0};
        case dtype::I16: return {true, static_cast<std::int16_t>(load_le<std::uint16_t>(p)), 0};
        case dtype::I32: return {true, static_cast<std::int32_t>(load_le<std::uint32_t>(p)), 0};
        case dtype::I64: return {true, static_cast<std::int64_t>(load_le<std::uint64_t>(p)), 0};
        case dtype::BOOL:
        case dtype::U8: return {false, 0, load_le<std::uint8_t>(p)};
        case dtype::U16: return {false, 0, load_le<std::uint16_t>(p)};
        case dtype::U32: return {false, 0, load_le<std::uint32_t>(p)};
        case dtype::U64: return {false, 0, load_le<std::uint64_t>(p)};
        default: return {false, 0, 0};
    }
}

// A JSON value for an error message, cut short and escaped (io/printable.hpp).
inline std::string brief(const nlohmann::json& v) {
    const std::string s = v.dump();
    return printable(s.size() > 40 ? s.substr(0, 37) + "..." : s);
}

template <class T>
std::string_view type_name() {
    if constexpr (std::is_same_v<T, float>) return "float";
    else if constexpr (std::is_same_v<T, double>) return "double";
    else if constexpr (std::is_integral_v<T>) return std::is_signed_v<T> ? "a signed integer type" : "an unsigned integer type";
    else return dtype_name(element_traits<T>::stored);
}

}  // namespace io_detail

// A parsed and validated safetensors image in memory that the view does not own.
class safetensors_view {
public:
    safetensors_view() = default;

    // Parses and validates `file`, the whole file's bytes; `source` names it in error messages.
    safetensors_view(std::span<const std::byte> file, std::string_view source) : source_(printable(source, 4096)) {
        parse(file);
    }

    // The name given to the constructor, escaped as every piece of text in a message is
    // (io/printable.hpp).
    const std::string& source() const { return source_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // Every tensor, in the order of their data.
    const std::vector<tensor_info>& tensors() const { return tensors_; }
    std::uint64_t header_bytes() const { return header_bytes_; }

    const tensor_info* find(std::string_view name) const {
        const auto it = by_name_.find(name);
        return it == by_name_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_info& at(std::string_view name) const {
        const tensor_info* t = find(name);
        if (t == nullptr) fail("safetensors file '", source_, "' has no tensor '", printable(name), "'");
        return *t;
    }

    // The tensor's bytes as stored (little-endian, row-major).
    std::span<const std::byte> raw(const tensor_info& t) const { return data_.subspan(t.begin, t.bytes()); }

    // Throws naming the file and tensor unless the tensor has exactly this shape.
    void expect_shape(const tensor_info& t, std::span<const std::int64_t> want) const {
        if (!std::equal(t.shape.begin(), t.shape.end(), want.begin(), want.end()))
            bad_tensor(t.name, "shape ", shape_string(t.shape), ", expected ", shape_string(want));
    }

    // Converts the tensor's elements into `out` (exactly `elements` long): float types from F64, F32,
    // F16 or BF16 (round to nearest even when narrowing); integer types from any integer dtype, each
    // value range-checked. The same dtype as T's storage is a plain copy, bit for bit.
    template <class T>
        requires float_element<T> || integer_element<T>
    void read_into(const tensor_info& t, std::span<T> out) const {
        if (out.size() != t.elements)
            bad_tensor(t.name, "has ", t.elements, " elements (shape ", shape_string(t.shape), "), the destination holds ",
                       out.size());
        convert(t, out.data());
    }
    template <class T>
    void read_into(std::string_view name, std::span<T> out) const {
        read_into(at(name), out);
    }
    template <class T>
    std::vector<T> read(const tensor_info& t) const {
        std::vector<T> out(static_cast<std::size_t>(t.elements));
        read_into(t, std::span<T>(out));
        return out;
    }
    template <class T>
    std::vector<T> read(std::string_view name) const {
        return read<T>(at(name));
    }
    // As read(), after checking the shape.
    template <class T>
    std::vector<T> read(std::string_view name, std::span<const std::int64_t> expected_shape) const {
        const tensor_info& t = at(name);
        expect_shape(t, expected_shape);
        return read<T>(t);
    }

private:
    template <class... Parts>
    [[noreturn]] void bad(const Parts&... parts) const {
        fail("safetensors file '", source_, "': ", parts...);
    }
    template <class... Parts>
    [[noreturn]] void bad_tensor(std::string_view name, const Parts&... parts) const {
        fail("safetensors file '", source_, "', tensor '", printable(name), "': ", parts...);
    }

    // Builds the header's JSON tree from the parser's SAX events, refusing a key repeated in one
    // object (a JSON parser keeps the last one silently) and nesting deeper than the 3 levels of a
    // valid header. The tree's own objects find a repeated key, in O(log n). (nlohmann's parser
    // callback could do these checks, but it rescans the parent object at the end of every object:
    // quadratic in the number of tensors, 21 s for 40k.)
    struct header_builder {
        using json = nlohmann::json;
        const safetensors_view& owner;
        json root{};
        std::vector<json*> open{};  // the containers being filled, innermost last
        json* slot = nullptr;       // where the innermost object's next value goes (set by key())

        json* place(json&& v) {
            if (open.size() > 3)
                owner.bad("the header nests deeper than a safetensors header does (depth ", open.size(), ")");
            if (open.empty()) {
                root = std::move(v);
                return &root;
            }
            json& parent = *open.back();
            if (parent.is_array()) {
                parent.push_back(std::move(v));
                return &parent.back();
            }
            *slot = std::move(v);
            return slot;
        }
        bool value(json&& v) {
            place(std::move(v));
            return true;
        }
        bool null() { return value(nullptr); }
        bool boolean(bool v) { return value(v); }
        bool number_integer(json::number_integer_t v) { return value(v); }
        bool number_unsigned(json::number_unsigned_t v) { return value(v); }
        bool number_float(json::number_float_t v, const json::string_t&) { return value(v); }
        bool string(json::string_t& v) { return value(std::move(v)); }
        bool binary(json::binary_t& v) { return value(json::binary(std::move(v))); }
        bool start_object(std::size_t) {
            open.push_back(place(json::object()));
            return true;
        }
        bool start_array(std::size_t) {
            open.push_back(place(json::array()));
            return true;
        }
        bool end_object() {
            open.pop_back();
            return true;
        }
        bool end_array() { return end_object(); }
        bool key(json::string_t& k) {
            auto& object = open.back()->get_ref<json::object_t&>();
            const auto [it, fresh] = object.try_emplace(k);
            if (!fresh) {
                if (open.size() == 1) owner.bad("the header names tensor '", printable(k), "' twice");
                owner.bad("the header has the key '", printable(k), "' twice in one entry");
            }
            slot = &it->second;
            return true;
        }
        bool parse_error(std::size_t, const std::string&, const json::exception& e) {
            owner.bad("the header is not valid JSON: ", printable(e.what()));
        }
    };

    void parse(std::span<const std::byte> file) {
        using json = nlohmann::json;
        const std::uint64_t size = file.size();
        if (size < 8) bad("the file is ", size, " bytes long, shorter than the 8-byte header length");
        const std::uint64_t n = load_le<std::uint64_t>(file.data());
        if (n > size - 8)
            bad("the header length ", n, " runs past the end of the file (", size - 8, " bytes follow the length field)");
        if (n > safetensors_max_header_bytes)
            bad("the header length ", n, " exceeds the limit of ", safetensors_max_header_bytes, " bytes");
        if (n < 2) bad("the header is ", n, " bytes long, too short for a JSON object");
        header_bytes_ = n;
        const char* text = reinterpret_cast<const char*>(file.data() + 8);
        if (text[0] != '{') bad("the header does not start with '{'");
        data_ = file.subspan(static_cast<std::size_t>(8 + n));

        header_builder builder{*this};
        try {
            json::sax_parse(text, text + n, &builder, nlohmann::detail::input_format_t::json, /*strict=*/true,
                            /*ignore_comments=*/false);
        } catch (const json::exception& e) {
            bad("the header is not valid JSON: ", printable(e.what()));
        }
        const json& root = builder.root;
        if (!root.is_object()) bad("the header is not a JSON object");

        for (const auto& [key, value] : root.items()) {
            if (key == "__metadata__") {
                if (!value.is_object()) bad("'__metadata__' is not an object of strings");
                for (const auto& [mk, mv] : value.items()) {
                    if (!mv.is_string()) bad("'__metadata__' entry '", printable(mk), "' is not a string");
                    metadata_.emplace(mk, mv.get<std::string>());
                }
                continue;
            }
            tensors_.push_back(parse_entry(key, value));
        }

        // The spans must tile the data section: sorted by offset, each starts where the previous
        // ended, the first at 0 and the last at the end.
        const std::uint64_t data_size = data_.size();
        for (const auto& t : tensors_)
            if (t.end > data_size)
                bad_tensor(t.name, "data_offsets [", t.begin, ", ", t.end, "] run past the end of the data section (",
                           data_size, " bytes)");
        std::sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
            return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
        });
        std::uint64_t expected = 0;
        const tensor_info* previous = nullptr;
        for (const auto& t : tensors_) {
            if (t.begin < expected)
                bad_tensor(t.name, "data_offsets [", t.begin, ", ", t.end, "] overlap tensor '", printable(previous->name), "' [",
                           previous->begin, ", ", previous->end, "]");
            if (t.begin > expected)
                bad_tensor(t.name, "data_offsets [", t.begin, ", ", t.end, "] leave a gap of ", t.begin - expected,
                           " bytes after ", previous ? "tensor '" + printable(previous->name) + "'" : std::string("the header"));
            expected = t.end;
            previous = &t;
        }
        if (expected != data_size)
            bad("the data section is ", data_size, " bytes but the tensors cover ", expected, " (",
                data_size - expected, " bytes after the last tensor)");
        for (std::size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
    }

    tensor_info parse_entry(const std::string& name, const nlohmann::json& entry) const {
        if (!entry.is_object()) bad_tensor(name, "the header entry is not an object");
        tensor_info t;
        t.name = name;
        const auto dt = entry.find("dtype");
        if (dt == entry.end() || !dt->is_string()) bad_tensor(name, "the header entry has no string 'dtype'");
        const auto& dtype_text = dt->get_ref<const std::string&>();
        const auto parsed = parse_dtype(dtype_text);
        if (!parsed) bad_tensor(name, "unknown dtype '", printable(dtype_text), "'");
        t.type = *parsed;

        const auto shape = entry.find("shape");
        if (shape == entry.end() || !shape->is_array()) bad_tensor(name, "the header entry has no array 'shape'");
        std::uint64_t elements = 1;
        for (const auto& d : *shape) {
            if (!d.is_number_unsigned()) bad_tensor(name, "shape entry ", io_detail::brief(d), " is not a non-negative integer");
            const auto v = d.get<std::uint64_t>();
            if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                bad_tensor(name, "shape entry ", v, " is too large");
            const auto product = io_detail::checked_mul(elements, v);
            if (!product) bad_tensor(name, "the element count of its ", shape->size(), "-dimensional shape overflows 64 bits");
            elements = *product;
            t.shape.push_back(static_cast<std::int64_t>(v));
        }
        t.elements = elements;

        const auto offsets = entry.find("data_offsets");
        if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
            !(*offsets)[1].is_number_unsigned())
            bad_tensor(name, "the header entry has no 'data_offsets' [begin, end] of two non-negative integers");
        t.begin = (*offsets)[0].get<std::uint64_t>();
        t.end = (*offsets)[1].get<std::uint64_t>();
        if (t.begin > t.end) bad_tensor(name, "data_offsets [", t.begin, ", ", t.end, "] end before they begin");
        const auto bytes = io_detail::checked_mul(elements, dtype_size(t.type));
        if (!bytes) bad_tensor(name, "the byte size of shape ", shape_string(t.shape), " x ", dtype_name(t.type), " overflows 64 bits");
        if (t.end - t.begin != *bytes)
            bad_tensor(name, "data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin, " bytes, but ",
                       dtype_name(t.type), " x shape ", shape_string(t.shape), " needs ", *bytes);
        return t;
    }

    template <class T>
    void convert(const tensor_info& t, T* out) const {
        const std::byte* src = data_.data() + t.begin;
        const std::size_t n = static_cast<std::size_t>(t.elements), size = dtype_size(t.type);
        if constexpr (float_element<T>) {
            if (!is_float_dtype(t.type))
                bad_tensor(t.name, "has dtype ", dtype_name(t.type), ", which cannot be read as ", io_detail::type_name<T>());
            if (t.type == dtype_of<T>() && sizeof(T) == size && std::endian::native == std::endian::little) {
                if (n) std::memcpy(static_cast<void*>(out), src, n * size);
                return;
            }
            for (std::size_t i = 0; i < n; ++i) {
                if constexpr (std::is_same_v<T, double>) out[i] = io_detail::decode_double(t.type, src + i * size);
                else if constexpr (std::is_same_v<T, float>) out[i] = io_detail::decode_float(t.type, src + i * size);
                else out[i] = element_traits<T>::from_float(io_detail::decode_float(t.type, src + i * size));
            }
        } else {
            if (!is_integer_dtype(t.type))
                bad_tensor(t.name, "has dtype ", dtype_name(t.type), ", which cannot be read as ", io_detail::type_name<T>());
            for (std::size_t i = 0; i < n; ++i) {
                const auto v = io_detail::decode_integer(t.type, src + i * size);
                const bool fits = v.is_signed ? std::in_range<T>(v.s) : std::in_range<T>(v.u);
                if (!fits)
                    bad_tensor(t.name, "element ", i, " = ", v.is_signed ? std::to_string(v.s) : std::to_string(v.u),
                               " does not fit in ", io_detail::type_name<T>());
                out[i] = v.is_signed ? static_cast<T>(v.s) : static_cast<T>(v.u);
            }
        }
    }

    std::string source_;
    std::span<const std::byte> data_;  // the data section
    std::uint64_t header_bytes_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<tensor_info> tensors_;
    std::map<std::string, std::size_t, std::less<>> by_name_;
};

namespace io_detail {
struct mapped_holder {
    mapped_file mapped;
};
}  // namespace io_detail

// A memory-mapped safetensors file, validated on opening; tensors are converted straight from the
// mapping. Movable; the views it hands out live as long as it does.
class safetensors_file : private io_detail::mapped_holder, public safetensors_view {
public:
    explicit safetensors_file(const std::filesystem::path& path)
        : io_detail::mapped_holder{mapped_file(path)}, safetensors_view(mapped.bytes(), path.string()) {}
    const std::filesystem::path& path() const { return mapped.path(); }
};

// Collects tensors (converted to their file dtype when added) and writes them as one safetensors
// file. Tensors are laid out by decreasing element size, then by name, after a header padded with
// spaces to a multiple of 8 bytes, so every tensor's data is aligned to its element size.
class safetensors_writer {
public:
    void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

    // Adds `values` (row-major, `shape`) stored as `as` (default: T's own dtype, a bit-exact copy).
    // Floats convert to F64/F32/F16/BF16 rounding to nearest even (a double bound for a 16-bit type
    // is rounded to float first); integers to any integer dtype, range-checked.
    template <class T>
        requires float_element<T> || integer_element<T>
    void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> values, std::optional<dtype> as = {}) {
        const dtype type = as.value_or(dtype_of<T>());
        const std::uint64_t count = element_count(name, shape);
        if (count != values.size())
            fail("safetensors writer: tensor '", name, "' has shape ", shape_string(shape), " (", count,
                 " elements) but ", values.size(), " values were given");
        std::vector<std::byte> bytes(values.size() * dtype_size(type));
        encode(name, type, values, bytes.data());
        add_raw(std::move(name), type, std::move(shape), std::move(bytes));
    }
    template <class T>
    void add(std::string name, std::vector<std::int64_t> shape, const std::vector<T>& values, std::optional<dtype> as = {}) {
        add(std::move(name), std::move(shape), std::span<const T>(values), as);
    }

    // Adds bytes already in the file's format (little-endian elements of `type`).
    void add_raw(std::string name, dtype type, std::vector<std::int64_t> shape, std::vector<std::byte> bytes) {
        check_entry(name, type, shape, bytes.size());
        index_.insert(name);
        entries_.push_back({std::move(name), type, std::move(shape), std::move(bytes), {}});
    }

    // Adds `values` as T's own dtype without copying them: the writer keeps a view of the caller's
    // memory, which must stay valid and unchanged until the last write() or serialize(). A large
    // tensor (a program's logits) then exists once in memory rather than twice. On a little-endian
    // host T's bytes are the file's bytes, so nothing needs encoding.
    template <class T>
        requires float_element<T> || integer_element<T>
    void add_view(std::string name, std::vector<std::int64_t> shape, std::span<const T> values) {
        require(std::endian::native == std::endian::little && sizeof(T) == dtype_size(dtype_of<T>()),
                "safetensors writer: tensor '", name, "': add_view needs a little-endian host (use add)");
        const auto bytes = std::as_bytes(values);
        check_entry(name, dtype_of<T>(), shape, bytes.size());
        index_.insert(name);
        entries_.push_back({std::move(name), dtype_of<T>(), std::move(shape), {}, bytes});
    }

    std::size_t size() const { return entries_.size(); }
    // The bytes that will be written for tensor `name` (the writer's copy, or the caller's memory
    // for add_view); empty for an unknown name.
    std::span<const std::byte> bytes_of(std::string_view name) const {
        for (const auto& e : entries_)
            if (e.name == name) return e.bytes();
        return {};
    }

    // The header: compact JSON padded with spaces so that 8 + its length is a multiple of 8.
    std::string header() const {
        nlohmann::ordered_json root = nlohmann::ordered_json::object();
        if (!metadata_.empty()) root["__metadata__"] = metadata_;
        std::uint64_t offset = 0;
        for (const entry* e : ordered()) {
            const std::uint64_t end = offset + e->bytes().size();
            root[e->name] = {{"dtype", dtype_name(e->type)}, {"shape", e->shape}, {"data_offsets", {offset, end}}};
            offset = end;
        }
        std::string text;
        try {
            text = root.dump();
        } catch (const nlohmann::json::exception& e) {
            fail("safetensors writer: cannot encode the header (tensor names and metadata must be UTF-8): ", e.what());
        }
        text.append((8 - text.size() % 8) % 8, ' ');
        return text;
    }

    // The whole file image (for in-memory use and tests).
    std::vector<std::byte> serialize() const {
        std::vector<std::byte> out;
        emit([&](const void* p, std::size_t n) {
            const auto* b = static_cast<const std::byte*>(p);
            out.insert(out.end(), b, b + n);
        });
        return out;
    }

    // Writes the file atomically (io/atomic_file.hpp): `path` is either untouched or complete.
    void write(const std::filesystem::path& path) const {
        write_file_atomically(path, [&](file_sink& sink) { emit([&](const void* p, std::size_t n) { sink.write(p, n); }); });
    }

private:
    struct entry {
        std::string name;
        dtype type;
        std::vector<std::int64_t> shape;
        std::vector<std::byte> owned;
        std::span<const std::byte> view;  // add_view's caller memory; empty when `owned` holds the bytes
        std::span<const std::byte> bytes() const { return view.data() ? view : std::span<const std::byte>(owned); }
    };

    void check_entry(const std::string& name, dtype type, const std::vector<std::int64_t>& shape, std::size_t bytes) const {
        require(name != "__metadata__", "safetensors writer: '__metadata__' cannot name a tensor");
        require(!index_.contains(name), "safetensors writer: tensor '", name, "' was added twice");
        const std::uint64_t count = element_count(name, shape);
        require(count * dtype_size(type) == bytes, "safetensors writer: tensor '", name, "' has shape ", shape_string(shape),
                " of ", dtype_name(type), " (", count * dtype_size(type), " bytes) but ", bytes, " bytes were given");
    }

    static std::uint64_t element_count(std::string_view name, const std::vector<std::int64_t>& shape) {
        std::uint64_t count = 1;
        for (auto d : shape) {
            require(d >= 0, "safetensors writer: tensor '", name, "' has a negative extent in shape ", shape_string(shape));
            const auto product = io_detail::checked_mul(count, static_cast<std::uint64_t>(d));
            require(product.has_value(), "safetensors writer: tensor '", name, "': shape ", shape_string(shape), " overflows");
            count = *product;
        }
        return count;
    }

    template <class T>
    static void encode(std::string_view name, dtype type, std::span<const T> values, std::byte* out) {
        const std::size_t size = dtype_size(type);
        if constexpr (float_element<T>) {
            require(is_float_dtype(type), "safetensors writer: tensor '", name, "': floating-point values cannot be stored as ",
                    dtype_name(type));
            if (type == dtype_of<T>() && sizeof(T) == size && std::endian::native == std::endian::little) {
                if (!values.empty()) std::memcpy(out, values.data(), values.size() * size);
                return;
            }
            for (std::size_t i = 0; i < values.size(); ++i) {
                const T v = values[i];
                float f;
                if constexpr (std::is_same_v<T, double>) f = io_detail::double_to_float(v);
                else if constexpr (std::is_same_v<T, float>) f = v;
                else f = element_traits<T>::to_float(v);
                std::byte* p = out + i * size;
                switch (type) {
                    case dtype::F64: store_le<std::uint64_t>(p, std::bit_cast<std::uint64_t>(to_double(v))); break;
                    case dtype::F32: store_le<std::uint32_t>(p, std::bit_cast<std::uint32_t>(f)); break;
                    case dtype::F16: store_le<std::uint16_t>(p, float_to_f16_bits(f)); break;
                    case dtype::BF16: store_le<std::uint16_t>(p, float_to_bf16_bits(f)); break;
                    default: break;
                }
            }
        } else {
            require(is_integer_dtype(type), "safetensors writer: tensor '", name, "': integers cannot be stored as ",
                    dtype_name(type));
            for (std::size_t i = 0; i < values.size(); ++i) {
                const T v = values[i];
                std::byte* p = out + i * size;
                bool fits = true;
                switch (type) {
                    case dtype::BOOL: fits = v == T(0) || v == T(1); store_le<std::uint8_t>(p, static_cast<std::uint8_t>(v)); break;
                    case dtype::U8: fits = std::in_range<std::uint8_t>(v); store_le<std::uint8_t>(p, static_cast<std::uint8_t>(v)); break;
                    case dtype::I8: fits = std::in_range<std::int8_t>(v); store_le<std::uint8_t>(p, static_cast<std::uint8_t>(v)); break;
                    case dtype::U16: fits = std::in_range<std::uint16_t>(v); store_le<std::uint16_t>(p, static_cast<std::uint16_t>(v)); break;
                    case dtype::I16: fits = std::in_range<std::int16_t>(v); store_le<std::uint16_t>(p, static_cast<std::uint16_t>(v)); break;
                    case dtype::U32: fits = std::in_range<std::uint32_t>(v); store_le<std::uint32_t>(p, static_cast<std::uint32_t>(v)); break;
                    case dtype::I32: fits = std::in_range<std::int32_t>(v); store_le<std::uint32_t>(p, static_cast<std::uint32_t>(v)); break;
                    case dtype::U64: fits = std::in_range<std::uint64_t>(v); store_le<std::uint64_t>(p, static_cast<std::uint64_t>(v)); break;
                    case dtype::I64: fits = std::in_range<std::int64_t>(v); store_le<std::uint64_t>(p, static_cast<std::uint64_t>(v)); break;
                    default: break;
                }
                require(fits, "safetensors writer: tensor '", name, "': element ", i, " = ", +v, " does not fit in ", dtype_name(type));
            }
        }
    }

    std::vector<const entry*> ordered() const {
        std::vector<const entry*> order;
        for (const auto& e : entries_) order.push_back(&e);
        std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
            const auto sa = dtype_size(a->type), sb = dtype_size(b->type);
            return sa != sb ? sa > sb : a->name < b->name;
        });
        return order;
    }

    template <class Emit>
    void emit(Emit&& out) const {
        const std::string head = header();
        std::byte length[8];
        store_le<std::uint64_t>(length, head.size());
        out(length, sizeof(length));
        out(head.data(), head.size());
        for (const entry* e : ordered())
            if (!e->bytes().empty()) out(e->bytes().data(), e->bytes().size());
    }

    std::vector<entry> entries_;
    std::set<std::string, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace transmamba
