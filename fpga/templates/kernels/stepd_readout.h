// step-deploy FPGA kernels: integer readout (the temporal mean without the 1/T, applied in software):
//   A[t] = sat_BITS(A[t-1] + X[t]),  Y[t] = A[t]; A is cleared by readout_reset() at every sample start.
#ifndef STEPD_READOUT_H
#define STEPD_READOUT_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void readout_reset(ap_int<C::bits> acc[]) {
    for (int i = 0; i < C::n; ++i) acc[i] = 0;
}

template <class C>
void readout(const typename C::in_t x[], ap_int<C::bits> acc[], typename C::out_t y[]) {
READOUT:
    for (int i = 0; i < C::n; ++i) {
#pragma HLS PIPELINE II = 1
        const ap_int<C::wide_bits> s = ap_int<C::wide_bits>(acc[i]) + ap_int<C::wide_bits>(x[i]);
        acc[i] = sat<C::bits>(s);
        y[i] = acc[i];
    }
}

}  // namespace stepd

#endif
