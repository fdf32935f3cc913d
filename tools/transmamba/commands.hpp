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
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "generation_text.hpp"
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
    std::filesystem::path model, input, output;  // input: empty when the ids come from --prompt-ids / --prompt
    std::vector<std::int64_t> prompt;            // --prompt-ids: one sequence
    std::optional<std::string> prompt_text;      // --prompt: one sequence, through the checkpoint's tokenizer.json
    transpoint_choice points;
    bool states = false;
    bool last = false;     // only each sequence's last-token logits: (batch, vocab)
    bool verbose = false;  // the memory held, at the end
};

struct generate_args {
    std::filesystem::path model;
    std::vector<std::int64_t> prompt;        // --prompt-ids
    std::optional<std::string> prompt_text;  // --prompt: encoded by the checkpoint's tokenizer.json
    index_t max_new_tokens = 16;
    sampling_options sampling;
    transpoint_choice points;
    bool progress = true;         // the prefill's progress on stderr (main: only when stderr is a terminal)
    bool progress_tokens = true;  // and the decoding's (main: not when stdout is that terminal too)
    bool print_ids = false;       // --ids: ids on stdout, not text
    bool ignore_eos = false;      // --ignore-eos: go on past the end-of-sequence token
    bool verbose = false;         // the memory held, at the end
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
    static std::string device() { return "cpu (" + std::to_string(max_threads()) + " threads)"; }
};

template <class Backend>
void require_fits(const memory_plan& plan) {
    plan.require_fits(physical_memory_bytes(), backend_memory<Backend>::bytes(), backend_traits<Backend>::host_accessible,
                      backend_memory<Backend>::name);
}

inline std::string schedule_text(const transpoint_schedule& s) {
    std::string points;
    for (auto p : s.transpoints) points.append(points.empty() ? "" : ",").append(std::to_string(p));
    return std::string(schedule_kind_name(s.kind)) + " (" + points + ")";
}

