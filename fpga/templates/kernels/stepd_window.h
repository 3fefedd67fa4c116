// step-deploy FPGA kernels: STAtten's window op, TemporalBlockSum over blocks of C::block steps:
//   Y[t] = sum over the block of t of X[tau]   (blocks aligned at step 0)
// Non-causal inside a block: the top runs a graph holding it block-major (every layer over the
// C::block steps of a block, per-layer buffers of C::block steps), so this kernel is called once per
// block on the producer's buffer x[block][n] and writes all C::block steps of y[block][n]. Its
// accumulator is one register per lane; the B-step buffers are the top's. Exact: out_t holds B x
// the input's range.
#ifndef STEPD_WINDOW_H
#define STEPD_WINDOW_H

#include "stepd_common.h"

namespace stepd {

template <class C>
void block_sum(const typename C::in_t x[], typename C::out_t y[]) {
BSUM:
    for (int i = 0; i < C::n; ++i) {
#pragma HLS UNROLL factor = C::P
        typename C::out_t acc = 0;
    BSUM_ACC:
        for (int b = 0; b < C::block; ++b) {
#pragma HLS PIPELINE II = 1
            acc += x[b * C::n + i];
        }
    BSUM_OUT:
        for (int b = 0; b < C::block; ++b) {
#pragma HLS PIPELINE II = 1
            y[b * C::n + i] = acc;
        }
    }
}

}  // namespace stepd

#endif
