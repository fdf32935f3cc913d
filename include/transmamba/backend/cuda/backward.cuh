#pragma once
// The CUDA backend's backward kernels (docs/training.md): include from CUDA translation units
// beside backend/cuda.cuh.
#include "transmamba/backend/cuda/block_backward.cuh"
#include "transmamba/backend/cuda/embedding_backward.cuh"
#include "transmamba/backend/cuda/loss.cuh"
#include "transmamba/backend/cuda/projection_backward.cuh"
