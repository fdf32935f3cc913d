#pragma once
// The work behind each subcommand of the `transmamba` program, written once for every backend and
// storage type; main.cpp parses the arguments and dispatches, cuda_commands.cu instantiates the GPU
// versions in the program's GPU module (cuda_module.hpp).
//
// Every command checks what it can before it computes or allocates: its outputs (output_paths.hpp),
// then the memory its big buffers need (memory_budget.hpp), then it allocates phase by phase, each
// phase naming its buffer if an allocation fails anyway.
#include <transmamba/decode/sampling.hpp>
#include <transmamba/decode/session.hpp>
#include <transmamba/io.hpp>
#include <transmamba/model/language_model.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "memory_budget.hpp"
#include "output_paths.hpp"

namespace transmamba::cli {

enum class storage { f32, bf16, f16 };

// Which TransPoints, the same three flags in every command: --transpoint (one P for every layer),
// --schedule (one P per layer, in order), --cyclic-schedule (a table repeated over the layers,
// layer i takes entry i mod size, as the paper's schedules are written). Without any, run and
// generate use the checkpoint's own schedule (else 0, pure Mamba2) and init writes 0.
struct transpoint_choice {
    std::optional<index_t> transpoint;
    std::vector<index_t> schedule;
    std::vector<index_t> cyclic;

