#pragma once
// Bulk tensor copies (TMA) of the sm90 kernels: tensor maps encoded on the host through the driver's
// cuTensorMapEncodeTiled, reached with cudaGetDriverEntryPointByVersion so that nothing links
// libcuda directly, and the tile loads through CCCL's cuda::ptx.
//
// Every map here is of 16-bit elements with a 128-byte swizzle and a box of 64 elements (128 bytes)
// along the contiguous dimension: the layout wgmma reads (wgmma.cuh, smem_descriptor). Elements
// outside the map's extents are read as zero, which the kernels rely on at tile edges.
#include <cuda.h>
#include <cuda/ptx>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cuda::sm90 {

inline constexpr int swizzle_bytes = 128;
inline constexpr int box_elements = swizzle_bytes / 2;  // of a 16-bit type

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found),
                   "cudaGetDriverEntryPointByVersion (cuTensorMapEncodeTiled)");
        require(found == cudaDriverEntryPointSuccess && fn != nullptr,
                "the CUDA driver has no cuTensorMapEncodeTiled (the sm90 kernels need a CUDA 12 driver or newer)");
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    return encode;
}

template <class T>
constexpr CUtensorMapDataType element_type() {
    static_assert(sizeof(T) == 2, "the sm90 tensor maps are of 16-bit elements");
    return std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
}

// A map over a strided tensor of 16-bit elements T at `base`: extents[0] contiguous elements, then
// extents[i] steps of strides[i - 1] elements (i >= 1); boxes of box_elements x box_rows x 1 ...
template <class T, int Rank>
CUtensorMap tiled_map(const void* base, const index_t (&extents)[Rank], const index_t (&strides)[Rank - 1],
                      int box_rows, const char* what) {
    static_assert(Rank >= 2 && Rank <= 5);
    cuuint64_t dims[Rank], bytes[Rank - 1];
    cuuint32_t box[Rank], unit[Rank];
    for (int i = 0; i < Rank; ++i) {
        require(extents[i] > 0 && extents[i] <= (index_t(1) << 32), what, ": extent ", extents[i], " out of range");
        dims[i] = static_cast<cuuint64_t>(extents[i]);
        box[i] = i == 0 ? box_elements : i == 1 ? static_cast<cuuint32_t>(box_rows) : 1u;
        unit[i] = 1;
    }
    for (int i = 0; i < Rank - 1; ++i) {
        bytes[i] = static_cast<cuuint64_t>(strides[i] * 2);
        require(bytes[i] % 16 == 0 && bytes[i] < (cuuint64_t(1) << 40), what, ": stride of ", strides[i],
                " elements is not a multiple of 16 bytes");
    }
    require(reinterpret_cast<std::uintptr_t>(base) % 16 == 0, what, ": base address not 16-byte aligned");
    CUtensorMap map;
    const CUresult r = tensor_map_encoder()(&map, element_type<T>(), Rank, const_cast<void*>(base), dims,
                                            bytes, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    require(r == CUDA_SUCCESS, what, ": cuTensorMapEncodeTiled failed with CUresult ", static_cast<int>(r));
    return map;
}

// One box of `map` at element coordinates `coords` into shared memory at `dst` (1024-byte aligned),
// completing on `bar` (whose expected bytes the caller has raised by the box's size).
__device__ inline void load_box(void* dst, const CUtensorMap& map, const std::int32_t (&coords)[3], std::uint64_t* bar) {
    ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_shared, ::cuda::ptx::space_global, dst, &map, coords, bar);
}
__device__ inline void load_box(void* dst, const CUtensorMap& map, const std::int32_t (&coords)[4], std::uint64_t* bar) {
    ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_shared, ::cuda::ptx::space_global, dst, &map, coords, bar);
}

}  // namespace transmamba::kernels::cuda::sm90
