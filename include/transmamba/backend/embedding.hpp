#pragma once
// embedding_kernel<B>: the token-embedding gather of a language model (model/language_model.hpp) on
// one backend. A kernel template like those of backend/traits.hpp, declared in its own header;
// specialised in backend/cpu/embedding.hpp and backend/cuda/embedding.cuh. A specialisation provides
//
//   template <class T>
//   static void gather(const context&, index_t rows, index_t width, const std::int64_t* ids,
//                      const T* table, T* out);
//
// out (rows, width) row r = table row ids[r]; ids live in the backend's memory and have been checked
// to lie in [0, rows of table) by the caller.
namespace transmamba {

template <class Backend>
struct embedding_kernel;

}  // namespace transmamba
