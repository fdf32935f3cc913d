// transmamba: run, generate with, create and train TransMamba / Mamba2 checkpoints from the command line.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <transmamba/core/parallel.hpp>

#include <cstdio>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "batch_generate.hpp"
#include "commands.hpp"
#include "integer_flags.hpp"
#include "train_command.hpp"

#if defined(TRANSMAMBA_CLI_HAS_CUDA)
#include <dlfcn.h>

#include <cstring>

#include "cuda_module.hpp"
#endif

namespace {

using namespace transmamba;
using namespace transmamba::cli;

// Every integer flag: a string option whose value goes through parse_integer (integer_flags.hpp),
// never CLI11's own conversion (which reads hex and octal and saturates). `Target` is T or
// std::optional<T>.
template <class T, class Target>
CLI::Option* integer_option(CLI::App& cmd, const std::string& flag, Target& target, const std::string& help, T lo, T hi) {
    auto* option = cmd.add_option_function<std::string>(
        flag, [&target, flag, lo, hi](const std::string& text) { target = parse_integer(flag, text, lo, hi); }, help);
    option->type_name("INT");
    if constexpr (std::is_same_v<Target, T>) option->default_str(std::to_string(target));
    return option;
}

template <class T>
CLI::Option* integer_list_option(CLI::App& cmd, const std::string& flag, std::vector<T>& target, const std::string& help, T lo,
                                 T hi) {
    return cmd
        .add_option_function<std::string>(
            flag, [&target, flag, lo, hi](const std::string& text) { target = parse_integer_list(flag, text, lo, hi); }, help)
        ->type_name("INT,...");
}

constexpr index_t index_max = std::numeric_limits<index_t>::max();

struct device_choice {
    std::string device = "cpu";
    std::string dtype = "f32";
    int threads = 0;  // 0: the OpenMP default
};

void add_transpoint_options(CLI::App& cmd, transpoint_choice& p) {
    auto* one = integer_option<index_t>(cmd, "--transpoint", p.transpoint, "one TransPoint P for every layer", 0, index_max);
    auto* list = integer_list_option<index_t>(cmd, "--schedule", p.schedule,
                                              "one TransPoint per layer, in order, as many as the model has layers: P0,P1,...",
                                              0, index_max);
    auto* cyclic = integer_list_option<index_t>(cmd, "--cyclic-schedule", p.cyclic,
                                                "a table of TransPoints repeated over the layers (layer i takes entry i mod "
                                                "size): P0,P1,...",
                                                0, index_max);
    one->excludes(list)->excludes(cyclic);
    list->excludes(cyclic);
}

void add_device_options(CLI::App& cmd, device_choice& d, transpoint_choice& p) {
    cmd.add_option("--device", d.device, "cpu or cuda (the GPU module, loaded only then)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
    cmd.add_option("--dtype", d.dtype, "storage type of weights and activations: f32, bf16 or f16 (16-bit types on cuda)")
        ->check(CLI::IsMember({"f32", "bf16", "f16"}))
        ->capture_default_str();
    integer_option<int>(cmd, "--threads", d.threads, "CPU threads, 1 to 4096 (default: OpenMP's, all cores)", 1, 4096)
        ->default_str("all cores");
    add_transpoint_options(cmd, p);
}

storage storage_of(const std::string& dtype) {
    return dtype == "bf16" ? storage::bf16 : dtype == "f16" ? storage::f16 : storage::f32;
}

#if defined(TRANSMAMBA_CLI_HAS_CUDA)
// The GPU module, looked up next to the program (the build tree) and where `cmake --install` puts
// it relative to the program (TRANSMAMBA_CLI_MODULE_DIR, e.g. ../lib/transmamba); loaded once.
const cuda_commands& load_cuda_module() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
    const fs::path candidates[] = {exe_dir / TRANSMAMBA_CLI_MODULE_NAME,
                                   exe_dir / TRANSMAMBA_CLI_MODULE_DIR / TRANSMAMBA_CLI_MODULE_NAME};
    const fs::path* found = nullptr;
    for (const auto& c : candidates)
        if (fs::is_regular_file(c, ec)) {
            found = &c;
            break;
        }
    if (!found)
        fail("--device cuda: the GPU module ", TRANSMAMBA_CLI_MODULE_NAME, " is not installed (looked in '",
             candidates[0].parent_path().string(), "' and '", candidates[1].parent_path().lexically_normal().string(), "')");
    void* handle = ::dlopen(found->c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle)
        fail("--device cuda: cannot load the GPU module '", found->string(), "': ", ::dlerror(),
             " (no CUDA runtime: install the CUDA toolkit's libraries or use --device cpu)");
    const auto entry = reinterpret_cast<cuda_commands_entry>(::dlsym(handle, cuda_commands_symbol));
    require(entry != nullptr, "--device cuda: '", found->string(), "' is not the transmamba GPU module (no ", cuda_commands_symbol,
            ")");
    const cuda_commands* m = entry();
    require(std::strcmp(m->version, TRANSMAMBA_CLI_VERSION) == 0 && m->run_args_size == sizeof(run_args) &&
                m->generate_args_size == sizeof(generate_args),
            "--device cuda: the GPU module '", found->string(), "' is from another build (version ", m->version,
            "; this program is ", TRANSMAMBA_CLI_VERSION, "): reinstall both");
    const std::string problem = m->device_problem();
    require(problem.empty(), "--device cuda: ", problem);
    return *m;
}
#endif

template <class Cpu, class Gpu>
int dispatch(const device_choice& d, Cpu&& on_cpu, Gpu&& on_gpu) {
    if (d.threads > 0) set_max_threads(d.threads);
    if (d.device == "cuda") {
#if defined(TRANSMAMBA_CLI_HAS_CUDA)
        return on_gpu(load_cuda_module(), storage_of(d.dtype));
#else
        (void)on_gpu;
        fail("this transmamba was built without CUDA: --device cuda is not available");
#endif
    }
    require(d.dtype == "f32", "--dtype ", d.dtype, " needs --device cuda (the CPU backend computes in f32)");
    return on_cpu();
}

// --prompt-ids and --prompt, the same two flags in run and generate: ids, or text through the
// checkpoint's tokenizer.json.
void add_prompt_options(CLI::App& cmd, std::vector<std::int64_t>& ids, std::optional<std::string>& text) {
    auto* by_ids = integer_list_option<std::int64_t>(cmd, "--prompt-ids", ids, "prompt token ids: 1,2,3", 0,
                                                     std::numeric_limits<std::int64_t>::max());
    auto* by_text = cmd.add_option("--prompt", text, "prompt text, encoded by the checkpoint's tokenizer.json");
    by_ids->excludes(by_text);
}

// The version, and whether this build has the GPU module.
std::string version_text() {
    std::string text = std::string("transmamba ") + TRANSMAMBA_CLI_VERSION;
#if defined(TRANSMAMBA_CLI_HAS_CUDA)
    text += " (CPU; CUDA through " TRANSMAMBA_CLI_MODULE_NAME ")";
#else
    text += " (CPU; built without CUDA)";
#endif
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"transmamba: hybrid attention / SSM language models (TransMamba, Mamba2 checkpoints)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", version_text());

