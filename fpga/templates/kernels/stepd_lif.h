// step-deploy FPGA kernels: STEP's LIF family (tau = 2 or IF) on a signed C::mem_bits membrane,
// elementwise:
//   a = A << input_shift;  H = sat_MEM((M + a) >> 1)   (decay 0: input, STEP's decay_input=True)
//                          H = sat_MEM((M >> 1) + a)   (decay 1: state)
//                          H = sat_MEM(M + a)          (decay 2: none, IF)
//   fire 0 (threshold):          S = H >= threshold                                   (0/1)
//   fire 1 (round, STEP's ILIF): S = clamp(rne(H / threshold), 0, max_level)          (0..D)
//   fire 2 (round_normalized, NILIF): S = 2H > round_d * threshold                     (0/1)
//   fire 3 (ternary): S = +1 if H >= threshold, -1 if H <= -threshold, else 0   (-1/0/+1, ap_int<2>)
//   hard reset: M = S ? 0 : H;   soft reset (soft_reset = 1): M = H - S * threshold
// (>> is arithmetic: a floor, AP_TRN). ILIF needs no divider: rne(H / θ) >= k exactly when
// 2H > (2k - 1)θ, or 2H == (2k - 1)θ and k is even (a tie goes to the even neighbour), so S is the
// largest k in 1..D that passes, found by D parallel comparators against constants (0 if none).
// C::cmp_bits holds 2H, every (2k - 1)θ, round_d·θ and H - S·θ exactly.
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

// The spike of the saturated membrane h under the config's fire rule.
template <class C>
inline typename C::out_t lif_fire(const ap_int<C::mem_bits> &h) {
    if (C::fire == 0) return h >= ap_int<C::mem_bits>(C::threshold) ? 1 : 0;
    if (C::fire == 3) {  // two comparators against +threshold and -threshold
        if (h >= ap_int<C::mem_bits>(C::threshold)) return 1;
        return h <= ap_int<C::mem_bits>(-C::threshold) ? -1 : 0;
    }
    const ap_int<C::cmp_bits> h2 = ap_int<C::cmp_bits>(h) << 1;  // 2H, exact
    const ap_int<C::cmp_bits> theta = C::threshold;
    if (C::fire == 2) return h2 > ap_int<C::cmp_bits>(theta * C::round_d) ? 1 : 0;
    typename C::out_t s = 0;
LIF_ROUND:
    for (int k = 1; k <= C::max_level; ++k) {
#pragma HLS UNROLL
        const ap_int<C::cmp_bits> edge = ap_int<C::cmp_bits>(theta * (2 * k - 1));  // (k - 1/2)θ, doubled
        if (h2 > edge || (h2 == edge && (k & 1) == 0)) s = k;
    }
    return s;
}

template <class C>
void lif(const typename C::in_t a_in[], ap_int<C::mem_bits> m[], typename C::out_t s[]) {
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
        const typename C::out_t sv = lif_fire<C>(hs);
        s[i] = sv;
        if (C::soft_reset) {
            const ap_int<C::cmp_bits> left = ap_int<C::cmp_bits>(hs) - ap_int<C::cmp_bits>(sv) * C::threshold;
            m[i] = ap_int<C::mem_bits>(left);  // in range: S > 0 needs H >= (S - 1/2)θ, so H - Sθ >= -θ/2
        } else {
            m[i] = sv != 0 ? ap_int<C::mem_bits>(0) : hs;
        }
    }
}

}  // namespace stepd

#endif