// 1234567 -> "1.23M".
inline std::string count_text(std::uint64_t n) {
    char text[32];
    if (n < 10000) std::snprintf(text, sizeof(text), "%llu", static_cast<unsigned long long>(n));
    else if (n < 10'000'000) std::snprintf(text, sizeof(text), "%.2fk", double(n) / 1e3);
    else if (n < 10'000'000'000ULL) std::snprintf(text, sizeof(text), "%.2fM", double(n) / 1e6);
    else std::snprintf(text, sizeof(text), "%.2fB", double(n) / 1e9);
    return text;
}

// The one line about the loaded model, on stderr, once the arguments are checked and before the work.
template <class T, class Backend>
std::string model_summary(const std::filesystem::path& dir, const model_of<T, Backend>& model, const transpoint_schedule& s) {
    const auto& c = model.config();
    std::string dtype_text(dtype_name(dtype_of<T>()));  // "f32", "bf16": as --dtype spells it
    for (auto& ch : dtype_text) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return "model '" + dir.string() + "': " + std::to_string(c.backbone.num_layers) + " layers, d_model " +
           std::to_string(c.backbone.mixer.d_model) + ", vocab " + std::to_string(c.vocab_size) + ", schedule " +
           schedule_text(s) + ", " + count_text(std::uint64_t(c.parameter_count())) + " parameters, " +
           dtype_text + ", " + backend_memory<Backend>::device();
}

// --verbose: what a command holds at its end.
inline void print_memory_held(std::string_view command, std::initializer_list<std::pair<std::string_view, std::size_t>> parts) {
    std::string line = std::string(command) + " held:";
    std::uint64_t total = 0;
    const char* separator = " ";
    for (const auto& [what, bytes] : parts) {
        line.append(separator).append(what).append(" ").append(byte_count(bytes).describe());
        separator = ", ";
        total += bytes;
    }
    std::fprintf(stderr, "%s; total %s\n", line.c_str(), byte_count(total).describe().c_str());
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
    const bool from_file = !a.input.empty();
    require(from_file + !a.prompt.empty() + a.prompt_text.has_value() == 1,
            "run takes its ids from exactly one of --input, --prompt-ids and --prompt");
    std::vector<protected_file> reads;
    if (from_file) reads.push_back({a.input, "the --input file"});
    for (const auto& f : checkpoint_files(a.model)) reads.push_back({f, "a file of the --model checkpoint"});
    check_output_file("--output", a.output, reads);
    const auto peeked = checkpoint_config<T, Backend>(a.model);

    // The ids: --input's input_ids (batch x len), or one sequence from --prompt-ids / --prompt.
    std::optional<safetensors_file> in;
    const tensor_info* ids_info = nullptr;
    std::vector<std::int64_t> ids;
    index_t batch = 1, L = 0;
    if (from_file) {
        in.emplace(a.input);
        ids_info = &in->at("input_ids");
        require(ids_info->shape.size() == 2, "input file '", a.input.string(),
                "': tensor 'input_ids' must be 2-D (batch, len), got ", ids_info->shape.size(), " dimensions");
        batch = ids_info->shape[0];
        L = ids_info->shape[1];
        require(batch > 0 && L > 0, "input file '", a.input.string(), "': tensor 'input_ids' is empty");
    } else {
        std::optional<text::tokenizer> tok;
        if (a.prompt_text) tok.emplace(checkpoint_tokenizer(a.model, "--prompt"));
        ids = prompt_ids(a.model, a.prompt, a.prompt_text, tok ? &*tok : nullptr);
        L = static_cast<index_t>(ids.size());
    }
    const bool sessions = a.last || a.states;  // one inference_session per sequence

    memory_plan plan = run_plan<T, Backend>(peeked, a, batch, L);
    require_fits<Backend>(plan);

    auto loaded = allocation_phase("the weights", weight_bytes(peeked, sizeof(T)), "--model",
                                   [&] { return load_checkpoint<T, Backend, mamba2_pattern>(a.model); });
    const auto& model = loaded.model;
    const index_t V = model.vocab_size();
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    if (from_file) ids = in->read<std::int64_t>(*ids_info);
    model.check_token_ids({ids.data(), {batch, L}});
    // The workspaces, known once the model is: the forward pass's, or a session's.
    const byte_count scratch = sessions ? byte_count(model.backbone().decode_workspace_bytes(L, L))
                                        : byte_count(model.workspace_bytes(batch, L));
    plan.add("the workspace", scratch, "--input's shape");
    require_fits<Backend>(plan);
    std::fprintf(stderr, "%s\n", model_summary<T, Backend>(a.model, model, schedule).c_str());
    std::size_t held_workspace = 0, held_kv = 0, held_state = 0;  // for --verbose

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
        held_workspace = ws.capacity();
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
            held_workspace = std::max(held_workspace, s.workspace_bytes());
            held_kv = std::max(held_kv, s.kv_cache_bytes());
            held_state = std::max(held_state, s.state_bytes() - s.kv_cache_bytes());
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
    if (a.verbose)
        print_memory_held("run", {{"weights", static_cast<std::size_t>(model.config().parameter_count()) * sizeof(T)},
                                  {"logits", (logits.size() + logits_host.size()) * sizeof(float)},
                                  {"KV cache (one sequence's session)", held_kv},
                                  {"state (one sequence's conv windows, SSM states)", held_state},
                                  {"workspace", held_workspace}});
    return 0;
}

struct generation {
    std::vector<std::int64_t> tokens;
    double prefill_seconds = 0, decode_seconds = 0;
    bool stopped_at_eos = false;  // the last token sampled was an end-of-sequence id (not in `tokens`)
    std::size_t weight_bytes = 0, kv_cache_bytes = 0, state_bytes = 0, workspace_bytes = 0;  // held at the end
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

struct no_token_sink {
    void operator()(std::int64_t) const {}
};

// Prefills the prompt (a.prompt: ids), then samples up to max_new_tokens tokens one decoding step
// at a time, handing each to `on_token` as soon as it is sampled; stops at an end-of-sequence id of
// the checkpoint (end_of_sequence_ids) unless a.ignore_eos. The summary line goes to stderr once
// the arguments are checked, before the prefill.
template <class T, class Backend, class OnToken = no_token_sink>
generation generate_tokens(const generate_args& a, OnToken&& on_token = {}) {
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
    const std::vector<std::int64_t> eos = a.ignore_eos ? std::vector<std::int64_t>{} : end_of_sequence_ids(a.model);

    auto loaded = allocation_phase("the weights", weight_bytes(peeked, sizeof(T)), "--model",
                                   [&] { return load_checkpoint<T, Backend, mamba2_pattern>(a.model); });
    const auto& model = loaded.model;
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    model.check_token_ids(tensor_view<const std::int64_t, 2>(a.prompt.data(), {1, prompt_len}));
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
    std::fprintf(stderr, "%s\n", model_summary<T, Backend>(a.model, model, schedule).c_str());

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    if (a.progress) std::fprintf(stderr, "prefill: %lld tokens ...", static_cast<long long>(prompt_len));
    auto logits = allocation_phase("the prefill's workspace", session_bytes, "--prompt-ids and " + total_by,
                                   [&] { return session->prefill(a.prompt); });
    const auto after_prefill = clock::now();
    generation out;
    out.prefill_seconds = std::chrono::duration<double>(after_prefill - start).count();
    if (a.progress)
        std::fprintf(stderr, "\rprefill: %lld tokens in %.3f s (%.1f tokens/s)\n", static_cast<long long>(prompt_len),
                     out.prefill_seconds, double(prompt_len) / std::max(out.prefill_seconds, 1e-9));
    out.tokens.reserve(static_cast<std::size_t>(std::min<index_t>(a.max_new_tokens, index_t(1) << 20)));
    auto last_report = after_prefill;
    bool reported = false;
    for (index_t i = 0; i < a.max_new_tokens; ++i) {
        const auto next = static_cast<std::int64_t>(pick.next(logits));
        if (std::find(eos.begin(), eos.end(), next) != eos.end()) {
            out.stopped_at_eos = true;
            break;
        }
        out.tokens.push_back(next);
        on_token(next);
        if (i + 1 < a.max_new_tokens) logits = session->step(next);
        const auto now = clock::now();
        if (a.progress && a.progress_tokens && now - last_report > std::chrono::milliseconds(500)) {
            const double seconds = std::chrono::duration<double>(now - after_prefill).count();
            std::fprintf(stderr, "\r%lld / %lld tokens, %.1f tokens/s", static_cast<long long>(i + 1),
                         static_cast<long long>(a.max_new_tokens), double(i + 1) / std::max(seconds, 1e-9));
            last_report = now;
            reported = true;
        }
    }
    if (reported) std::fprintf(stderr, "\n");
    out.decode_seconds = std::chrono::duration<double>(clock::now() - after_prefill).count();
    out.weight_bytes = static_cast<std::size_t>(model.config().parameter_count()) * sizeof(T);
    out.kv_cache_bytes = session->kv_cache_bytes();
    out.state_bytes = session->state_bytes() - out.kv_cache_bytes;
    out.workspace_bytes = session->workspace_bytes();
    return out;
}

// generate: the new tokens on stdout as they are made (text through the checkpoint's tokenizer
// with --prompt, unless --ids; ids with --prompt-ids), the model and the speed on stderr.
template <class T, class Backend>
int generate(const generate_args& a) {
    std::optional<text::tokenizer> tok;
    if (a.prompt_text) tok.emplace(checkpoint_tokenizer(a.model, "--prompt"));
    generate_args resolved = a;
    resolved.prompt = prompt_ids(a.model, a.prompt, a.prompt_text, tok ? &*tok : nullptr);
    token_printer printer(stdout, tok && !a.print_ids ? &*tok : nullptr);
    const auto g = generate_tokens<T, Backend>(resolved, [&](std::int64_t id) { printer.print(id); });
    printer.finish();
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f tokens/s); generated %zu tokens in %.3f s (%.1f tokens/s)%s\n",
                 resolved.prompt.size(), g.prefill_seconds, double(resolved.prompt.size()) / std::max(g.prefill_seconds, 1e-9),
                 g.tokens.size(), g.decode_seconds, double(g.tokens.size()) / std::max(g.decode_seconds, 1e-9),
                 g.stopped_at_eos ? "; stopped at the end-of-sequence token (--ignore-eos goes on)" : "");
    if (a.verbose)
        print_memory_held("generate", {{"weights", g.weight_bytes},
                                       {"KV cache", g.kv_cache_bytes},
                                       {"state (conv windows, SSM states)", g.state_bytes},
                                       {"workspace", g.workspace_bytes}});
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

// init's weights: the library's trained ranges (randomize), except the embeddings, which are
// U(-1, 1) / sqrt(d_model) like the LM head's rows instead of U(-1, 1). With the tied head the
// logits are the embeddings times the final hidden state, and an embedding row of norm ~sqrt(d/3)
// carried along the residual stream made the input token's own logit lead by ~12 at every step:
// greedy and sampled output alike repeated it (3,3,3,...). At this scale the layers' outputs
// dominate the residual stream, and the logits spread ~0.6 whatever d_model is.
template <class Model>
void init_weights(Model& model, std::uint64_t seed) {
    randomize(model, seed);
    const double scale = 1.0 / std::sqrt(static_cast<double>(model.d_model()));
    model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        if (name != "backbone.embeddings.weight") return;
        using value = std::remove_cvref_t<decltype(*buf.data())>;
        for (std::size_t i = 0; i < buf.size(); ++i) buf.data()[i] = static_cast<value>(double(buf.data()[i]) * scale);
    });
}

