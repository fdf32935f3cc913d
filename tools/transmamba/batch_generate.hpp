#pragma once
// generate --prompts FILE: every prompt of a file decoded as one batch (decode/batch.hpp), one line
// of output ids per prompt, in file order, and the batch's speed on stderr. A prompt is a line of
// comma-separated token ids; blank lines are skipped. Sequence i samples with seed + i, so that its
// tokens are those `generate --prompt-ids` gives for that prompt with --seed seed + i.
#include <transmamba/decode/batch.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "integer_flags.hpp"

namespace transmamba::cli {

struct batch_generate_args {
    std::filesystem::path model, prompts;
    index_t max_new_tokens = 16;
    sampling_options sampling;
    transpoint_choice points;
    index_t page_tokens = 16;  // KV cache page size
};

// generate's flags with the prompts from a file.
inline batch_generate_args batch_args_of(const generate_args& g, const std::filesystem::path& prompts) {
    batch_generate_args a;
    a.model = g.model;
    a.prompts = prompts;
    a.max_new_tokens = g.max_new_tokens;
    a.sampling = g.sampling;
    a.points = g.points;
    return a;
}

// The prompts of `file`, one per non-blank line; a bad line is an error naming the file and line.
inline std::vector<std::vector<std::int64_t>> read_prompt_ids(const std::filesystem::path& file) {
    std::error_code ec;
    require(std::filesystem::is_regular_file(file, ec), "--prompts ", quoted(file.string()), ": not a regular file");
    std::ifstream in(file);
    require(in.good(), "--prompts ", quoted(file.string()), ": cannot be opened");
    std::vector<std::vector<std::int64_t>> prompts;
    std::string line;
    for (index_t number = 1; std::getline(in, line); ++number) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        prompts.push_back(parse_integer_list<std::int64_t>("--prompts " + file.filename().string() + " line " +
                                                               std::to_string(number),
                                                           line, 0, std::numeric_limits<std::int64_t>::max()));
    }
    require(!prompts.empty(), "--prompts ", quoted(file.string()), ": holds no prompt");
    return prompts;
}

struct batch_generation {
    std::vector<std::vector<std::int64_t>> tokens;  // per prompt, in file order
    index_t prompt_tokens = 0;
    double prefill_seconds = 0, decode_seconds = 0;
};

template <class T, class Backend>
batch_generation generate_batch_tokens(const batch_generate_args& a) {
    const auto prompts = read_prompt_ids(a.prompts);
    const auto peeked = checkpoint_config<T, Backend>(a.model);
    const auto file_schedule = peeked.transmamba ? peeked.transmamba->schedule : transpoint_schedule{};
    const auto schedule = a.points.resolve(file_schedule, peeked.num_hidden_layers);
    memory_plan plan("generate --prompts");
    plan.add("the weights", weight_bytes(peeked, sizeof(T)), "--model");
    byte_count caches;
    for (const auto& p : prompts) {
        const auto len = static_cast<index_t>(p.size());
        require(a.max_new_tokens <= std::numeric_limits<index_t>::max() - len, "--max-new-tokens ", a.max_new_tokens,
                ": the prompt's ", len, " tokens plus the new ones must fit in a 64-bit count");
        caches = caches + kv_cache_bytes<T>(peeked.model_config().backbone.mixer, schedule, peeked.num_hidden_layers,
                                            len + a.max_new_tokens);
    }
    plan.add("the KV caches of " + std::to_string(prompts.size()) + " sequences", caches,
             "--prompts, --max-new-tokens and the TransPoints");
    require_fits<Backend>(plan);

    auto loaded = load_checkpoint<T, Backend, mamba2_pattern>(a.model);
    const auto& model = loaded.model;
    inference_batch<model_of<T, Backend>> batch(model, a.points.resolve(loaded.schedule, model.num_transpoint_layers()),
                                                {a.page_tokens, 0});
    std::vector<sampler> picks;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        sampling_options s = a.sampling;
        s.seed += i;
        picks.emplace_back(s);
    }

    using clock = std::chrono::steady_clock;
    batch_generation out;
    out.tokens.resize(prompts.size());
    const auto start = clock::now();
    std::vector<index_t> ids;
    for (const auto& p : prompts) {
        ids.push_back(batch.join(p, static_cast<index_t>(p.size()) + a.max_new_tokens));
        out.prompt_tokens += static_cast<index_t>(p.size());
    }
    const auto after_prefill = clock::now();
    std::vector<float> row;
    std::vector<std::int64_t> next(prompts.size());
    const index_t V = model.vocab_size();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto l = batch.logits(ids[i]);
        row.assign(l.begin(), l.end());
        next[i] = static_cast<std::int64_t>(picks[i].next(row));
    }
    for (index_t k = 0; k < a.max_new_tokens; ++k) {
        for (std::size_t i = 0; i < prompts.size(); ++i) out.tokens[i].push_back(next[i]);
        if (k + 1 == a.max_new_tokens) break;
        const auto rows = batch.step(ids, next);
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            row.assign(rows.begin() + static_cast<index_t>(i) * V, rows.begin() + static_cast<index_t>(i + 1) * V);
            next[i] = static_cast<std::int64_t>(picks[i].next(row));
        }
    }
    out.prefill_seconds = std::chrono::duration<double>(after_prefill - start).count();
    out.decode_seconds = std::chrono::duration<double>(clock::now() - after_prefill).count();
    return out;
}

// Each prompt's ids on a line of stdout, the batch's speed on stderr.
template <class T, class Backend>
int generate_batch(const batch_generate_args& a) {
    const auto g = generate_batch_tokens<T, Backend>(a);
    std::size_t generated = 0;
    for (const auto& seq : g.tokens) {
        std::string ids;
        for (auto id : seq) ids.append(ids.empty() ? "" : ",").append(std::to_string(id));
        std::printf("%s\n", ids.c_str());
        generated += seq.size();
    }
    std::fflush(stdout);
    std::fprintf(stderr,
                 "batch of %zu sequences: prompts %lld tokens in %.3f s (%.1f tokens/s); generated %zu tokens in %.3f s "
                 "(%.1f tokens/s)\n",
                 g.tokens.size(), (long long)g.prompt_tokens, g.prefill_seconds,
                 double(g.prompt_tokens) / std::max(g.prefill_seconds, 1e-9), generated, g.decode_seconds,
                 double(generated) / std::max(g.decode_seconds, 1e-9));
    return 0;
}

}  // namespace transmamba::cli
