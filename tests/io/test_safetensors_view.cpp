// safetensors_writer::add_view (io/safetensors.hpp): a tensor written from the caller's memory
// without a copy, so a program's large output exists once (the `transmamba run` logits).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <vector>

#include <transmamba/io.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_safetensors_view {

using namespace transmamba;

TEST_CASE("safetensors writer: add_view references the caller's memory and writes the same file as add") {
    std::vector<float> logits{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
    std::vector<std::int64_t> ids{4, 5, 6};

    safetensors_writer viewed;
    viewed.set_metadata("format", "pt");
    viewed.add_view("logits", {2, 3}, std::span<const float>(logits));
    viewed.add_view("ids", {3}, std::span<const std::int64_t>(ids));
    // No copy: the writer's bytes are the caller's.
    CHECK(viewed.bytes_of("logits").data() == reinterpret_cast<const std::byte*>(logits.data()));
    CHECK(viewed.bytes_of("logits").size() == logits.size() * sizeof(float));
    CHECK(viewed.bytes_of("ids").data() == reinterpret_cast<const std::byte*>(ids.data()));

    safetensors_writer copied;
    copied.set_metadata("format", "pt");
    copied.add("logits", {2, 3}, logits);
    copied.add("ids", {3}, ids);
    CHECK(copied.bytes_of("logits").data() != reinterpret_cast<const std::byte*>(logits.data()));
    CHECK(viewed.serialize() == copied.serialize());

    // What is written is the caller's memory at write time.
    logits[0] = 42.0f;
    const auto path = std::filesystem::temp_directory_path() / ("transmamba_view_" + std::to_string(::getpid()) + ".safetensors");
    viewed.write(path);
    const safetensors_file f(path);
    CHECK(f.read<float>("logits", std::vector<std::int64_t>{2, 3}) == logits);
    CHECK(f.read<std::int64_t>("ids") == ids);
    std::filesystem::remove(path);
}

TEST_CASE("safetensors writer: add_view checks the shape and the name like add") {
    std::vector<float> v(6);
    safetensors_writer w;
    CHECK_THROWS_WITH_AS(w.add_view("t", {4, 2}, std::span<const float>(v)), doctest::Contains("tensor 't'"), error);
    w.add_view("t", {2, 3}, std::span<const float>(v));
    CHECK_THROWS_WITH_AS(w.add_view("t", {6}, std::span<const float>(v)), doctest::Contains("added twice"), error);
    CHECK_THROWS_AS(w.add_view("__metadata__", {6}, std::span<const float>(v)), error);
    CHECK(w.bytes_of("absent").empty());
}

}  // namespace test_io_safetensors_view
