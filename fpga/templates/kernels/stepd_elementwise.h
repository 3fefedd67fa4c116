// step-deploy FPGA kernels: elementwise ops with numpy broadcasting on shapes padded to rank 4
// (strides 0 on broadcast axes). Exact: C::out_t holds every possible result.
//   add:  Y = A + B  (spike-map residuals, SDT's membrane shortcut: exact integer adds)
//   mul:  Y = A * B  (on spikes an AND: SDT's Q AND LIF(sum K AND V), QKFormer's token mask AND K)
//   relu: Y = max(X, 0)  (A2OS2A's K: a real activation, the synapse's integers rectified; a comparator
//         and a mux per value)
#ifndef STEPD_ELEMENTWISE_H
#define STEPD_ELEMENTWISE_H

#include "stepd_common.h"

namespace stepd {

template <class C, bool MUL>
void elementwise(const typename C::a_t a[], const typename C::b_t b[], typename C::out_t y[]) {
    int idx = 0;
EW:
    for (int i0 = 0; i0 < C::s0; ++i0)
        for (int i1 = 0; i1 < C::s1; ++i1)
            for (int i2 = 0; i2 < C::s2; ++i2)
                for (int i3 = 0; i3 < C::s3; ++i3) {
#pragma HLS PIPELINE II = 1
                    const typename C::a_t av = a[i0 * C::a0 + i1 * C::a1 + i2 * C::a2 + i3 * C::a3];
                    const typename C::b_t bv = b[i0 * C::b0 + i1 * C::b1 + i2 * C::b2 + i3 * C::b3];
                    if (MUL) {
                        if (C::a_spike && C::b_spike) y[idx] = av & bv;
                        else y[idx] = av * bv;
                    } else {
                        y[idx] = typename C::out_t(av) + typename C::out_t(bv);
                    }
                    ++idx;
                }
}

template <class C>
void add(const typename C::a_t a[], const typename C::b_t b[], typename C::out_t y[]) {
    elementwise<C, false>(a, b, y);
}

template <class C>
void mul(const typename C::a_t a[], const typename C::b_t b[], typename C::out_t y[]) {
    elementwise<C, true>(a, b, y);
}

template <class C>
void relu(const typename C::in_t x[], typename C::out_t y[]) {
RELU:
    for (int i = 0; i < C::n; ++i) {
#pragma HLS UNROLL factor = C::P
#pragma HLS PIPELINE II = 1
        y[i] = x[i] > 0 ? typename C::out_t(x[i]) : typename C::out_t(0);
    }
}

}  // namespace stepd

#endif