    run_args run_a;
    device_choice run_d;
    auto* run_cmd = app.add_subcommand("run", "logits of input_ids (an int64 safetensors tensor) into a safetensors file");
    run_cmd->add_option("--model", run_a.model, "checkpoint directory (config.json + model.safetensors)")->required();
    auto* run_input = run_cmd->add_option("--input", run_a.input, "safetensors file with 'input_ids' (int64, batch x len)");
    add_prompt_options(*run_cmd, run_a.prompt, run_a.prompt_text);
    run_input->excludes("--prompt-ids")->excludes("--prompt");
    run_cmd->add_option("--output", run_a.output,
                        "safetensors file to write 'logits' (float32, batch x len x vocab); never the input or a model file")
        ->required();
    run_cmd->add_flag("--last", run_a.last, "only each sequence's last-token logits: 'logits' is (batch, vocab)");
    run_cmd->add_flag("--states", run_a.states, "also write final_state.{layer} (batch, heads, headdim, d_state)");
    run_cmd->add_flag("--verbose", run_a.verbose, "print the memory held (weights, KV cache, state, workspace) at the end");
    add_device_options(*run_cmd, run_d, run_a.points);

    generate_args gen_a;
    device_choice gen_d;
    bool no_progress = false;
    auto* gen_cmd = app.add_subcommand("generate", "sample tokens after a prompt, one decoding step at a time");
    gen_cmd->add_option("--model", gen_a.model, "checkpoint directory")->required();
    add_prompt_options(*gen_cmd, gen_a.prompt, gen_a.prompt_text);
    std::filesystem::path prompts_file;  // generate --prompts: batch_generate.hpp
    gen_cmd->add_option("--prompts", prompts_file, "file of prompts, one per line as ids 1,2,3: decoded as one batch (CPU)")
        ->excludes("--prompt-ids")
        ->excludes("--prompt");
    gen_cmd->add_flag("--ids", gen_a.print_ids, "print the new tokens' ids, not their text (the default with --prompt-ids)");
    gen_cmd->add_flag("--ignore-eos", gen_a.ignore_eos,
                      "go on past the end-of-sequence token (eos_token_id of generation_config.json or config.json)");
    gen_cmd->add_flag("--verbose", gen_a.verbose, "print the memory held (weights, KV cache, state, workspace) at the end");
    integer_option<index_t>(*gen_cmd, "--max-new-tokens", gen_a.max_new_tokens, "tokens to generate", 0, index_max);
    gen_cmd->add_option("--temperature", gen_a.sampling.temperature, "0 = greedy")->capture_default_str();
    integer_option<index_t>(*gen_cmd, "--top-k", gen_a.sampling.top_k, "keep the k most likely tokens (0 = all)", 0, index_max);
    gen_cmd->add_option("--top-p", gen_a.sampling.top_p, "nucleus mass in (0, 1]")->capture_default_str();
    integer_option<std::uint64_t>(*gen_cmd, "--seed", gen_a.sampling.seed, "sampling seed", 0,
                                  std::numeric_limits<std::uint64_t>::max());
    gen_cmd->add_flag("--no-progress", no_progress, "no progress display on stderr (shown only when stderr is a terminal)");
    add_device_options(*gen_cmd, gen_d, gen_a.points);

