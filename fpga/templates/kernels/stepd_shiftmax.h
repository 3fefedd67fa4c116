// step-deploy FPGA kernels: bipolar self-attention's Shiftmax on integer scores (scale 1), per row of
// C::len values (rows at stride C::inner; C::outer x C::inner rows), F = C::frac_bits, L = C::log_len:
//   d_j = x_j - max_row x                (<= 0)
//   a_j = 2^(F + d_j) if d_j >= -F else 0  (one shift per term)
//   S   = sum_j a_j                      (adds; 2^F <= S <= len * 2^F)
//   E   = ceil(log2 S) = bit length of (S - 1)   (a leading-zero count, no logarithm)
//   Y_j = a_j << (F + L - E)             (F + L - E >= 0; the float Shiftmax times 2^(F + L), exactly)
// Shifts, adds, comparators and one leading-zero count per row: no multiplier, no divider.
#ifndef STEPD_SHIFTMAX_H
#define STEPD_SHIFTMAX_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void shiftmax(const typename C::in_t x[], typename C::out_t y[]) {
    typedef ap_int<C::delta_bits> delta_t;
    typedef ap_uint<C::sum_bits> sum_t;
SMAX_ROWS:
    for (int o = 0; o < C::outer; ++o)
        for (int i = 0; i < C::inner; ++i) {
#pragma HLS UNROLL factor = C::P
            const int base = o * C::len * C::inner + i;
            typename C::in_t mx = x[base];
        SMAX_MAX:
            for (int l = 1; l < C::len; ++l) {
#pragma HLS PIPELINE II = 1
                const typename C::in_t v = x[base + l * C::inner];
                if (v > mx) mx = v;
            }
            sum_t s = 0;
        SMAX_SUM:
            for (int l = 0; l < C::len; ++l) {
#pragma HLS PIPELINE II = 1
                const delta_t d = delta_t(x[base + l * C::inner]) - delta_t(mx);
                if (d >= -C::frac_bits) s += sum_t(1) << (C::frac_bits + d.to_int());
            }
            sum_t s1 = s - 1;
            const int e = C::sum_bits - s1.countLeadingZeros();  // ceil(log2 S); 0 when S = 1
        SMAX_OUT:
            for (int l = 0; l < C::len; ++l) {
#pragma HLS PIPELINE II = 1
                const delta_t d = delta_t(x[base + l * C::inner]) - delta_t(mx);
                typename C::out_t v = 0;
                if (d >= -C::frac_bits) v = typename C::out_t(1) << (C::frac_bits + d.to_int() + C::frac_bits + C::log_len - e);
                y[base + l * C::inner] = v;
            }
        }
}

}  // namespace stepd

#endif
