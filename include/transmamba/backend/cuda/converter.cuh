#pragma once
// The exact Memory Converter on the GPU (SPEC.md section 3, paper eq. 8-9), with the CPU kernel's
// interface (backend/cpu/converter.hpp):
//   S_{P-1} = (prod_{m<P} a_m) S_init + sum_{j<P} w_j x_j B_j^T,  w_j = exp(sum_{m=j+1}^{P-1} dt_m A) dt_j
// It is the chunked SSD's steps (1) and (2) over the prefix (ssd/dispatch.cuh): per chunk of chunk_size
// tokens, the suffix sums of dt A from the chunk's end, the weights exp(suffix) dt_j and the chunk's
// product X^T diag(w) B. A chunk_state block reduces a whole segment of consecutive chunks in
// registers (what it holds decays over each next chunk), so only one state per segment is written;
// state passing then joins the segments, each decayed by the ones after it, the initial state by
// all of them. No state is kept for the intermediate chunks.
#include "transmamba/backend/cuda/scan.cuh"
#include "transmamba/backend/cuda/ssd/dispatch.cuh"
#include "transmamba/policy/converter.hpp"

namespace transmamba {

template <>
struct converter_kernel<exact_converter, cuda> {
    using policy = kernels::cuda::ssd::default_policy;

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        return kernels::cuda::ssd::chunk_scratch_bytes<T, policy>(cfg, batch, seqlen, /*for_scan=*/false);
    }

    // state: in, the state before token 0 (zeros for a fresh sequence); out, the state after
    // token prefix - 1.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<compute_t<T>, 4> state, workspace_span span) {
        namespace ssd = kernels::cuda::ssd;
        constexpr const char* who = "exact_converter";
        if (prefix <= 0) return;
        const auto op = ssd::make_operands<T, policy>(cfg, in, 0, prefix, state, who);
        workspace_arena arena(align_span(span));
        const auto scratch = ssd::take_chunk_scratch<T, policy>(arena, cfg, in.batch(), in.seqlen(), /*for_scan=*/false);
        const int segments =
            ssd::launch_chunk_state<T, policy>(ctx, op, scratch, ssd::converter_chunks_per_block<policy>(op));
        ssd::launch_state_passing<T, policy>(ctx, scratch, state.data(), op.batch, op.nheads, segments,
                                             index_t(op.headdim) * op.dstate);
    }
};

}  // namespace transmamba
