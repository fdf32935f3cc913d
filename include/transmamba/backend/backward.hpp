#pragma once
// The backward kernels of the components, one template per forward kernel of backend/traits.hpp,
// specialised per policy and backend the same way (docs/training.md). Each sits in a header next to
// its forward: backend/cpu/attention_backward.hpp beside backend/cpu/attention.hpp.
#include "transmamba/backend/traits.hpp"

namespace transmamba {

// conv1d + SiLU, the time steps, the gated grouped RMSNorm.
template <class Projection, class Backend>
struct projection_backward_kernel;
// Causal attention over the prefix from its saved log-sum-exp (FlashAttention-2 style).
template <class Attention, class Backend>
struct attention_backward_kernel;
// The SSM over the suffix, from the state gradient after its last token to the one before its first.
template <class Scan, class Backend>
struct scan_backward_kernel;
// The Memory Converter: from the state gradient at P to the prefix and the initial state.
template <class Converter, class Backend>
struct converter_backward_kernel;

// The row-wise pieces of the blocks, backward: RMSNorm (the blocks' pre-norms and norm_f) and SwiGLU.
template <class Backend>
struct block_backward_kernel;
// The embedding gather's backward: a scatter-add of rows into the table, deterministic.
template <class Backend>
struct embedding_backward_kernel;
// Cross-entropy over the vocabulary per token, with its gradient with respect to the logits.
template <class Backend>
struct loss_kernel;

}  // namespace transmamba