    init_args init_a;
    auto* init_cmd = app.add_subcommand("init", "write a small random TransMamba checkpoint");
    init_cmd->add_option("--out", init_a.out, "directory to write")->required();
    init_cmd->add_flag("--force", init_a.force, "replace the checkpoint already in --out");
    integer_option<index_t>(*init_cmd, "--d-model", init_a.d_model, "hidden size", 1, index_max);
    integer_option<index_t>(*init_cmd, "--layers", init_a.num_layers, "number of layers", 1, index_max);
    integer_option<index_t>(*init_cmd, "--headdim", init_a.headdim, "SSM head dim", 1, index_max);
    integer_option<index_t>(*init_cmd, "--d-state", init_a.d_state, "state size", 1, index_max);
    integer_option<index_t>(*init_cmd, "--ngroups", init_a.ngroups, "groups sharing B and C", 1, index_max);
    integer_option<index_t>(*init_cmd, "--expand", init_a.expand, "d_inner / d_model", 1, index_max);
    integer_option<index_t>(*init_cmd, "--vocab", init_a.vocab, "vocabulary size", 1, index_max);
    integer_option<index_t>(*init_cmd, "--chunk-size", init_a.chunk, "SSD chunk length", 1, index_max);
    integer_option<std::uint64_t>(*init_cmd, "--seed", init_a.seed, "weights seed", 0, std::numeric_limits<std::uint64_t>::max());
    add_transpoint_options(*init_cmd, init_a.points);
    bool untied = false;
    init_cmd->add_flag("--untied", untied, "a separate LM head instead of tied embeddings");

