// step-deploy FPGA kernels: reductions and data movement.
//   sum:       Y[o][i] = sum_l X[o][l][i]   (SDT's column sum of K AND V, QKFormer's per-head
//              channel sum of Q, the token sum before the head; exact counts)
//   maxpool2d: Y[c][y][x] = max over the window of X (padding never wins); on spikes an OR
//   transpose: Y = X with its axes permuted (rank <= 4, a copy)
#ifndef STEPD_REDUCE_H
#define STEPD_REDUCE_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void sum(const typename C::in_t x[], typename C::out_t y[]) {
SUM_OUT:
    for (int o = 0; o < C::outer; ++o)
        for (int i = 0; i < C::inner; ++i) {
#pragma HLS UNROLL factor = C::P
            typename C::out_t acc = 0;
        SUM_LEN:
            for (int l = 0; l < C::len; ++l) {
#pragma HLS PIPELINE II = 1
                acc += x[(o * C::len + l) * C::inner + i];
            }
            y[o * C::inner + i] = acc;
        }
}

template <class C>
void maxpool2d(const typename C::in_t x[], typename C::out_t y[]) {
POOL:
    for (int c = 0; c < C::c; ++c)
        for (int oy = 0; oy < C::ho; ++oy)
            for (int ox = 0; ox < C::wo; ++ox) {
#pragma HLS PIPELINE II = 1
                bool any = false;
                typename C::in_t best = 0;
                for (int ky = 0; ky < C::kh; ++ky) {
                    const int iy = oy * C::sh + ky - C::ph;
                    if (iy < 0 || iy >= C::h) continue;
                    for (int kx = 0; kx < C::kw; ++kx) {
                        const int ix = ox * C::sw + kx - C::pw;
                        if (ix < 0 || ix >= C::w) continue;
                        const typename C::in_t v = x[(c * C::h + iy) * C::w + ix];
                        if (!any || v > best) best = v;
                        any = true;
                    }
                }
                y[(c * C::ho + oy) * C::wo + ox] = best;
            }
}

// output axes d0..d3 read input strides i0..i3 (the input stride of the permuted axis)
template <class C>
void transpose(const typename C::in_t x[], typename C::out_t y[]) {
    int idx = 0;
TRANSPOSE:
    for (int j0 = 0; j0 < C::d0; ++j0)
        for (int j1 = 0; j1 < C::d1; ++j1)
            for (int j2 = 0; j2 < C::d2; ++j2)
                for (int j3 = 0; j3 < C::d3; ++j3) {
#pragma HLS PIPELINE II = 1
                    y[idx++] = x[j0 * C::i0 + j1 * C::i1 + j2 * C::i2 + j3 * C::i3];
                }
}

}  // namespace stepd

#endif
