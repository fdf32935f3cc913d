#pragma once
// transmamba: hybrid attention / SSM sequence layers after TransMamba (arXiv 2503.24067).
// The umbrella header: everything that runs on the CPU. The CUDA backend is included separately
// (transmamba/backend/cuda.cuh) from CUDA translation units.
#include "transmamba/backend/cpu.hpp"
#include "transmamba/backend/cpu/embedding.hpp"
#include "transmamba/block/block.hpp"
#include "transmamba/block/hybrid_block.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/block/stack.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/attention_spec.hpp"
#include "transmamba/policy/mixer_policies.hpp"
#include "transmamba/policy/transpoint.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"

namespace transmamba {
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
}  // namespace transmamba
