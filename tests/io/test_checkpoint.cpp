// io/checkpoint.hpp: save -> load is bit for bit (float, double, BF16 storage), schedules and config
// fields survive, shards load, and every way a checkpoint can be wrong is an error naming the file
// and the tensor or field.
#include <doctest/doctest.h>

#include <transmamba/io.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_checkpoint {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

language_model_config tiny(bool tied, index_t ngroups = 2) {
    language_model_config c;
    c.backbone.mixer.d_model = 32;
    c.backbone.mixer.expand = 2;
    c.backbone.mixer.headdim = 8;
    c.backbone.mixer.d_state = 8;
    c.backbone.mixer.ngroups = ngroups;
    c.backbone.mixer.d_conv = 4;
    c.backbone.mixer.chunk_size = 8;
    c.backbone.num_layers = 2;
    c.vocab_size = 40;
    c.tie_word_embeddings = tied;
    return c;
}

fs::path fresh_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_ckpt_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    return dir;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "(no error)";
}

void check_message(const std::string& msg, std::initializer_list<std::string_view> parts) {
    INFO(msg);
    for (auto p : parts) CHECK(msg.find(p) != std::string::npos);
}

template <class Model>
std::map<std::string, std::vector<std::byte>> parameter_bytes(const Model& m) {
    std::map<std::string, std::vector<std::byte>> out;
    m.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        const auto* p = reinterpret_cast<const std::byte*>(buf.data());
        out[name].assign(p, p + buf.size() * sizeof(*buf.data()));
    });
    return out;
}

std::string file_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}
void write_text(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// The tensors of a safetensors file, editable, and written back.
struct raw_tensor {
    dtype type;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
};
std::map<std::string, raw_tensor> read_raw(const fs::path& file) {
    const safetensors_file f(file);
    std::map<std::string, raw_tensor> out;
    for (const auto& t : f.tensors()) {
        const auto b = f.raw(t);
        out[t.name] = {t.type, t.shape, {b.begin(), b.end()}};
    }
    return out;
}
void write_raw(const fs::path& file, const std::map<std::string, raw_tensor>& tensors) {
    safetensors_writer w;
    w.set_metadata("format", "pt");
    for (const auto& [name, t] : tensors) w.add_raw(name, t.type, t.shape, t.bytes);
    w.write(file);
}
void edit_weights(const fs::path& dir, const std::function<void(std::map<std::string, raw_tensor>&)>& edit) {
    auto t = read_raw(dir / "model.safetensors");
    edit(t);
    write_raw(dir / "model.safetensors", t);
}
void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(io_detail::mark_nonfinite_tokens(file_text(dir / "config.json")));
    edit(j);
    write_text(dir / "config.json", j.dump(2));
}

// A saved random model: the directory to corrupt in each test.
fs::path saved(const std::string& name, bool tied = false) {
    const fs::path dir = fresh_dir(name);
    language_model<float, cpu> m(tiny(tied));
    randomize(m, 99);
    save_checkpoint(m, transpoint_schedule::per_layer({3, 9}), dir);
    return dir;
}

}  // namespace

TEST_CASE("checkpoint: save then load is bit for bit, and saving again writes the same bytes") {
    const fs::path a = fresh_dir("roundtrip_a"), b = fresh_dir("roundtrip_b");
    language_model<float, cpu> model(tiny(false));
    randomize(model, 7);
    const auto schedule = transpoint_schedule::cyclic({5, 0, 12});
    save_checkpoint(model, schedule, a);

    auto loaded = load_checkpoint<float, cpu>(a);
    CHECK(loaded.has_schedule);
    CHECK(loaded.schedule == schedule);
    CHECK(loaded.unexpected_tensors.empty());
    CHECK(loaded.config.transmamba->attention == attention_spec{});
    CHECK(parameter_bytes(loaded.model) == parameter_bytes(model));
    const auto& c0 = model.config();
    const auto& c1 = loaded.model.config();
    CHECK(c1.vocab_size == c0.vocab_size);
    CHECK(c1.tie_word_embeddings == c0.tie_word_embeddings);
    CHECK(c1.backbone.num_layers == c0.backbone.num_layers);
    CHECK(c1.backbone.mixer.d_in_proj() == c0.backbone.mixer.d_in_proj());
    CHECK(c1.backbone.mixer.norm_eps == c0.backbone.mixer.norm_eps);
    CHECK(c1.backbone.mixer.dt_max == c0.backbone.mixer.dt_max);

    // The same logits, bit for bit.
    const index_t batch = 1, L = 11, V = c0.vocab_size;
    std::vector<std::int64_t> ids(L);
    for (index_t i = 0; i < L; ++i) ids[std::size_t(i)] = (i * 7) % V;
    std::vector<float> x(static_cast<std::size_t>(L * V)), y(x.size());
    workspace<cpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<float, 3>(x.data(), {batch, L, V}), schedule, ws);
    loaded.model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<float, 3>(y.data(), {batch, L, V}),
                         loaded.schedule, ws);
    CHECK(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);

    save_options keep;
    keep.extra_config = loaded.config.extra;
    save_checkpoint(loaded.model, loaded.schedule, b, keep);
    CHECK(file_text(a / "model.safetensors") == file_text(b / "model.safetensors"));
    CHECK(file_text(a / "config.json") == file_text(b / "config.json"));
    // Nothing but the two files.
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(a)) ++n;
    CHECK(n == 2);
    fs::remove_all(a);
    fs::remove_all(b);
}

