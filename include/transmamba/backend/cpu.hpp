#pragma once
// The CPU backend: every component's kernels on Eigen and OpenMP.
#include "transmamba/backend/cpu/attention.hpp"
#include "transmamba/backend/cpu/block.hpp"
#include "transmamba/backend/cpu/converter.hpp"
#include "transmamba/backend/cpu/decode_attention.hpp"
#include "transmamba/backend/cpu/decode_scan.hpp"
#include "transmamba/backend/cpu/projection.hpp"
#include "transmamba/backend/cpu/scan.hpp"
#include "transmamba/backend/cpu/traits.hpp"