// The tokenizer init writes when --vocab >= 256: byte-level BPE with the 256 byte tokens as ids
// 0..255 and no merges, so that --prompt "text" and text output work on init's checkpoints.
inline std::string byte_tokenizer_json() {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[text::byte_level::spell(std::string(1, char(b)))] = b;
    const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    const nlohmann::json doc = {{"version", "1.0"},
                                {"truncation", nullptr},
                                {"padding", nullptr},
                                {"added_tokens", nlohmann::json::array()},
                                {"normalizer", nullptr},
                                {"pre_tokenizer", byte_level},
                                {"post_processor", byte_level},
                                {"decoder", byte_level},
                                {"model",
                                 {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                                  {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                                  {"ignore_merges", false}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    return doc.dump(2) + "\n";
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
    init_weights(model, a.seed);
    allocation_phase("the copy of the weights written to model.safetensors", all, "--vocab, --d-model and --layers",
                     [&] { save_checkpoint(model, schedule, a.out); });
    const bool with_tokenizer = a.vocab >= 256;
    if (with_tokenizer) {
        const std::string json = byte_tokenizer_json();
        write_file_atomically(a.out / "tokenizer.json", [&](file_sink& sink) { sink.write(json.data(), json.size()); });
    } else {
        std::error_code ec;  // a --force'd checkpoint's old tokenizer would not match the new vocabulary
        std::filesystem::remove(a.out / "tokenizer.json", ec);
    }
    std::string points;
    for (auto p : schedule.transpoints) points.append(points.empty() ? "" : ",").append(std::to_string(p));
    std::printf("wrote %s: %lld layers, d_model %lld, vocab %lld, TransPoints (%s) %s%s\n", a.out.string().c_str(),
                (long long)a.num_layers, (long long)a.d_model, (long long)a.vocab,
                std::string(schedule_kind_name(schedule.kind)).c_str(), points.c_str(),
                with_tokenizer ? ", a byte-level tokenizer.json" : "");
    return 0;
}

}  // namespace transmamba::cli
