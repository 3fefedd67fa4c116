// step-deploy FPGA kernels: integer synapses (2-D convolution, 1-D convolution as H = 1, linear).
//   acc[o] = sat_ACC(sum W[o,...] * X[...] + bias[o]);  Y = sat_OUT(round_shift(acc[o], k[o]))
// On spike inputs (C::spike_in) the product is a gated add: no multiplier; on ternary spikes
// (C::ternary_in, -1/0/+1) a signed add: the weight is added or subtracted. On multi-bit inputs (the
// analog first layer's pixels, spike counts) one multiply per lane. The sum is exact (C::sum_t is
// wide enough for the largest possible sum) before the one saturation to acc_bits, as in the golden model.
// Parallelism: C::P output channels per cycle (UNROLL over o, weights partitioned cyclically by the top).
#ifndef STEPD_SYNAPSE_H
#define STEPD_SYNAPSE_H

#include "stepd_common.h"

namespace stepd {

template <class C>
inline typename C::out_t synapse_out(typename C::sum_t sum, int o, const int64_t bias[], const int8_t k[]) {
    if (C::has_bias) sum += typename C::sum_t(bias[o]);
    ap_int<C::acc_bits> acc = sat<C::acc_bits>(sum);
    ap_int<C::shift_bits> r = round_shift<C::shift_bits>(acc, k[o]);
    return typename C::out_t(sat<C::out_bits>(r));
}

// x: [CIN][H][W], w: [COUT][CIN/GROUPS][KH][KW], y: [COUT][HO][WO]
template <class C>
void conv2d(const typename C::in_t x[], const int8_t w[], const int64_t bias[], const int8_t k[],
            typename C::out_t y[]) {
    const int cin_g = C::cin / C::groups, cout_g = C::cout / C::groups;
CONV_POS:
    for (int oy = 0; oy < C::ho; ++oy) {
        for (int ox = 0; ox < C::wo; ++ox) {
        CONV_OUT:
            for (int o = 0; o < C::cout; ++o) {
#pragma HLS UNROLL factor = C::P
                const int g = o / cout_g;
                typename C::sum_t sum = 0;
            CONV_FANIN:
                for (int i = 0; i < cin_g; ++i) {
                    for (int ky = 0; ky < C::kh; ++ky) {
                        const int iy = oy * C::sh + ky * C::dh - C::ph;
                        if (iy < 0 || iy >= C::h) continue;
                        for (int kx = 0; kx < C::kw; ++kx) {
#pragma HLS PIPELINE II = 1
                            const int ix = ox * C::sw + kx * C::dw - C::pw;
                            if (ix < 0 || ix >= C::w) continue;
                            const typename C::in_t v = x[((g * cin_g + i) * C::h + iy) * C::w + ix];
                            const ap_int<C::weight_bits> wv = w[((o * cin_g + i) * C::kh + ky) * C::kw + kx];
                            if (C::spike_in) {
                                if (v != 0) sum += wv;  // gated accumulate, no multiplier
                            } else if (C::ternary_in) {
                                if (v > 0) sum += wv;  // signed accumulate, no multiplier
                                else if (v < 0) sum -= wv;
                            } else {
                                sum += wv * v;
                            }
                        }
                    }
                }
                y[(o * C::ho + oy) * C::wo + ox] = synapse_out<C>(sum, o, bias, k);
            }
        }
    }
}

// x: [N][IN], w: [OUT][IN], y: [N][OUT] (N tokens; N = 1 for a vector)
template <class C>
void linear(const typename C::in_t x[], const int8_t w[], const int64_t bias[], const int8_t k[],
            typename C::out_t y[]) {
LIN_TOKENS:
    for (int n = 0; n < C::tokens; ++n) {
    LIN_OUT:
        for (int o = 0; o < C::cout; ++o) {
#pragma HLS UNROLL factor = C::P
            typename C::sum_t sum = 0;
        LIN_FANIN:
            for (int i = 0; i < C::cin; ++i) {
#pragma HLS PIPELINE II = 1
                const typename C::in_t v = x[n * C::cin + i];
                const ap_int<C::weight_bits> wv = w[o * C::cin + i];
                if (C::spike_in) {
                    if (v != 0) sum += wv;
                } else if (C::ternary_in) {
                    if (v > 0) sum += wv;
                    else if (v < 0) sum -= wv;
                } else {
                    sum += wv * v;
                }
            }
            y[n * C::cout + o] = synapse_out<C>(sum, o, bias, k);
        }
    }
}

}  // namespace stepd

#endif
