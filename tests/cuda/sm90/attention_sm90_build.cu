// Builds the sm90 prefill attention kernels for sm_90a in every CUDA build, whatever
// CMAKE_CUDA_ARCHITECTURES names: CI has no GPU and builds for 90, so without this object the
// Hopper kernels (instantiated only in 90a builds) would never be compiled there. Every (type,
// d_state, value width) the dispatch can launch; nothing runs.
#include <transmamba/backend/cuda/sm90/attention_sm90.cuh>

namespace transmamba::kernels::cuda::sm90 {

// Taking each kernel's address instantiates it.
extern const void* const attention_sm90_kernels[] = {
    reinterpret_cast<const void*>(&attention_sm90_kernel<__nv_bfloat16, 64, cuda_attention_sm90_tuning<64>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__nv_bfloat16, 64, cuda_attention_sm90_tuning<128>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__nv_bfloat16, 128, cuda_attention_sm90_tuning<64>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__nv_bfloat16, 128, cuda_attention_sm90_tuning<128>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__half, 64, cuda_attention_sm90_tuning<64>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__half, 64, cuda_attention_sm90_tuning<128>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__half, 128, cuda_attention_sm90_tuning<64>>),
    reinterpret_cast<const void*>(&attention_sm90_kernel<__half, 128, cuda_attention_sm90_tuning<128>>),
};

}  // namespace transmamba::kernels::cuda::sm90
