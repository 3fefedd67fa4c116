// step-deploy FPGA kernels: STEP's LIF (tau = 2, hard reset to 0, fire on >=) on a signed
// C::mem_bits membrane, elementwise:
//   a = A << input_shift;  H = sat_MEM((M + a) >> 1)   (decay 0: input, STEP's decay_input=True)
//                          H = sat_MEM((M >> 1) + a)   (decay 1: state)
//                          H = sat_MEM(M + a)          (decay 2: none, IF)
//   S = H >= threshold;  M = S ? 0 : H        (>> is arithmetic: a floor, AP_TRN)
// The membrane array m[] is owned by the caller (the top function) and cleared by lif_reset() at the
// start of every sample: there is no static state. C::P neurons per cycle.
#ifndef STEPD_LIF_H
#define STEPD_LIF_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void lif_reset(ap_int<C::mem_bits> m[]) {
LIF_RESET:
    for (int i = 0; i < C::n; ++i) {
#pragma HLS UNROLL factor = C::P
        m[i] = 0;
    }
}

template <class C>
void lif(const typename C::in_t a_in[], ap_int<C::mem_bits> m[], ap_uint<1> s[]) {
LIF:
    for (int i = 0; i < C::n; ++i) {
#pragma HLS UNROLL factor = C::P
#pragma HLS PIPELINE II = 1
        const ap_int<C::wide_bits> a = ap_int<C::wide_bits>(a_in[i]) << C::input_shift;
        const ap_int<C::wide_bits> mm = m[i];
        ap_int<C::wide_bits> h;
        if (C::decay == 0) h = (mm + a) >> 1;
        else if (C::decay == 1) h = (mm >> 1) + a;
        else h = mm + a;
        const ap_int<C::mem_bits> hs = sat<C::mem_bits>(h);
        const bool fire = hs >= ap_int<C::mem_bits>(C::threshold);
        s[i] = fire ? 1 : 0;
        m[i] = fire ? ap_int<C::mem_bits>(0) : hs;
    }
}

}  // namespace stepd

#endif
