#pragma once
// transmamba's training side on the CPU (docs/training.md): the backward kernels of every
// component; the forward / backward pass of a mixer, a residual block, a stack and a language
// model with its cross-entropy loss. Include after (or instead of) transmamba/transmamba.hpp.
#include "transmamba/backend/cpu/attention_backward.hpp"
#include "transmamba/backend/cpu/block_backward.hpp"
#include "transmamba/backend/cpu/converter_backward.hpp"
#include "transmamba/backend/cpu/embedding_backward.hpp"
#include "transmamba/backend/cpu/loss.hpp"
#include "transmamba/backend/cpu/projection_backward.hpp"
#include "transmamba/backend/cpu/scan_backward.hpp"
#include "transmamba/block/block_backward.hpp"
#include "transmamba/block/block_grads.hpp"
#include "transmamba/block/mixer_activations.hpp"
#include "transmamba/block/mixer_backward.hpp"
#include "transmamba/block/mixer_grads.hpp"
#include "transmamba/block/stack_backward.hpp"
#include "transmamba/model/language_model_backward.hpp"
#include "transmamba/policy/activation_saving.hpp"
#include "transmamba/transmamba.hpp"