    transpoint_schedule resolve(const transpoint_schedule& fallback, index_t layers) const {
        transpoint_schedule s = fallback;
        if (!schedule.empty()) {
            require(static_cast<index_t>(schedule.size()) == layers, "--schedule gives ", schedule.size(),
                    " TransPoints, but the model has ", layers, " layers: it takes one per layer (--cyclic-schedule repeats a "
                    "shorter table, --transpoint gives one P for all)");
            s = transpoint_schedule::per_layer(schedule);
        } else if (!cyclic.empty()) {
            s = transpoint_schedule::cyclic(cyclic);
        } else if (transpoint) {
            s = transpoint_schedule::fixed(*transpoint);
        }
        s.validate(layers);
        return s;
    }
};

struct run_args {
    std::filesystem::path model, input, output;
    transpoint_choice points;
    bool states = false;
    bool last = false;  // only each sequence's last-token logits: (batch, vocab)
};

struct generate_args {
    std::filesystem::path model;
    std::vector<std::int64_t> prompt;
    index_t max_new_tokens = 16;
    sampling_options sampling;
    transpoint_choice points;
    bool progress = true;
};

struct init_args {
    std::filesystem::path out;
    index_t d_model = 64, num_layers = 2, headdim = 16, d_state = 16, ngroups = 1, expand = 2, vocab = 256,
            chunk = 64, d_conv = 4;
    bool tie = true;
    bool force = false;  // replace a checkpoint already in `out`
    std::uint64_t seed = 1;
    transpoint_choice points;
};

template <class T, class Backend>
using model_of = language_model<T, Backend, mamba2_pattern>;

// The memory a backend computes in: the host's on the CPU; cuda_commands.cu specialises it for the GPU.
template <class Backend>
struct backend_memory {
    static std::uint64_t bytes() { return physical_memory_bytes(); }
    static constexpr std::string_view name = "memory";
};

template <class Backend>
void require_fits(const memory_plan& plan) {
    plan.require_fits(physical_memory_bytes(), backend_memory<Backend>::bytes(), backend_traits<Backend>::host_accessible,
                      backend_memory<Backend>::name);
}

// The checkpoint's config.json as the loader reads it, to size buffers before the weights are
// loaded. When it cannot be read the loader, run at once, says why: it reads config.json before it
// allocates anything.
template <class T, class Backend>
hf_mamba2_config checkpoint_config(const std::filesystem::path& dir) {
    try {
        std::error_code ec;
        if (std::filesystem::is_regular_file(dir / "config.json", ec)) return read_hf_mamba2_config(dir / "config.json");
    } catch (const error&) {
    }
    (void)load_checkpoint<T, Backend, mamba2_pattern>(dir);
    fail("checkpoint '", dir.string(), "': cannot read config.json");
}

inline byte_count weight_bytes(const hf_mamba2_config& c, std::size_t element_size) {
    const auto n = c.parameter_count();
    return n ? byte_count(*n) * byte_count(element_size) : byte_count::too_many();
}

// A session's KV caches: below its TransPoint a layer keeps keys (ngroups x d_state), values
// (nheads x headdim) and dt (nheads) for up to min(P, max_tokens) tokens (block/decode_state.hpp).
template <class T>
byte_count kv_cache_bytes(const mixer_config& m, const transpoint_schedule& s, index_t layers, index_t max_tokens) {
    byte_count tokens;
    for (index_t i = 0; i < layers; ++i) tokens = tokens + byte_count::of(std::min(s(i, max_tokens), max_tokens));
    const byte_count per_token = byte_count::of(m.ngroups) * byte_count::of(m.d_state) * byte_count(sizeof(T)) +
                                 byte_count::of(m.nheads()) * byte_count::of(m.headdim) * byte_count(sizeof(T)) +
                                 byte_count::of(m.nheads()) * byte_count(sizeof(compute_t<T>));
    return tokens * per_token;
}

inline std::string shape_text(std::initializer_list<index_t> extents) {
    std::string s;
    for (auto e : extents) s.append(s.empty() ? "" : " x ").append(std::to_string(e));
    return s;
}

// What run holds at once for `batch` sequences of `L` tokens, before the workspace (known once the
// model is loaded): the weights, the logits (in host memory too on a GPU), and with --last or
// --states one session's KV cache.
template <class T, class Backend>
memory_plan run_plan(const hf_mamba2_config& cfg, const run_args& a, index_t batch, index_t L) {
    memory_plan plan("run");
    const index_t V = cfg.vocab_size;
    plan.add("the weights", weight_bytes(cfg, sizeof(T)), "--model");
    const byte_count logits = byte_count::of(batch) * byte_count::of(a.last ? 1 : L) * byte_count::of(V) * byte_count(sizeof(float));
    const std::string what = "the logits (" + (a.last ? shape_text({batch, V}) : shape_text({batch, L, V})) + " float32)";
    const std::string by = a.last ? "--input's batch and the model's vocab_size"
                                  : "--input's shape (batch x len) and the model's vocab_size (--last keeps only the last "
                                    "token's)";
    if (!a.last) plan.add(what, logits, by);
    if (a.last || !backend_traits<Backend>::host_accessible) plan.add(what + " in host memory", logits, by, memory_space::host);
    if (a.last || a.states) {
        const auto schedule =
            a.points.resolve(cfg.transmamba ? cfg.transmamba->schedule : transpoint_schedule{}, cfg.num_hidden_layers);
        plan.add("the KV cache of a " + std::to_string(L) + "-token sequence",
                 kv_cache_bytes<T>(cfg.model_config().backbone.mixer, schedule, cfg.num_hidden_layers, L),
                 "--input's len and the TransPoints");
    }
    return plan;
}

// run: logits (float32, batch x len x vocab; with --last batch x vocab) for input_ids (int64,
// batch x len); with --states the SSM state after each sequence's last token, per layer, as
// final_state.{layer} (batch, h, p, n). The logits exist once in host memory: the writer streams
// them from the model's output buffer on the CPU, from one host copy on the GPU.
template <class T, class Backend>
int run(const run_args& a) {
    using traits = backend_traits<Backend>;
    std::vector<protected_file> reads{{a.input, "the --input file"}};
    for (const auto& f : checkpoint_files(a.model)) reads.push_back({f, "a file of the --model checkpoint"});
    check_output_file("--output", a.output, reads);
    const auto peeked = checkpoint_config<T, Backend>(a.model);

    const safetensors_file in(a.input);
    const tensor_info& ids_info = in.at("input_ids");
    require(ids_info.shape.size() == 2, "input file '", a.input.string(), "': tensor 'input_ids' must be 2-D (batch, len), got ",
            ids_info.shape.size(), " dimensions");
    const index_t batch = ids_info.shape[0], L = ids_info.shape[1];
    require(batch > 0 && L > 0, "input file '", a.input.string(), "': tensor 'input_ids' is empty");
    const bool sessions = a.last || a.states;  // one inference_session per sequence

    memory_plan plan = run_plan<T, Backend>(peeked, a, batch, L);
    require_fits<Backend>(plan);

    auto loaded = allocation_phase("the weights", weight_bytes(peeked, sizeof(T)), "--model",
                                   [&] { return load_checkpoint<T, Backend, mamba2_pattern>(a.model); });
    const auto& model = loaded.model;
    const index_t V = model.vocab_size();
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    const auto ids = in.read<std::int64_t>(ids_info);
    model.check_token_ids({ids.data(), {batch, L}});
    // The workspaces, known once the model is: the forward pass's, or a session's.
    const byte_count scratch = sessions ? byte_count(model.backbone().decode_workspace_bytes(L, L))
                                        : byte_count(model.workspace_bytes(batch, L));
    plan.add("the workspace", scratch, "--input's shape");
    require_fits<Backend>(plan);

    safetensors_writer out;
    out.set_metadata("format", "pt");
    typename traits::template buffer<float> logits;
    std::vector<float> logits_host;  // the GPU's logits, or --last's rows
    const byte_count full_bytes = byte_count::of(batch) * byte_count::of(L) * byte_count::of(V) * byte_count(sizeof(float));
    const std::string full_what = "the logits (" + shape_text({batch, L, V}) + " float32)";
    if (!a.last) {
        allocation_phase(full_what, full_bytes, "--input's shape and the model's vocab_size (--last keeps the last token's)",
                         [&] { logits.resize(static_cast<std::size_t>(batch * L * V)); });
        workspace<Backend> ws;
        allocation_phase("the workspace", scratch, "--input's shape", [&] { ws.reserve(model.workspace_bytes(batch, L)); });
        model.forward({ids.data(), {batch, L}}, {logits.data(), {batch, L, V}}, schedule, ws);
        if constexpr (traits::host_accessible) {
            out.add_view("logits", {batch, L, V}, std::span<const float>(logits.data(), logits.size()));
        } else {
            allocation_phase(full_what + " in host memory", full_bytes, "--input's shape and the model's vocab_size",
                             [&] { logits_host.resize(logits.size()); });
            traits::copy_to_host(logits.data(), logits_host.data(), logits_host.size(), {});
            traits::synchronize({});
            logits.resize(0);
            out.add_view("logits", {batch, L, V}, std::span<const float>(logits_host));
        }
    }

    const auto& c = model.config().backbone.mixer;
    const auto per_seq = static_cast<std::size_t>(c.nheads() * c.headdim * c.d_state);
    std::vector<std::vector<float>> states;
    if (sessions) {
        if (a.last)
            allocation_phase("the logits (" + shape_text({batch, V}) + " float32)",
                             byte_count::of(batch) * byte_count::of(V) * byte_count(sizeof(float)), "--input's batch",
                             [&] { logits_host.resize(static_cast<std::size_t>(batch * V)); });
        if (a.states)
            states.assign(static_cast<std::size_t>(model.num_transpoint_layers()), std::vector<float>(per_seq * std::size_t(batch)));
        for (index_t b = 0; b < batch; ++b) {
            // One session per sequence: its prefill gives the last token's logits and leaves every
            // layer's state after the last token. TransPoints resolve at max_tokens = L, as in forward.
            inference_session<model_of<T, Backend>> s(model, schedule, L);
            const auto last = s.prefill(std::span(ids.data() + b * L, static_cast<std::size_t>(L)));
            if (a.last) std::copy(last.begin(), last.end(), logits_host.begin() + b * V);
            if (a.states) {
                for (index_t layer = 0; layer < model.num_transpoint_layers(); ++layer)
                    traits::copy_to_host(s.layer_state(layer).data(), states[std::size_t(layer)].data() + b * per_seq, per_seq, {});
                traits::synchronize({});
            }
        }
        if (a.last) out.add_view("logits", {batch, V}, std::span<const float>(logits_host));
        for (std::size_t layer = 0; layer < states.size(); ++layer)
            out.add_view("final_state." + std::to_string(layer), {batch, c.nheads(), c.headdim, c.d_state},
                         std::span<const float>(states[layer]));
    }
    out.write(a.output);
    std::printf("wrote %s: logits (%s)%s\n", a.output.string().c_str(),
                (a.last ? shape_text({batch, V}) : shape_text({batch, L, V})).c_str(), a.states ? " and final_state.{layer}" : "");
    return 0;
}

struct generation {
    std::vector<std::int64_t> tokens;
    double prefill_seconds = 0, decode_seconds = 0;
};

inline std::string generate_total_by(const generate_args& a) {
    return "--max-new-tokens (max_tokens = " + std::to_string(a.prompt.size()) + " prompt tokens + " +
           std::to_string(a.max_new_tokens) + ") and the TransPoints";
}

// What generate holds before the decoding workspace (known once the model is loaded): the weights
// and the session's KV cache for max_tokens = prompt + max_new_tokens. The sum is checked by the caller.
template <class T>
memory_plan generate_plan(const hf_mamba2_config& cfg, const generate_args& a) {
    memory_plan plan("generate");
    const index_t total = static_cast<index_t>(a.prompt.size()) + a.max_new_tokens;
    plan.add("the weights", weight_bytes(cfg, sizeof(T)), "--model");
    const auto schedule = a.points.resolve(cfg.transmamba ? cfg.transmamba->schedule : transpoint_schedule{}, cfg.num_hidden_layers);
    plan.add("the KV cache for " + std::to_string(total) + " tokens",
             kv_cache_bytes<T>(cfg.model_config().backbone.mixer, schedule, cfg.num_hidden_layers, total), generate_total_by(a));
    return plan;
}

// Prefills the prompt, then samples max_new_tokens tokens one decoding step at a time.
template <class T, class Backend>
generation generate_tokens(const generate_args& a) {
    require(!a.prompt.empty(), "--prompt-ids is empty");
    const auto prompt_len = static_cast<index_t>(a.prompt.size());
    const index_t most_new = std::numeric_limits<index_t>::max() - prompt_len;
    require(a.max_new_tokens >= 0 && a.max_new_tokens <= most_new, "--max-new-tokens '", a.max_new_tokens,
            "': out of range; expected a decimal integer in [0, ", most_new, "] (the prompt's ", prompt_len,
            " tokens plus the new ones must fit in a 64-bit count)");
    const index_t total = prompt_len + a.max_new_tokens;
    const std::string total_by = generate_total_by(a);

    const auto peeked = checkpoint_config<T, Backend>(a.model);
    memory_plan plan = generate_plan<T>(peeked, a);
    require_fits<Backend>(plan);

    auto loaded = allocation_phase("the weights", weight_bytes(peeked, sizeof(T)), "--model",
                                   [&] { return load_checkpoint<T, Backend, mamba2_pattern>(a.model); });
    const auto& model = loaded.model;
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    // The decoding workspace grows (piecewise) linearly with max_tokens: measured exactly up to
    // 2^32 tokens (where the arena's size arithmetic cannot overflow), extrapolated past that from
    // its growth between 2^31 and 2^32 tokens.
    const auto& stack = model.backbone();
    constexpr index_t near = index_t(1) << 31, far = index_t(1) << 32;
    byte_count scratch(stack.decode_workspace_bytes(prompt_len, std::min(total, far)));
    if (total > far) {
        const std::size_t at_near = stack.decode_workspace_bytes(prompt_len, near), at_far = scratch.value();
        const byte_count growth = byte_count(at_far > at_near ? at_far - at_near : 0);
        scratch = scratch + growth * byte_count::of((total - far + near - 1) / near);
    }
    plan.add("the decoding workspace for " + std::to_string(total) + " tokens", scratch, total_by);
    require_fits<Backend>(plan);

    const auto session_bytes = plan.total(memory_space::backend);
    auto session = allocation_phase("the decoding state for " + std::to_string(total) + " tokens", session_bytes, total_by,
                                    [&] { return std::make_unique<inference_session<model_of<T, Backend>>>(model, schedule, total); });
    sampler pick(a.sampling);

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    auto logits = allocation_phase("the prefill's workspace", session_bytes, "--prompt-ids and " + total_by,
                                   [&] { return session->prefill(a.prompt); });
    const auto after_prefill = clock::now();
    generation out;
    out.tokens.reserve(static_cast<std::size_t>(std::min<index_t>(a.max_new_tokens, index_t(1) << 20)));
    auto last_report = after_prefill;
    bool reported = false;
    std::vector<float> row;
    for (index_t i = 0; i < a.max_new_tokens; ++i) {
        row.assign(logits.begin(), logits.end());
        const auto next = static_cast<std::int64_t>(pick.next(row));
        out.tokens.push_back(next);
        if (i + 1 < a.max_new_tokens) logits = session->step(next);
        if (a.progress && clock::now() - last_report > std::chrono::milliseconds(500)) {
            std::fprintf(stderr, "\r%lld / %lld tokens", (long long)(i + 1), (long long)a.max_new_tokens);
            last_report = clock::now();
            reported = true;
        }
    }
    if (reported) std::fprintf(stderr, "\n");
    out.prefill_seconds = std::chrono::duration<double>(after_prefill - start).count();
    out.decode_seconds = std::chrono::duration<double>(clock::now() - after_prefill).count();
    return out;
}

// generate: the ids on stdout, the speed on stderr.
template <class T, class Backend>
int generate(const generate_args& a) {
    const auto g = generate_tokens<T, Backend>(a);
    std::string ids;
    for (auto id : g.tokens) ids.append(ids.empty() ? "" : ",").append(std::to_string(id));
    std::printf("%s\n", ids.c_str());
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f tokens/s); generated %zu tokens in %.3f s (%.1f tokens/s)\n",
                 a.prompt.size(), g.prefill_seconds, double(a.prompt.size()) / std::max(g.prefill_seconds, 1e-9),
                 g.tokens.size(), g.decode_seconds, double(g.tokens.size()) / std::max(g.decode_seconds, 1e-9));
    return 0;
}