TEST_CASE("checkpoint: double and bfloat16 storage, conversions on load") {
    const fs::path dir = fresh_dir("dtypes");
    language_model<double, cpu> model(tiny(true));
    randomize(model, 8);
    save_checkpoint(model, dir);  // plain Mamba2: no transmamba object
    CHECK(file_text(dir / "config.json").find("transmamba") == std::string::npos);
    CHECK(safetensors_file(dir / "model.safetensors").at("backbone.embeddings.weight").type == dtype::F64);
    auto d = load_checkpoint<double, cpu>(dir);
    CHECK(!d.has_schedule);
    CHECK(d.schedule == transpoint_schedule::fixed(0));
    CHECK(parameter_bytes(d.model) == parameter_bytes(model));

    // float model saved as BF16: loads as the bf16-rounded values, into float and into double.
    language_model<float, cpu> f(tiny(false));
    randomize(f, 9);
    save_checkpoint(f, transpoint_schedule::fixed(4), dir, {.weights_dtype = dtype::BF16});
    CHECK(file_text(dir / "config.json").find("\"dtype\": \"bfloat16\"") != std::string::npos);
    const auto as_float = load_checkpoint<float, cpu>(dir);
    const auto as_double = load_checkpoint<double, cpu>(dir);
    std::map<std::string, std::vector<float>> want;
    f.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        for (std::size_t i = 0; i < buf.size(); ++i) want[name].push_back(bf16_bits_to_float(float_to_bf16_bits(buf.data()[i])));
    });
    as_float.model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        CAPTURE(name);
        CHECK(std::vector<float>(buf.data(), buf.data() + buf.size()) == want.at(name));
    });
    as_double.model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        const auto& w = want.at(name);
        CHECK(std::vector<double>(buf.data(), buf.data() + buf.size()) == std::vector<double>(w.begin(), w.end()));
    });
    // Saving keeps config fields the model does not use.
    edit_config(dir, [](nlohmann::json& j) { j["pad_token_id"] = 3; });
    const auto with_extra = load_checkpoint<float, cpu>(dir);
    CHECK(with_extra.config.extra.at("pad_token_id") == 3);
    save_options keep;
    keep.extra_config = with_extra.config.extra;
    save_checkpoint(with_extra.model, with_extra.schedule, dir, keep);
    CHECK(read_hf_mamba2_config(dir / "config.json").extra.at("pad_token_id") == 3);
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: missing, misshapen, mistyped, unexpected and non-finite tensors are named") {
    const fs::path dir = saved("errors");
    const std::string file = (dir / "model.safetensors").string();
    const auto pristine = read_raw(dir / "model.safetensors");
    auto reset = [&] { write_raw(dir / "model.safetensors", pristine); };
    auto load = [&] { (void)load_checkpoint<float, cpu>(dir); };

    edit_weights(dir, [](auto& t) { t.erase("backbone.layers.1.mixer.D"); });
    check_message(error_of(load), {"checkpoint '", "is missing 1 tensor that config.json calls for: backbone.layers.1.mixer.D"});
    edit_weights(dir, [](auto& t) { t.erase("lm_head.weight"); t.erase("backbone.norm_f.weight"); });
    check_message(error_of(load), {"is missing 3 tensors", "backbone.norm_f.weight", "lm_head.weight"});
    reset();

    edit_weights(dir, [](auto& t) {
        auto& a = t.at("backbone.layers.0.mixer.A_log");
        a.shape = {2, 4};
    });
    check_message(error_of(load), {"'" + file + "'", "tensor 'backbone.layers.0.mixer.A_log': shape (2, 4), expected (8)"});
    reset();

    edit_weights(dir, [](auto& t) {
        auto& d = t.at("backbone.layers.0.mixer.D");
        d.type = dtype::I32;
    });
    check_message(error_of(load), {"tensor 'backbone.layers.0.mixer.D': has dtype I32; weights must be F32, F16, BF16 or F64"});
    reset();

    edit_weights(dir, [](auto& t) {
        auto& w = t.at("backbone.layers.1.mixer.out_proj.weight");
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(w.bytes.data() + 3 * sizeof(float), &nan, sizeof(float));
    });
    check_message(error_of(load), {"tensor 'backbone.layers.1.mixer.out_proj.weight': holds a non-finite value (nan) at flat index 3"});
    reset();

    edit_weights(dir, [](auto& t) {
        t["backbone.layers.2.mixer.D"] = t.at("backbone.layers.1.mixer.D");
        t["extra.bias"] = t.at("backbone.layers.1.mixer.D");
    });
    check_message(error_of(load), {"holds 2 tensors that the model does not use: backbone.layers.2.mixer.D, extra.bias",
                                   "allow_unexpected_tensors"});
    const auto lenient = load_checkpoint<float, cpu>(dir, {.allow_unexpected_tensors = true});
    CHECK(lenient.unexpected_tensors == std::vector<std::string>{"backbone.layers.2.mixer.D", "extra.bias"});
    reset();

    // A file that is not a valid safetensors file at all.
    fs::resize_file(dir / "model.safetensors", 100);
    check_message(error_of(load), {"safetensors file '" + file + "'"});
    fs::remove(dir / "model.safetensors");
    check_message(error_of(load), {"has no model.safetensors"});
    write_text(dir / "pytorch_model.bin", "x");
    check_message(error_of(load), {"pytorch_model.bin, which this library does not read"});
    fs::remove_all(dir);
    check_message(error_of(load), {"checkpoint directory '", "does not exist"});
}

