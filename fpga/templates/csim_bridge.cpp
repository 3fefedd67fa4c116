// step-deploy C-simulation bridge (never synthesized): an extern "C" entry the Python wrapper loads
// with ctypes, in the manner of hls4ml's compile()/predict(). Each sample is one call of the top
// function; inputs are checked against input_t's range (no silent wrap); samples are shared out over
// up to `threads` threads, each with a stack large enough for the top's local buffers and state; when
// a trace buffer is given every layer's output of every step is copied out (layer order and sizes:
// firmware/layers.h).
#include <pthread.h>
#include <stdint.h>

#include <vector>

#include "firmware/stepd_top.h"

thread_local int32_t *stepd_trace_buf = 0;
thread_local const int64_t *stepd_trace_offsets = 0;

namespace {

struct Job {
    const int32_t *x;
    int64_t first, n;
    int32_t *y;
    int32_t *trace;
    const int64_t *offsets;
    int64_t trace_stride;
    int status;
};

void *run_samples(void *arg) {
    Job *job = static_cast<Job *>(arg);
    std::vector<input_t> xin(STEPD_T * STEPD_IN_SIZE);
    std::vector<output_t> yout(STEPD_OUT_SIZE);
    for (int64_t s = job->first; s < job->first + job->n; ++s) {
        const int32_t *xs = job->x + s * STEPD_T * STEPD_IN_SIZE;
        for (int i = 0; i < STEPD_T * STEPD_IN_SIZE; ++i) {
            input_t v = xs[i];
            if ((int64_t)v.to_int64() != (int64_t)xs[i]) {
                job->status = 2;  // a value outside input_t: refuse rather than wrap
                return 0;
            }
            xin[i] = v;
        }
        stepd_trace_offsets = job->offsets;
        stepd_trace_buf = job->trace ? job->trace + s * job->trace_stride : 0;
        stepd_top(xin.data(), yout.data());
        for (int i = 0; i < STEPD_OUT_SIZE; ++i) job->y[s * STEPD_OUT_SIZE + i] = (int32_t)yout[i].to_int64();
    }
    stepd_trace_buf = 0;
    return 0;
}

}  // namespace

extern "C" {

// Sizes the wrapper checks against project.json: {T, input size, output size, layers}.
void stepd_sizes(int64_t out[4]) {
    out[0] = STEPD_T;
    out[1] = STEPD_IN_SIZE;
    out[2] = STEPD_OUT_SIZE;
    out[3] = STEPD_N_LAYERS;
}

// x: n x T x IN int32; y: n x OUT int32; trace (optional): n x trace_stride int32, layer i of step t
// at offsets[i] + t * size_i (offsets[i] < 0: not traced). Returns 0, 1 (no thread) or 2 (bad input).
int stepd_run(const int32_t *x, int64_t n, int32_t *y, int32_t *trace, const int64_t *offsets,
              int64_t trace_stride, int threads) {
    if (threads < 1) threads = 1;
    if (threads > n) threads = n > 0 ? (int)n : 1;
    std::vector<Job> jobs(threads);
    std::vector<pthread_t> ids(threads);
    std::vector<bool> started(threads, false);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)STEPD_STACK_BYTES);
    int64_t at = 0;
    int status = 0;
    for (int k = 0; k < threads; ++k) {
        const int64_t share = n / threads + (k < n % threads ? 1 : 0);
        jobs[k] = Job{x, at, share, y, trace, offsets, trace_stride, 0};
        at += share;
        started[k] = pthread_create(&ids[k], &attr, run_samples, &jobs[k]) == 0;
        if (!started[k]) status = 1;
    }
    for (int k = 0; k < threads; ++k) {
        if (started[k]) pthread_join(ids[k], 0);
        if (jobs[k].status && !status) status = jobs[k].status;
    }
    pthread_attr_destroy(&attr);
    return status;
}
}