namespace cli_detail {

// The flags of init behind each config field, for messages that name a field.
inline std::string init_flags_named_in(std::string_view message) {
    static constexpr std::pair<std::string_view, std::string_view> fields[] = {
        {"hidden_size", "--d-model"},     {"d_model", "--d-model"},       {"num_heads", "--d-model"},
        {"nheads", "--d-model"},          {"expand", "--expand"},         {"num_heads", "--expand"},
        {"nheads", "--expand"},           {"head_dim", "--headdim"},      {"headdim", "--headdim"},
        {"num_heads", "--headdim"},       {"nheads", "--headdim"},        {"state_size", "--d-state"},
        {"d_state", "--d-state"},         {"n_groups", "--ngroups"},      {"ngroups", "--ngroups"},
        {"chunk_size", "--chunk-size"},   {"num_hidden_layers", "--layers"}, {"num_layers", "--layers"},
        {"vocab_size", "--vocab"},        {"transpoints", "--transpoint/--schedule/--cyclic-schedule"}};
    std::vector<std::string_view> flags;
    for (const auto& [field, flag] : fields)
        if (message.find(field) != std::string_view::npos && std::find(flags.begin(), flags.end(), flag) == flags.end())
            flags.push_back(flag);
    std::string text;
    for (auto f : flags) text.append(text.empty() ? "" : ", ").append(f);
    return text;
}

}  // namespace cli_detail

