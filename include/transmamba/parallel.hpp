#pragma once
// Context parallelism on the CPU backend (docs/context_parallel.md): one mixer's sequence split
// across ranks, simulated in one process. The NCCL communicator is in
// transmamba/parallel/nccl_communicator.cuh, for CUDA translation units.
#include "transmamba/backend/cpu.hpp"
#include "transmamba/parallel/communicator.hpp"
#include "transmamba/parallel/context_parallel_mixer.hpp"
#include "transmamba/parallel/cpu/state_scan.hpp"
#include "transmamba/parallel/query_assignment.hpp"
#include "transmamba/parallel/simulated_ranks.hpp"
#include "transmamba/parallel/state_scan.hpp"
#include "transmamba/parallel/token_slices.hpp"
