/*
 * What this CPU can run (cpu.c): its instruction-set features, detected once
 * per process, and the ISAs they allow. Every file that picks code by CPU
 * asks here, so a test can hide features from all of them at once
 * (cpu_mask_for_tests).
 */
#ifndef LIBYOLO_CPU_H
#define LIBYOLO_CPU_H

#include "../yolo.h"

/* Feature bits; cpu_has() wants all of the bits it is given. */
enum {
    CPU_SSE41 = 1u << 0,
    CPU_PCLMUL = 1u << 1,
    CPU_AVX2 = 1u << 2,
    CPU_FMA = 1u << 3,
    CPU_AVX512F = 1u << 4,
    CPU_AVX512BW = 1u << 5,
    CPU_AVX512VL = 1u << 6,
    CPU_VPCLMUL = 1u << 7,
    CPU_NEON = 1u << 8
};

/* The features detected (once, thread-safe), minus those a test hid. */
unsigned cpu_features(void);
/* 1 if the CPU has every feature in `features`. */
int cpu_has(unsigned features);
/* 1 if the CPU has what the ISA's kernels use (AUTO: 0). Whether libyolo
 * has kernels for it is kernels_for()'s business. */
int cpu_has_isa(yolo_isa isa);
/* The widest ISA whose kernels run here (generic at least). */
yolo_isa cpu_best_isa(void);
/* The ISA a new ctx runs for `want` (yolo_ctx_params.isa): AUTO is the
 * YOLO_ISA environment variable when set (read once per process), else
 * cpu_best_isa(). Fails with YOLO_ERR_UNSUPPORTED and a message for
 * yolo_ctx_create naming the ISA (and the variable) when this CPU lacks it
 * or the variable names none; YOLO_ERR_INVALID_ARG for a value outside
 * the enum. */
yolo_status cpu_choose_isa(yolo_isa want, yolo_isa *out);

/* Test hook: features in `hidden` are reported absent from now on, as if
 * the CPU lacked them (0 shows all again). Not for production use: kernels
 * already chosen by existing contexts are not affected. */
void cpu_mask_for_tests(unsigned hidden);

#endif /* LIBYOLO_CPU_H */
