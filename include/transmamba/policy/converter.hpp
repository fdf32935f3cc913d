#pragma once
// Memory Converter policies: the attention prefix (keys B, values x, decays from dt and A) turned
// into the SSM state at the TransPoint P.
namespace transmamba {

// SPEC.md section 3 (paper eq. 8-9): S_{P-1} = sum_{j<P} (prod_{m=j+1}^{P-1} a_m) dt_j x_j B_j^T,
// computed tile by tile along the prefix as one chunk-state product, no recurrence. Exact: equals
// the state the SSM would have after tokens 0..P-1.
struct exact_converter {};

}  // namespace transmamba
