#pragma once
// Scan policies: how the SSM recurrence S_t = a_t S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t + D x_t
// is evaluated over a span of tokens. Both take an initial state and return the final state, so a
// scan can start from the Memory Converter's state at the TransPoint.
namespace transmamba {

// Token by token: the reference, and the fastest for very short spans (decoding).
struct sequential_scan {};

// Mamba2's SSD: within chunks of mixer_config::chunk_size tokens, matrix products; between chunks,
// the state passed on. Same function as sequential_scan up to rounding.
struct chunked_ssd_scan {};

template <class S>
concept scan_policy = requires { typename S; };

}  // namespace transmamba
