// transmamba: run, generate with and create TransMamba / Mamba2 checkpoints from the command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "commands.hpp"

namespace {

using namespace transmamba;
using namespace transmamba::cli;

struct device_choice {
    std::string device = "cpu";
    std::string dtype = "f32";
};

void add_device_options(CLI::App& cmd, device_choice& d, transpoint_choice& p) {
    cmd.add_option("--device", d.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
    cmd.add_option("--dtype", d.dtype, "storage type of weights and activations: f32, bf16 or f16 (16-bit types on cuda)")
        ->check(CLI::IsMember({"f32", "bf16", "f16"}))
        ->capture_default_str();
    auto* one = cmd.add_option("--transpoint", p.transpoint, "one TransPoint P for every layer");
    auto* list = cmd.add_option("--schedule", p.schedule, "one TransPoint per layer, in order: P0,P1,...")->delimiter(',');
    one->excludes(list);
}

storage storage_of(const std::string& dtype) {
    return dtype == "bf16" ? storage::bf16 : dtype == "f16" ? storage::f16 : storage::f32;
}

template <class Cpu, class Gpu>
int dispatch(const device_choice& d, Cpu&& on_cpu, Gpu&& on_gpu) {
    if (d.device == "cuda") {
#if defined(TRANSMAMBA_CLI_HAS_CUDA)
        return on_gpu(storage_of(d.dtype));
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
    run_cmd->add_option("--output", run_a.output, "safetensors file to write 'logits' (float32, batch x len x vocab)")
        ->required();
    run_cmd->add_flag("--states", run_a.states, "also write final_state.{layer} (batch, heads, headdim, d_state)");
    add_device_options(*run_cmd, run_d, run_a.points);

    generate_args gen_a;
    device_choice gen_d;
    bool no_progress = false;
    auto* gen_cmd = app.add_subcommand("generate", "sample tokens after a prompt, one decoding step at a time");
    gen_cmd->add_option("--model", gen_a.model, "checkpoint directory")->required();
    gen_cmd->add_option("--prompt-ids", gen_a.prompt, "prompt token ids: 1,2,3")->delimiter(',')->required();
    gen_cmd->add_option("--max-new-tokens", gen_a.max_new_tokens, "tokens to generate")->capture_default_str();
    gen_cmd->add_option("--temperature", gen_a.sampling.temperature, "0 = greedy")->capture_default_str();
    gen_cmd->add_option("--top-k", gen_a.sampling.top_k, "keep the k most likely tokens (0 = all)")->capture_default_str();
    gen_cmd->add_option("--top-p", gen_a.sampling.top_p, "nucleus mass in (0, 1]")->capture_default_str();
    gen_cmd->add_option("--seed", gen_a.sampling.seed, "sampling seed")->capture_default_str();
    gen_cmd->add_flag("--no-progress", no_progress, "no progress display on stderr");
    add_device_options(*gen_cmd, gen_d, gen_a.points);

    init_args init_a;
    auto* init_cmd = app.add_subcommand("init", "write a small random TransMamba checkpoint");
    init_cmd->add_option("--out", init_a.out, "directory to write")->required();
    init_cmd->add_option("--d-model", init_a.d_model, "hidden size")->capture_default_str();
    init_cmd->add_option("--layers", init_a.num_layers, "number of layers")->capture_default_str();
    init_cmd->add_option("--headdim", init_a.headdim, "SSM head dim")->capture_default_str();
    init_cmd->add_option("--d-state", init_a.d_state, "state size")->capture_default_str();
    init_cmd->add_option("--ngroups", init_a.ngroups, "groups sharing B and C")->capture_default_str();
    init_cmd->add_option("--expand", init_a.expand, "d_inner / d_model")->capture_default_str();
    init_cmd->add_option("--vocab", init_a.vocab, "vocabulary size")->capture_default_str();
    init_cmd->add_option("--chunk-size", init_a.chunk, "SSD chunk length")->capture_default_str();
    init_cmd->add_option("--seed", init_a.seed, "weights seed")->capture_default_str();
    init_cmd->add_option("--schedule", init_a.schedule, "TransPoints, cyclic over layers: P0,P1,...")->delimiter(',');
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
    }

    try {
        if (*run_cmd)
            return dispatch(run_d, [&] { return run<float, cpu>(run_a); }, [&](storage s) { return run_cuda(run_a, s); });
        if (*gen_cmd) {
            gen_a.progress = !no_progress;
            return dispatch(gen_d, [&] { return generate<float, cpu>(gen_a); },
                            [&](storage s) { return generate_cuda(gen_a, s); });
        }
        init_a.tie = !untied;
        return init(init_a);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
