// step-deploy FPGA kernels: shared integer helpers. Generated projects include this file unchanged.
// Every narrowing is explicit: sat<B>() clamps to a signed B-bit range (AP_SAT), round_shift()
// rounds half up ((acc + 2^(k-1)) >> k, AP_RND) and >> on ap_int is an arithmetic shift (a floor).
#ifndef STEPD_COMMON_H
#define STEPD_COMMON_H

#include <stdint.h>
#include "stepd_ap_int.h"

namespace stepd {

// Clamp v to [-2^(B-1), 2^(B-1) - 1] (AP_SAT); v must be wider than or as wide as B.
template <int B, class T>
inline ap_int<B> sat(const T &v) {
    const T hi = T((ap_int<B + 1>(1) << (B - 1)) - 1);
    const T lo = T(-(ap_int<B + 1>(1) << (B - 1)));
    if (v > hi) return ap_int<B>(hi);
    if (v < lo) return ap_int<B>(lo);
    return ap_int<B>(v);
}

// Per-channel requantization: (acc + 2^(k-1)) >> k for k > 0 (round half up, AP_RND; >> floors),
// acc << -k for k <= 0 (exact). W is wide enough for the left shift and the rounding carry.
template <int W, class T>
inline ap_int<W> round_shift(const T &acc, int k) {
    ap_int<W> a = acc;
    if (k > 0) {
        ap_int<W> half = ap_int<W>(1) << (k - 1);
        return (a + half) >> k;
    }
    return a << (-k);
}

}  // namespace stepd

// Per-layer traces for C simulation parity (never synthesized): when stepd_trace_buf is set, every
// traced tensor of every step is copied out as int32 at its offset. No model state lives here; the
// pointers are per thread so the C simulation can run samples on several threads.
#ifndef __SYNTHESIS__
extern thread_local int32_t *stepd_trace_buf;
extern thread_local const int64_t *stepd_trace_offsets;
template <class T>
inline void stepd_trace(int node, int size, int t, const T *a) {
    if (!stepd_trace_buf || stepd_trace_offsets[node] < 0) return;
    int32_t *dst = stepd_trace_buf + stepd_trace_offsets[node] + (int64_t)t * size;
    for (int i = 0; i < size; ++i) dst[i] = (int32_t)a[i].to_int64();
}
#define STEPD_TRACE(node, size, t, a) stepd_trace(node, size, t, a)
#else
#define STEPD_TRACE(node, size, t, a)
#endif

#endif
