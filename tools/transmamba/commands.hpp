#pragma once
// The work behind each subcommand of the `transmamba` program, written once for every backend and
// storage type; main.cpp parses the arguments and dispatches, cuda_commands.cu instantiates the GPU
// versions.
#include <transmamba/decode/sampling.hpp>
#include <transmamba/decode/session.hpp>
#include <transmamba/io.hpp>
#include <transmamba/model/language_model.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace transmamba::cli {

// Which TransPoints: --schedule (one per layer), --transpoint (one for all), else the checkpoint's
// own schedule, else 0 (pure Mamba2).
struct transpoint_choice {
    std::optional<index_t> transpoint;
    std::vector<index_t> schedule;

    transpoint_schedule resolve(const transpoint_schedule& checkpoint, index_t layers) const {
        transpoint_schedule s = checkpoint;
        if (!schedule.empty()) s = transpoint_schedule::per_layer(schedule);
        else if (transpoint) s = transpoint_schedule::fixed(*transpoint);
        s.validate(layers);
        return s;
    }
};

struct run_args {
    std::filesystem::path model, input, output;
    transpoint_choice points;
    bool states = false;
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
    std::uint64_t seed = 1;
    std::vector<index_t> schedule{0};  // cyclic; the default is a Mamba2 model
};

template <class T, class Backend>
using model_of = language_model<T, Backend, mamba2_pattern>;

// run: logits (float32, batch x len x vocab) for input_ids (int64, batch x len); with --states the
// SSM state after each sequence's last token, per layer, as final_state.{layer} (batch, h, p, n).
template <class T, class Backend>
int run(const run_args& a) {
    auto loaded = load_checkpoint<T, Backend, mamba2_pattern>(a.model);
    const auto& model = loaded.model;
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    const safetensors_file in(a.input);
    const tensor_info& ids_info = in.at("input_ids");
    require(ids_info.shape.size() == 2, "input file '", a.input.string(), "': tensor 'input_ids' must be 2-D (batch, len), got ",
            ids_info.shape.size(), " dimensions");
    const auto ids = in.read<std::int64_t>(ids_info);
    const index_t batch = ids_info.shape[0], L = ids_info.shape[1], V = model.vocab_size();
    require(batch > 0 && L > 0, "input file '", a.input.string(), "': tensor 'input_ids' is empty");

    using traits = backend_traits<Backend>;
    typename traits::template buffer<float> logits(static_cast<std::size_t>(batch * L * V));
    workspace<Backend> ws;
    model.forward({ids.data(), {batch, L}}, {logits.data(), {batch, L, V}}, schedule, ws);
    std::vector<float> host(logits.size());
    traits::copy_to_host(logits.data(), host.data(), host.size(), {});
    traits::synchronize({});

    safetensors_writer out;
    out.set_metadata("format", "pt");
    out.add("logits", {batch, L, V}, host);
    if (a.states) {
        const auto& c = model.config().backbone.mixer;
        const auto per_seq = static_cast<std::size_t>(c.nheads() * c.headdim * c.d_state);
        std::vector<std::vector<float>> states(static_cast<std::size_t>(model.num_transpoint_layers()),
                                               std::vector<float>(per_seq * static_cast<std::size_t>(batch)));
        for (index_t b = 0; b < batch; ++b) {
            // One session per sequence: its prefill leaves every layer's state after the last token.
            inference_session<model_of<T, Backend>> s(model, schedule, L);
            s.prefill(std::span(ids.data() + b * L, static_cast<std::size_t>(L)));
            for (index_t layer = 0; layer < model.num_transpoint_layers(); ++layer)
                traits::copy_to_host(s.layer_state(layer).data(), states[std::size_t(layer)].data() + b * per_seq, per_seq, {});
            traits::synchronize({});
        }
        for (std::size_t layer = 0; layer < states.size(); ++layer)
            out.add("final_state." + std::to_string(layer), {batch, c.nheads(), c.headdim, c.d_state}, states[layer]);
    }
    out.write(a.output);
    std::printf("wrote %s: logits (%lld, %lld, %lld)%s\n", a.output.string().c_str(), (long long)batch, (long long)L,
                (long long)V, a.states ? " and final_state.{layer}" : "");
    return 0;
}

struct generation {
    std::vector<std::int64_t> tokens;
    double prefill_seconds = 0, decode_seconds = 0;
};

// Prefills the prompt, then samples max_new_tokens tokens one decoding step at a time.
template <class T, class Backend>
generation generate_tokens(const generate_args& a) {
    require(!a.prompt.empty(), "--prompt-ids is empty");
    require(a.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
    auto loaded = load_checkpoint<T, Backend, mamba2_pattern>(a.model);
    const auto& model = loaded.model;
    const auto schedule = a.points.resolve(loaded.schedule, model.num_transpoint_layers());
    const auto total = static_cast<index_t>(a.prompt.size()) + a.max_new_tokens;
    inference_session<model_of<T, Backend>> session(model, schedule, total);
    sampler pick(a.sampling);

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    auto logits = session.prefill(a.prompt);
    const auto after_prefill = clock::now();
    generation out;
    auto last_report = after_prefill;
    bool reported = false;
    std::vector<float> row;
    for (index_t i = 0; i < a.max_new_tokens; ++i) {
        row.assign(logits.begin(), logits.end());
        const auto next = static_cast<std::int64_t>(pick.next(row));
        out.tokens.push_back(next);
        if (i + 1 < a.max_new_tokens) logits = session.step(next);
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
    for (auto id : g.tokens) ids += (ids.empty() ? "" : ",") + std::to_string(id);
    std::printf("%s\n", ids.c_str());
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f tokens/s); generated %zu tokens in %.3f s (%.1f tokens/s)\n",
                 a.prompt.size(), g.prefill_seconds, double(a.prompt.size()) / std::max(g.prefill_seconds, 1e-9),
                 g.tokens.size(), g.decode_seconds, double(g.tokens.size()) / std::max(g.decode_seconds, 1e-9));
    return 0;
}

// init: a small random TransMamba checkpoint, so that run and generate can be tried with nothing
// downloaded.
inline int init(const init_args& a) {
    language_model_config cfg;
    auto& m = cfg.backbone.mixer;
    m.d_model = a.d_model;
    m.expand = a.expand;
    m.headdim = a.headdim;
    m.d_state = a.d_state;
    m.ngroups = a.ngroups;
    m.chunk_size = a.chunk;
    m.d_conv = a.d_conv;
    cfg.backbone.num_layers = a.num_layers;
    cfg.vocab_size = a.vocab;
    cfg.tie_word_embeddings = a.tie;
    model_of<float, cpu> model(cfg);
    randomize(model, a.seed);
    save_checkpoint(model, transpoint_schedule::cyclic(a.schedule), a.out);
    std::printf("wrote %s: %lld layers, d_model %lld, vocab %lld, TransPoints (cyclic) %s\n", a.out.string().c_str(),
                (long long)a.num_layers, (long long)a.d_model, (long long)a.vocab, [&] {
                    std::string s;
                    for (auto p : a.schedule) s += (s.empty() ? "" : ",") + std::to_string(p);
                    return s;
                }().c_str());
    return 0;
}

// The GPU versions, defined in cuda_commands.cu when the program is built with CUDA.
enum class storage { f32, bf16, f16 };
int run_cuda(const run_args&, storage);
int generate_cuda(const generate_args&, storage);

}  // namespace transmamba::cli
