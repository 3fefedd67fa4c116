// step-deploy testbench: runs the top function on tb_data/input.dat and compares every layer's
// output at every step with tb_data/expected.dat (written from the integer golden model), printing
// the mismatch count per layer. Exit code 0 only when every value matches.
//   usage: stepd_tb [tb_data directory]
// File formats (whitespace-separated integers): input.dat "n" then n x T x STEPD_IN_SIZE values;
// expected.dat, per sample, per layer in firmware/layers.h order, T x size values.
#include <pthread.h>
#include <stdint.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "stepd_top.h"
#include "layers.h"

thread_local int32_t *stepd_trace_buf = 0;
thread_local const int64_t *stepd_trace_offsets = 0;

namespace {

struct Run {
    std::vector<input_t> x;
    std::vector<output_t> y;
    std::vector<int32_t> trace;
    std::vector<int64_t> offsets;
};

void *run_one(void *arg) {
    Run *r = static_cast<Run *>(arg);
    stepd_trace_offsets = r->offsets.data();
    stepd_trace_buf = r->trace.data();
    stepd_top(r->x.data(), r->y.data());
    stepd_trace_buf = 0;
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    const std::string dir = argc > 1 ? argv[1] : "tb_data";
    std::ifstream fin((dir + "/input.dat").c_str()), fexp((dir + "/expected.dat").c_str());
    if (!fin || !fexp) {
        std::printf("cannot read %s/input.dat and %s/expected.dat\n", dir.c_str(), dir.c_str());
        return 2;
    }
    long n = 0;
    fin >> n;
    Run r;
    r.x.resize(STEPD_T * STEPD_IN_SIZE);
    r.y.resize(STEPD_OUT_SIZE);
    int64_t total = 0;
    for (int i = 0; i < STEPD_N_LAYERS; ++i) {
        r.offsets.push_back(total);
        total += (int64_t)STEPD_T * STEPD_LAYER_SIZES[i];
    }
    r.trace.resize(total);
    std::vector<int64_t> mismatches(STEPD_N_LAYERS, 0);
    int64_t values = 0;
    for (long s = 0; s < n; ++s) {
        for (int i = 0; i < STEPD_T * STEPD_IN_SIZE; ++i) {
            long v;
            fin >> v;
            r.x[i] = v;
        }
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, (size_t)STEPD_STACK_BYTES);
        pthread_t th;
        if (pthread_create(&th, &attr, run_one, &r) != 0) return 3;
        pthread_join(th, 0);
        pthread_attr_destroy(&attr);
        for (int i = 0; i < STEPD_N_LAYERS; ++i) {
            for (int64_t j = 0; j < (int64_t)STEPD_T * STEPD_LAYER_SIZES[i]; ++j) {
                long e;
                fexp >> e;
                if (!fexp) {
                    std::printf("expected.dat ends early (sample %ld, layer %s)\n", s, STEPD_LAYER_NAMES[i]);
                    return 2;
                }
                mismatches[i] += (r.trace[r.offsets[i] + j] != e);
                ++values;
            }
        }
    }
    int64_t bad = 0;
    std::printf("%-40s %12s\n", "layer", "mismatches");
    for (int i = 0; i < STEPD_N_LAYERS; ++i) {
        std::printf("%-40s %12lld\n", STEPD_LAYER_NAMES[i], (long long)mismatches[i]);
        bad += mismatches[i];
    }
    std::printf("C simulation vs golden: %lld mismatches in %lld values over %ld samples x %d layers x %d steps\n",
                (long long)bad, (long long)values, n, STEPD_N_LAYERS, STEPD_T);
    return bad == 0 ? 0 : 1;
}
