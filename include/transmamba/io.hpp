#pragma once
// transmamba I/O: safetensors files, Hugging Face Mamba2 configs and checkpoint directories
// (docs/checkpoints.md). Kept out of the umbrella header because it needs nlohmann-json: link the
// target transmamba::io (transmamba::transmamba + nlohmann_json::nlohmann_json). CUDA translation
// units add transmamba/io/cuda_elements.cuh for __nv_bfloat16 / __half weights.
#include "transmamba/transmamba.hpp"

#include "transmamba/io/atomic_file.hpp"
#include "transmamba/io/checkpoint.hpp"
#include "transmamba/io/dtype.hpp"
#include "transmamba/io/hf_config.hpp"
#include "transmamba/io/hf_config_model.hpp"
#include "transmamba/io/hf_hybrid_config.hpp"
#include "transmamba/io/hybrid_checkpoint.hpp"
#include "transmamba/io/mamba_ssm_config.hpp"
#include "transmamba/io/mapped_file.hpp"
#include "transmamba/io/printable.hpp"
#include "transmamba/io/regular_file.hpp"
#include "transmamba/io/safetensors.hpp"