TEST_CASE("checkpoint: config and weights that disagree") {
    const fs::path dir = saved("config");
    auto load = [&] { (void)load_checkpoint<float, cpu>(dir); };
    const std::string config = file_text(dir / "config.json");

    edit_config(dir, [](auto& j) { j["vocab_size"] = 41; });
    check_message(error_of(load), {"tensor 'backbone.embeddings.weight': shape (40, 32), expected (41, 32)"});
    write_text(dir / "config.json", config);

    edit_config(dir, [](auto& j) {
        j["num_hidden_layers"] = 3;
        j["transmamba"]["kind"] = "cyclic";  // a per_layer schedule would need 3 entries
    });
    check_message(error_of(load), {"is missing 9 tensors", "backbone.layers.2.norm.weight"});
    write_text(dir / "config.json", config);

    // A config describing far more than the files hold is refused before anything is allocated.
    edit_config(dir, [](auto& j) {
        j["hidden_size"] = 1 << 20;
        j["num_heads"] = 1 << 17;
        j["head_dim"] = 16;
        j["n_groups"] = 1;
        j.erase("transmamba");
    });
    check_message(error_of(load), {"config '", "parameters, but the weights (model.safetensors) hold only", "does not belong to these weights"});
    write_text(dir / "config.json", config);

    edit_config(dir, [](auto& j) { j["n_groups"] = 3; });
    check_message(error_of(load), {"field 'n_groups' = 3 does not divide num_heads = 8"});
    write_text(dir / "config.json", config);

    fs::remove(dir / "config.json");
    check_message(error_of(load), {"has no config.json"});
    write_text(dir / "config.json", "{\"hidden_size\": ");
    check_message(error_of(load), {"config '", "config.json' is not valid JSON"});
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: the attention variant of the checkpoint must be the model type's") {
    const fs::path dir = saved("attention");
    edit_config(dir, [](auto& j) { j["transmamba"]["attention"] = "rope"; });
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }),
                  {"field 'transmamba.attention' = \"rope\", but the model type runs the attention variant \"paper\""});
    using rope_model = layer_pattern<transmamba_layer<mixer_policies<rope_attention>>>;
    const auto loaded = load_checkpoint<float, cpu, rope_model>(dir);
    CHECK(loaded.config.transmamba->attention.rope);
    // Saving a rope model records its variant.
    save_checkpoint(loaded.model, loaded.schedule, dir);
    CHECK(file_text(dir / "config.json").find("\"attention\": \"rope\"") != std::string::npos);
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: tied LM heads, use_conv_bias = false") {
    const fs::path dir = saved("tied", /*tied=*/true);
    CHECK(!safetensors_file(dir / "model.safetensors").find("lm_head.weight"));
    // A tied head that some writers keep: accepted when equal to the embeddings, refused otherwise.
    edit_weights(dir, [](auto& t) { t["lm_head.weight"] = t.at("backbone.embeddings.weight"); });
    CHECK(load_checkpoint<float, cpu>(dir).unexpected_tensors.empty());
    edit_weights(dir, [](auto& t) { t.at("lm_head.weight").bytes[5] ^= std::byte{1}; });
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }),
                  {"tensor 'lm_head.weight': differs from backbone.embeddings.weight although tie_word_embeddings is true"});
    edit_weights(dir, [](auto& t) { t.erase("lm_head.weight"); });

    // No conv bias: the tensors are absent and the bias is zero.
    edit_config(dir, [](auto& j) { j["use_conv_bias"] = false; });
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }),
                  {"tensor 'backbone.layers.0.mixer.conv1d.bias': is present although config.json says use_conv_bias = false"});
    edit_weights(dir, [](auto& t) {
        t.erase("backbone.layers.0.mixer.conv1d.bias");
        t.erase("backbone.layers.1.mixer.conv1d.bias");
    });
    const auto loaded = load_checkpoint<float, cpu>(dir);
    loaded.model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        if (name.ends_with("conv1d.bias"))
            for (std::size_t i = 0; i < buf.size(); ++i) CHECK(buf.data()[i] == 0.0f);
    });
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: sharded weights (model.safetensors.index.json)") {
    const fs::path dir = saved("shards");
    const auto all = read_raw(dir / "model.safetensors");
    std::map<std::string, raw_tensor> first, second;
    nlohmann::json map = nlohmann::json::object();
    for (const auto& [name, t] : all) {
        const bool one = name.find("layers.1") == std::string::npos;
        (one ? first : second)[name] = t;
        map[name] = one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    write_raw(dir / "model-00001-of-00002.safetensors", first);
    write_raw(dir / "model-00002-of-00002.safetensors", second);
    const auto single = load_checkpoint<float, cpu>(dir);
    fs::remove(dir / "model.safetensors");
    auto write_index = [&](const nlohmann::json& m) {
        write_text(dir / "model.safetensors.index.json", nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", m}}.dump());
    };
    write_index(map);
    const auto sharded = load_checkpoint<float, cpu>(dir);
    CHECK(parameter_bytes(sharded.model) == parameter_bytes(single.model));

    auto bad = map;
    bad["backbone.norm_f.weight"] = "model-00002-of-00002.safetensors";
    write_index(bad);
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }),
                  {"puts tensor 'backbone.norm_f.weight' in 'model-00002-of-00002.safetensors', which does not hold it"});
    bad = map;
    bad["backbone.norm_f.weight"] = "../elsewhere.safetensors";
    write_index(bad);
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }), {"which is not a file name in the checkpoint directory"});
    bad = map;
    bad["backbone.norm_f.weight"] = "model-00003-of-00002.safetensors";
    write_index(bad);
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }), {"cannot open '", "model-00003-of-00002.safetensors"});
    write_text(dir / "model.safetensors.index.json", "{\"weight_map\": 5}");
    check_message(error_of([&] { (void)load_checkpoint<float, cpu>(dir); }), {"has no object 'weight_map'"});
    fs::remove_all(dir);
}

TEST_CASE("load_hf_mamba2: a float CPU model") {
    const fs::path dir = saved("hf");
    const auto m = load_hf_mamba2(dir);
    CHECK(m.model.vocab_size() == 40);
    CHECK(m.schedule == transpoint_schedule::per_layer({3, 9}));
    fs::remove_all(dir);
}

}  // namespace test_io_checkpoint
