#pragma once
// Projection policies: how a token's hidden state becomes z, x, B, C, dt and how the mixed output
// goes back to d_model.
namespace transmamba {

// Mamba2's layout (SPEC.md section 2): in_proj u -> [z, x, B, C, dt]; a causal depthwise conv1d
// + SiLU on xBC; dt = softplus(dt_raw + dt_bias) clamped to the time-step limit; the gated RMSNorm
// per group of d_inner/g channels; out_proj.
struct mamba2_projection {};

}  // namespace transmamba
