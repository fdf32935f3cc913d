#pragma once
// The compile-time choice of every component of a TransMamba mixer, bundled in one type so that an
// experiment is declared in one line: mixer<float, cpu, paper_policies::with_scan<sequential_scan>>.
#include "transmamba/policy/attention.hpp"
#include "transmamba/policy/converter.hpp"
#include "transmamba/policy/input_check.hpp"
#include "transmamba/policy/projection.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

template <attention_policy Attention = paper_attention, class Scan = chunked_ssd_scan,
          class Converter = exact_converter, class Projection = mamba2_projection,
          input_check_policy InputCheck = checked_inputs>
struct mixer_policies {
    using attention = Attention;
    using scan = Scan;
    using converter = Converter;
    using projection = Projection;
    using input_check = InputCheck;

    template <attention_policy A>
    using with_attention = mixer_policies<A, Scan, Converter, Projection, InputCheck>;
    template <class S>
    using with_scan = mixer_policies<Attention, S, Converter, Projection, InputCheck>;
    template <class C>
    using with_converter = mixer_policies<Attention, Scan, C, Projection, InputCheck>;
    template <class P>
    using with_projection = mixer_policies<Attention, Scan, Converter, P, InputCheck>;
    template <input_check_policy I>
    using with_input_check = mixer_policies<Attention, Scan, Converter, Projection, I>;
};

using paper_policies = mixer_policies<>;

}  // namespace transmamba
