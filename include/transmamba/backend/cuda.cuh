#pragma once
// The CUDA backend: every component's kernels on CUB, GEMMs on cuBLAS. Include from CUDA
// translation units (.cu) and link transmamba::cuda.
#include "transmamba/backend/cuda/attention.cuh"
#include "transmamba/backend/cuda/block.cuh"
#include "transmamba/backend/cuda/converter.cuh"
#include "transmamba/backend/cuda/decode_attention.cuh"
#include "transmamba/backend/cuda/decode_scan.cuh"
#include "transmamba/backend/cuda/embedding.cuh"
#include "transmamba/backend/cuda/projection.cuh"
#include "transmamba/backend/cuda/scan.cuh"
#include "transmamba/backend/cuda/traits.cuh"