    train_args train_a;
    bool train_quiet = false, train_untied = false;
    auto* train_cmd = app.add_subcommand(
        "train", "train a model on a generated task (MQAR, selective copying) or a text file's bytes, on the CPU");
    train_cmd->add_option("--out", train_a.out, "checkpoint directory: the training state and the model files run/generate load")
        ->required();
    auto* resume = train_cmd->add_flag("--resume", train_a.resume, "continue the run saved in --out (its model, task and settings)");
    train_cmd->add_flag("--force", train_a.force, "replace a checkpoint or run already in --out");
    std::vector<CLI::Option*> run_settings;
    run_settings.push_back(train_cmd->add_option("--config", train_a.config,
                                                 "the model from a config.json (as init writes it) instead of the size flags"));
    auto* model_size = run_settings.emplace_back(
        integer_option<index_t>(*train_cmd, "--d-model", train_a.model.d_model, "hidden size", 1, index_max));
    std::vector<CLI::Option*> size_flags{model_size};
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--layers", train_a.model.num_layers, "number of layers", 1, index_max));
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--headdim", train_a.model.headdim, "SSM head dim", 1, index_max));
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--d-state", train_a.model.d_state, "state size", 1, index_max));
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--ngroups", train_a.model.ngroups, "groups sharing B and C", 1, index_max));
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--expand", train_a.model.expand, "d_inner / d_model", 1, index_max));
    size_flags.push_back(integer_option<index_t>(*train_cmd, "--chunk-size", train_a.model.chunk, "SSD chunk length", 1, index_max));
    size_flags.push_back(train_cmd->add_flag("--untied", train_untied, "a separate LM head instead of tied embeddings"));
    for (auto* f : size_flags) {
        f->excludes(run_settings.front());
        if (f != model_size) run_settings.push_back(f);
    }
    add_transpoint_options(*train_cmd, train_a.model.points);
    run_settings.push_back(train_cmd->add_option("--task", train_a.task, "mqar, selective-copying or bytes (of --text)")
                               ->check(CLI::IsMember({"mqar", "selective-copying", "bytes"}))
                               ->capture_default_str());
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--seq-len", train_a.seq_len, "tokens per sequence", 1, index_max));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--vocab", train_a.vocab,
                                                   "the task's vocabulary (mqar: 64, selective-copying: 16; bytes: 256)", 3,
                                                   index_max)
                               ->default_str("the task's"));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--pairs", train_a.pairs, "mqar: key-value pairs per sequence", 1,
                                                   index_max));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--queries", train_a.queries,
                                                   "mqar: keys asked again (default: every pair)", 1, index_max));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--copy-tokens", train_a.copy_tokens,
                                                   "selective-copying: data tokens to copy", 1, index_max));
    run_settings.push_back(train_cmd->add_option("--text", train_a.text, "bytes: the text file to model"));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--steps", train_a.steps, "updates", 1, index_max));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--batch", train_a.batch, "sequences per update", 1, index_max));
    run_settings.push_back(integer_option<index_t>(*train_cmd, "--warmup", train_a.warmup,
                                                   "linear warm-up updates (default: steps / 10)", 0, index_max));
    run_settings.push_back(train_cmd->add_option("--lr", train_a.lr, "peak learning rate")->capture_default_str());
    run_settings.push_back(
        train_cmd->add_option("--final-lr", train_a.final_lr, "learning rate at the end of the cosine (default: lr / 10)"));
    run_settings.push_back(train_cmd->add_option("--weight-decay", train_a.weight_decay,
                                                 "AdamW's decoupled decay of the weight matrices")->capture_default_str());
    run_settings.push_back(train_cmd->add_option("--beta1", train_a.beta1, "AdamW beta1")->capture_default_str());
    run_settings.push_back(train_cmd->add_option("--beta2", train_a.beta2, "AdamW beta2")->capture_default_str());
    run_settings.push_back(
        train_cmd->add_option("--clip", train_a.clip, "clip gradients to this global norm (0: off)")->capture_default_str());
    run_settings.push_back(integer_option<std::uint64_t>(*train_cmd, "--seed", train_a.model.seed, "weights and data seed", 0,
                                                         std::numeric_limits<std::uint64_t>::max()));
    for (const char* flag : {"--transpoint", "--schedule", "--cyclic-schedule"}) run_settings.push_back(train_cmd->get_option(flag));
    for (auto* f : run_settings) resume->excludes(f);
    integer_option<index_t>(*train_cmd, "--log-every", train_a.log_every, "steps per progress line", 1, index_max);
    integer_option<index_t>(*train_cmd, "--save-every", train_a.save_every, "steps per checkpoint (0: only at the end)", 0,
                            index_max);
    integer_option<index_t>(*train_cmd, "--stop-at", train_a.stop_at, "save and stop after this step (--resume continues the run)",
                            1, index_max);
    train_cmd->add_option("--metrics", train_a.metrics, "JSON lines file: step, loss, accuracy, lr, grad_norm, tokens_per_s");
    train_cmd->add_flag("--quiet", train_quiet, "no progress lines");
    int train_threads = 0;
    integer_option<int>(*train_cmd, "--threads", train_threads, "CPU threads, 1 to 4096 (default: OpenMP's, all cores)", 1, 4096)
        ->default_str("all cores");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "transmamba: error: %s (see --help)\n", e.what());
        return e.get_exit_code() != 0 ? e.get_exit_code() : 2;
    } catch (const transmamba::error& e) {  // an integer flag's value (integer_flags.hpp)
        std::fprintf(stderr, "%s (see --help)\n", e.what());
        return 2;
    }

    try {
        if (*run_cmd) {
            require(!run_a.input.empty() || !run_a.prompt.empty() || run_a.prompt_text,
                    "run needs its ids: --input FILE, --prompt-ids 1,2,3 or --prompt \"text\"");
            return dispatch(
                run_d, [&] { return run<float, cpu>(run_a); },
                [&](const auto& gpu, storage s) { return gpu.run(run_a, s); });
        }
        if (*gen_cmd && !prompts_file.empty()) {
            require(gen_d.device == "cpu" && gen_d.dtype == "f32",
                    "generate --prompts decodes on the CPU in f32 only, for now (not --device ", gen_d.device, " --dtype ",
                    gen_d.dtype, ")");
            if (gen_d.threads > 0) set_max_threads(gen_d.threads);
            return generate_batch<float, cpu>(batch_args_of(gen_a, prompts_file));
        }
        if (*gen_cmd) {
            require(!gen_a.prompt.empty() || gen_a.prompt_text,
                    "generate needs a prompt: --prompt \"text\", --prompt-ids 1,2,3 or --prompts FILE");
            // Progress only for a person watching stderr; the per-token line not when the text
            // itself goes to that terminal (it would be torn up by the progress line).
            gen_a.progress = !no_progress && ::isatty(STDERR_FILENO) == 1;
            gen_a.progress_tokens = ::isatty(STDOUT_FILENO) != 1;
            return dispatch(
                gen_d, [&] { return generate<float, cpu>(gen_a); },
                [&](const auto& gpu, storage s) { return gpu.generate(gen_a, s); });
        }
        if (*train_cmd) {
            if (train_threads > 0) set_max_threads(train_threads);
            train_a.model.tie = !train_untied;
            train_a.progress = !train_quiet;
            return train(train_a);
        }
        init_a.tie = !untied;
        return init(init_a);
    } catch (const std::bad_alloc&) {
        // A buffer the memory estimate and the phases do not cover.
        std::fprintf(stderr, "transmamba: out of memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