// The config init writes for `a`, refused unless the loader reads it back: config.json's own
// parser runs on the text init would write (so init and the loader share one set of limits), then
// the library's validate() on the model config the loader would make of it.
inline std::pair<language_model_config, transpoint_schedule> init_config(const init_args& a) {
    try {
        hf_mamba2_config h;
        h.hidden_size = a.d_model;
        h.state_size = a.d_state;
        h.head_dim = a.headdim;
        h.n_groups = a.ngroups;
        h.expand = a.expand;
        h.conv_kernel = a.d_conv;
        h.chunk_size = a.chunk;
        h.num_hidden_layers = a.num_layers;
        h.vocab_size = a.vocab;
        h.tie_word_embeddings = a.tie;
        // expand * d_model / headdim, without overflow: a product past 64 bits is a num_heads the
        // parser refuses like any other out-of-range field.
        constexpr index_t most = std::numeric_limits<index_t>::max();
        const bool fits = a.expand > 0 && a.d_model > 0 && a.headdim > 0 && a.expand <= most / a.d_model;
        h.num_heads = fits ? a.expand * a.d_model / a.headdim : most;
        const auto schedule = a.points.resolve(transpoint_schedule::fixed(0), a.num_layers);
        using attention = typename checkpoint_pattern<mamba2_pattern>::policies::attention;
        h.transmamba = transmamba_options{schedule, attention_spec::of<attention>(a.d_state)};
        const hf_mamba2_config read_back = parse_hf_mamba2_config(to_json_text(h), "init --out " + a.out.string());
        validate_model_config(read_back, "init --out " + a.out.string());
        const language_model_config cfg = read_back.model_config();
        cfg.validate();
        return {cfg, schedule};
    } catch (const error& e) {
        const std::string flags = cli_detail::init_flags_named_in(e.what());
        if (flags.empty()) throw;
        throw error(std::string(e.what()) + " (set by " + flags + "); nothing was written");
    }
}

