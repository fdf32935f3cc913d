// transmamba: run, generate with and create TransMamba / Mamba2 checkpoints from the command line.
#include <CLI/CLI.hpp>

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

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"transmamba: hybrid attention / SSM language models (TransMamba, Mamba2 checkpoints)"};
    app.require_subcommand(1);

    run_args run_a;
    device_choice run_d;
    auto* run_cmd = app.add_subcommand("run", "logits of input_ids (an int64 safetensors tensor) into a safetensors file");
    run_cmd->add_option("--model", run_a.model, "checkpoint directory (config.json + model.safetensors)")->required();
    run_cmd->add_option("--input", run_a.input, "safetensors file with 'input_ids' (int64, batch x len)")->required();
    run_cmd->add_option("--output", run_a.output,
                        "safetensors file to write 'logits' (float32, batch x len x vocab); never the input or a model file")
        ->required();
    run_cmd->add_flag("--last", run_a.last, "only each sequence's last-token logits: 'logits' is (batch, vocab)");
    run_cmd->add_flag("--states", run_a.states, "also write final_state.{layer} (batch, heads, headdim, d_state)");
    add_device_options(*run_cmd, run_d, run_a.points);

    generate_args gen_a;
    device_choice gen_d;
    bool no_progress = false;
    auto* gen_cmd = app.add_subcommand("generate", "sample tokens after a prompt, one decoding step at a time");
    gen_cmd->add_option("--model", gen_a.model, "checkpoint directory")->required();
    auto* prompt_ids = integer_list_option<std::int64_t>(*gen_cmd, "--prompt-ids", gen_a.prompt, "prompt token ids: 1,2,3",
                                                         0, std::numeric_limits<std::int64_t>::max());
    std::filesystem::path prompts_file;  // generate --prompts: batch_generate.hpp
    gen_cmd->add_option("--prompts", prompts_file, "file of prompts, one per line as ids 1,2,3: decoded as one batch (CPU)")
        ->excludes(prompt_ids);
    integer_option<index_t>(*gen_cmd, "--max-new-tokens", gen_a.max_new_tokens, "tokens to generate", 0, index_max);
    gen_cmd->add_option("--temperature", gen_a.sampling.temperature, "0 = greedy")->capture_default_str();
    integer_option<index_t>(*gen_cmd, "--top-k", gen_a.sampling.top_k, "keep the k most likely tokens (0 = all)", 0, index_max);
    gen_cmd->add_option("--top-p", gen_a.sampling.top_p, "nucleus mass in (0, 1]")->capture_default_str();
    integer_option<std::uint64_t>(*gen_cmd, "--seed", gen_a.sampling.seed, "sampling seed", 0,
                                  std::numeric_limits<std::uint64_t>::max());
    gen_cmd->add_flag("--no-progress", no_progress, "no progress display on stderr");
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

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "transmamba: error: %s (see --help)\n", e.what());
        return e.get_exit_code() != 0 ? e.get_exit_code() : 2;
    } catch (const transmamba::error& e) {  // an integer flag's value (integer_flags.hpp)
        std::fprintf(stderr, "%s (see --help)\n", e.what());
        return 2;
    }

    try {
        if (*run_cmd)
            return dispatch(
                run_d, [&] { return run<float, cpu>(run_a); },
                [&](const auto& gpu, storage s) { return gpu.run(run_a, s); });
        if (*gen_cmd && !prompts_file.empty()) {
            require(gen_d.device == "cpu" && gen_d.dtype == "f32",
                    "generate --prompts decodes on the CPU in f32 only, for now (not --device ", gen_d.device, " --dtype ",
                    gen_d.dtype, ")");
            if (gen_d.threads > 0) set_max_threads(gen_d.threads);
            return generate_batch<float, cpu>(batch_args_of(gen_a, prompts_file));
        }
        if (*gen_cmd) {
            require(!gen_a.prompt.empty(), "generate needs --prompt-ids (or --prompts FILE)");
            gen_a.progress = !no_progress;
            return dispatch(
                gen_d, [&] { return generate<float, cpu>(gen_a); },
                [&](const auto& gpu, storage s) { return gpu.generate(gen_a, s); });
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
