#pragma once
// The training tasks that need no download, one type: MQAR, selective copying, bytes of a text file.
// Batch k of a task's stream with seed s is a function of (task, s, k, batch size) alone
// (tasks/stream_rng.hpp).
#include <cstdint>
#include <string>
#include <variant>

#include "transmamba/tasks/byte_lm.hpp"
#include "transmamba/tasks/mqar.hpp"
#include "transmamba/tasks/selective_copying.hpp"
#include "transmamba/tasks/token_batch.hpp"

namespace transmamba {

using training_task = std::variant<mqar_task, selective_copying_task, byte_lm_task>;

inline std::string task_name(const training_task& task) {
    return std::visit([](const auto& t) { return std::string(t.name); }, task);
}
inline index_t task_vocab_size(const training_task& task) {
    return std::visit([](const auto& t) { return t.vocab_size(); }, task);
}
inline index_t task_length(const training_task& task) {
    return std::visit([](const auto& t) { return t.sequence_length(); }, task);
}
inline void validate_task(const training_task& task) {
    std::visit([](const auto& t) { t.validate(); }, task);
}

// Batch `index` of the stream with seed `seed`: `batch` sequences.
template <class Task>
token_batch make_batch(const Task& task, std::uint64_t seed, std::uint64_t index, index_t batch) {
    require(batch >= 1, "a batch needs at least one sequence, got ", batch);
    token_batch out(batch, task.sequence_length());
    stream_rng rng(seed, index);
    for (index_t b = 0; b < batch; ++b) task.fill(rng, out, b);
    return out;
}
inline token_batch make_batch(const training_task& task, std::uint64_t seed, std::uint64_t index, index_t batch) {
    return std::visit([&](const auto& t) { return make_batch(t, seed, index, batch); }, task);
}

}  // namespace transmamba