// init: a small random TransMamba checkpoint, so that run and generate can be tried with nothing
// downloaded.
inline int init(const init_args& a) {
    const auto [cfg, schedule] = init_config(a);
    check_checkpoint_output("--out", a.out, a.force);

    // The weights, twice: save_checkpoint encodes a copy of them for model.safetensors.
    const auto h = hf_mamba2_config::from(cfg);
    const byte_count all = weight_bytes(h, sizeof(float));
    const byte_count embed = byte_count::of(a.vocab) * byte_count::of(a.d_model) * byte_count(sizeof(float)) *
                             byte_count(a.tie ? 1 : 2);
    const byte_count layers = all.known() && embed.known() && all.value() >= embed.value() ? byte_count(all.value() - embed.value())
                                                                                             : byte_count::too_many();
    memory_plan plan("init");
    plan.add(std::string(a.tie ? "the embeddings" : "the embeddings and the LM head") +
                 " (--vocab x --d-model float32, twice while model.safetensors is written)",
             embed * byte_count(2), "--vocab and --d-model");
    plan.add("the layers' weights (twice while model.safetensors is written)", layers * byte_count(2),
             "--layers and the layer size (--d-model, --expand, --d-state, --ngroups, --headdim)");
    require_fits<cpu>(plan);

    auto model = allocation_phase("the weights", all, "--vocab, --d-model and --layers", [&] { return model_of<float, cpu>(cfg); });
    randomize(model, a.seed);
    allocation_phase("the copy of the weights written to model.safetensors", all, "--vocab, --d-model and --layers",
                     [&] { save_checkpoint(model, schedule, a.out); });
    std::string points;
    for (auto p : schedule.transpoints) points.append(points.empty() ? "" : ",").append(std::to_string(p));
    std::printf("wrote %s: %lld layers, d_model %lld, vocab %lld, TransPoints (%s) %s\n", a.out.string().c_str(),
                (long long)a.num_layers, (long long)a.d_model, (long long)a.vocab,
                std::string(schedule_kind_name(schedule.kind)).c_str(), points.c_str());
    return 0;
}

}  // namespace transmamba::cli
