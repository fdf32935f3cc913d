#pragma once
// transmamba's training side on the CPU (docs/training.md): the backward kernels of every
// component and the forward / backward pass of a mixer. Include after (or instead of)
// transmamba/transmamba.hpp.
#include "transmamba/backend/cpu/attention_backward.hpp"
#include "transmamba/backend/cpu/converter_backward.hpp"
#include "transmamba/backend/cpu/projection_backward.hpp"
#include "transmamba/backend/cpu/scan_backward.hpp"
#include "transmamba/block/mixer_activations.hpp"
#include "transmamba/block/mixer_backward.hpp"
#include "transmamba/block/mixer_grads.hpp"
#include "transmamba/transmamba.hpp"
