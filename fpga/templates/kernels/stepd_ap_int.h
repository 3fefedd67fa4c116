// step-deploy FPGA kernels: the ap_int types. GCC 12 reports -Wuninitialized/-Wmaybe-uninitialized
// false positives inside the ap_types headers (ap_private.h) wherever they are inlined at -O2; they
// are silenced here, for those headers' code only. Our own code is compiled with -Wall -Wextra.
#ifndef STEPD_AP_INT_H
#define STEPD_AP_INT_H
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "ap_int.h"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
