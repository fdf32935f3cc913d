#pragma once
// Backend tags and the traits that map a tag to its memory, its execution context and its
// kernels. A backend is a set of specialisations of the templates declared here, living in its
// own folder (backend/cpu/, backend/cuda/); the blocks are written once against these names.
namespace transmamba {

struct cpu {};   // Eigen on the host, OpenMP threads
struct cuda {};  // CUDA kernels on CUB, GEMMs on cuBLAS

// backend_traits<B> provides at least:
//   template <class T> using buffer   owning, movable array in B's memory space
//   using context                      what a call runs on (threads, a stream and handles)
//   copy_to_host / copy_from_host      moving data across the memory-space boundary
template <class Backend>
struct backend_traits;

// Whether a backend's kernels run packed variable-length batches (core/sequence_layout.hpp): its
// traits say `static constexpr bool packed_batches = true`. Others run dense batches only.
template <class Backend>
inline constexpr bool has_packed_batches = requires { requires backend_traits<Backend>::packed_batches; };

// Kernels of one component under one policy on one backend, e.g.
// scan_kernel<chunked_ssd_scan, cpu>. A new backend or a new policy adds specialisations in a file
// of its own; nothing else changes.
template <class Projection, class Backend>
struct projection_kernel;
template <class Attention, class Backend>
struct attention_kernel;          // prefill: all queries of the prefix
template <class Attention, class Backend>
struct decode_attention_kernel;   // decoding: one query against the KV cache
template <class Scan, class Backend>
struct scan_kernel;
template <class Backend>
struct decode_scan_kernel;        // decoding: one token's SSM state update, for a batch of sequences
template <class Converter, class Backend>
struct converter_kernel;

// The row-wise pieces of blocks (RMSNorm, residual add, SwiGLU) on one backend.
template <class Backend>
struct block_kernel;

}  // namespace transmamba
