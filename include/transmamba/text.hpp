#pragma once
// transmamba text: a checkpoint's tokenizer.json (byte-level BPE, the GPT-NeoX tokenizer of the
// Mamba2 models) for encode / decode, and a streaming decoder for generation (docs/text.md).
// Needs nlohmann-json: link the target transmamba::io.
#include "transmamba/text/stream_decoder.hpp"
#include "transmamba/text/tokenizer.hpp"
