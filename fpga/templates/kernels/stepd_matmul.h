// step-deploy FPGA kernels: integer attention products, batched over heads:
//   Y[b] = op(A[b]) @ op(B[b]),  op = optional transpose of the last two axes.
// Spikformer's Q @ K^T on binary spikes is AND + popcount; (Q K^T) @ V is a count gated by the V
// spike (no multiplier); a ternary operand (-1/0/+1: A2OS2A's V, BSA's Q and K) adds or subtracts the
// other (two ternaries: +1 where they agree, -1 where they differ); counts times counts multiply.
// Exact: C::out_t holds the largest sum.
#ifndef STEPD_MATMUL_H
#define STEPD_MATMUL_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void matmul(const typename C::a_t a[], const typename C::b_t b[], typename C::out_t y[]) {
MM_BATCH:
    for (int h = 0; h < C::batch; ++h) {
        for (int i = 0; i < C::m; ++i) {
        MM_OUT:
            for (int j = 0; j < C::n; ++j) {
#pragma HLS UNROLL factor = C::P
                typename C::out_t acc = 0;
            MM_DOT:
                for (int kk = 0; kk < C::k; ++kk) {
#pragma HLS PIPELINE II = 1
                    const typename C::a_t av = C::ta ? a[(h * C::k + kk) * C::m + i] : a[(h * C::m + i) * C::k + kk];
                    const typename C::b_t bv = C::tb ? b[(h * C::n + j) * C::k + kk] : b[(h * C::k + kk) * C::n + j];
                    if (C::a_spike && C::b_spike) {
                        acc += (av & bv);  // AND + popcount
                    } else if (C::a_ternary && C::b_ternary) {
                        if (av != 0 && bv != 0) acc += (av == bv) ? 1 : -1;  // sign agreement
                    } else if (C::b_ternary) {
                        if (bv > 0) acc += av;  // signed accumulate
                        else if (bv < 0) acc -= av;
                    } else if (C::a_ternary) {
                        if (av > 0) acc += bv;
                        else if (av < 0) acc -= bv;
                    } else if (C::b_spike) {
                        if (bv != 0) acc += av;  // gated accumulate
                    } else if (C::a_spike) {
                        if (av != 0) acc += bv;
                    } else {
                        acc += av * bv;
                    }
                }
                y[(h * C::m + i) * C::n + j] = acc;
            }
        }
    }
}

}  // namespace stepd

#endif
