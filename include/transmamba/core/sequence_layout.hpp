#pragma once
// Where the sequences of a forward pass lie in its token rows, and where each one's TransPoint falls
// (STYLE.md, "a sequence layout"). Two cases, one type, so that a kernel is written once:
//   - dense: `batch` sequences of `seqlen` tokens, views of shape (batch, seqlen, ...);
//   - packed: sequences of different lengths back to back in one (1, total, ...) view, sequence s at
//     rows [cu_seqlens[s], cu_seqlens[s+1]), as FlashAttention and mamba_ssm take them. No padding
//     is stored or computed; the conv window, the SSM state and the attention all start afresh at
//     each sequence's first row.
// Sequence s reads the view at (batch_of(s), first_row(s) + t) for its position t in
// [0, length(s)); the buffers a mixer owns are flat (rows(), ...), sequence s at flat_row(s) + t.
// The TransPoint counts from each sequence's own start: tokens t < prefix(s) = min(P_s, length(s))
// are attention, the rest SSM; P_s is one P for all or one per sequence.
#include <algorithm>
#include <span>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

class sequence_layout {
public:
    // `batch` sequences of `seqlen` tokens each.
    static sequence_layout dense(index_t batch, index_t seqlen) {
        require(batch > 0 && seqlen > 0, "dense sequence layout: batch = ", batch, " and seqlen = ", seqlen,
                " must be positive");
        sequence_layout s;
        s.count_ = batch;
        s.seqlen_ = seqlen;
        return s;
    }
    // Sequences at rows [cu_seqlens[s], cu_seqlens[s+1]): cu_seqlens starts at 0 and increases
    // strictly (every sequence holds at least one token). Host memory, borrowed: it must outlive
    // the layout.
    static sequence_layout packed(std::span<const index_t> cu_seqlens) {
        require(cu_seqlens.size() >= 2, "cu_seqlens must hold at least 2 offsets (one sequence), got ",
                cu_seqlens.size());
        require(cu_seqlens[0] == 0, "cu_seqlens must start at 0, got ", cu_seqlens[0]);
        for (std::size_t i = 1; i < cu_seqlens.size(); ++i)
            require(cu_seqlens[i] > cu_seqlens[i - 1], "cu_seqlens must increase strictly: sequence ", i - 1,
                    " spans [", cu_seqlens[i - 1], ", ", cu_seqlens[i], ") (every sequence holds a token)");
        sequence_layout s;
        s.count_ = static_cast<index_t>(cu_seqlens.size()) - 1;
        s.cu_ = cu_seqlens.data();
        return s;
    }

    // The same sequences with their first P tokens (P >= 0, counted from each start) on attention.
    sequence_layout split_at(index_t P) const {
        require(P >= 0, "TransPoint P = ", P, " is negative (P must be >= 0)");
        sequence_layout s = *this;
        s.transpoint_ = P;
        s.transpoints_ = nullptr;
        return s;
    }
    // One TransPoint per sequence (count() of them, each >= 0); borrowed like cu_seqlens.
    sequence_layout split_at(std::span<const index_t> per_sequence) const {
        require(static_cast<index_t>(per_sequence.size()) == count_, "per-sequence TransPoints: got ",
                per_sequence.size(), " for ", count_, " sequences");
        for (std::size_t i = 0; i < per_sequence.size(); ++i)
            require(per_sequence[i] >= 0, "TransPoint P = ", per_sequence[i], " of sequence ", i, " is negative");
        sequence_layout s = *this;
        s.transpoints_ = per_sequence.data();
        return s;
    }

    bool is_packed() const { return cu_ != nullptr; }
    index_t count() const { return count_; }
    index_t rows() const { return is_packed() ? cu_[count_] : count_ * seqlen_; }
    index_t length(index_t s) const { return is_packed() ? cu_[s + 1] - cu_[s] : seqlen_; }
    index_t batch_of(index_t s) const { return is_packed() ? 0 : s; }
    index_t first_row(index_t s) const { return is_packed() ? cu_[s] : 0; }
    index_t flat_row(index_t s) const { return is_packed() ? cu_[s] : s * seqlen_; }
    // The TransPoint as given (may exceed the sequence), and the attention prefix it means.
    index_t transpoint(index_t s) const { return transpoints_ ? transpoints_[s] : transpoint_; }
    index_t prefix(index_t s) const { return std::min(transpoint(s), length(s)); }
    bool uniform_transpoint() const { return transpoints_ == nullptr; }

    index_t max_length() const {
        if (!is_packed()) return seqlen_;
        index_t most = 0;
        for (index_t s = 0; s < count_; ++s) most = std::max(most, length(s));
        return most;
    }
    index_t max_prefix() const {
        index_t most = 0;
        for (index_t s = 0; s < count_; ++s) most = std::max(most, prefix(s));
        return most;
    }
    // Rows of attention over all sequences (what a per-row buffer of the prefixes needs).
    index_t prefix_rows() const {
        index_t n = 0;
        for (index_t s = 0; s < count_; ++s) n += prefix(s);
        return n;
    }

    // Flat row -> its sequence and its position there (a binary search when packed).
    struct place {
        index_t sequence, position;
    };
    place locate(index_t row) const {
        if (!is_packed()) return {row / seqlen_, row % seqlen_};
        const index_t s = static_cast<index_t>(std::upper_bound(cu_ + 1, cu_ + count_ + 1, row) - (cu_ + 1));
        return {s, row - cu_[s]};
    }

private:
    sequence_layout() = default;
    index_t count_ = 0;
    index_t seqlen_ = 0;              // dense
    const index_t* cu_ = nullptr;     // packed: count_ + 1 offsets
    index_t transpoint_ = 0;
    const index_t* transpoints_ = nullptr;  // per sequence, when given
};

}  // namespace transmamba
