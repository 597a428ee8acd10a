/*
 * One const table of kernels per ISA (internal.h: yolo_kernels). A ctx picks
 * its table once, at creation; every ISA-specific call of a FAST run goes
 * through it, so no kernel asks the CPU again and all of them agree on the
 * ISA. A new ISA is one more table here (and a case in cpu_has_isa).
 *
 * Pooling and letterbox have no entry: their vector code (SSE, SSE4.1) is
 * chosen at compile time from the build's baseline, the same for every ISA.
 */
#include "cpu.h"
#include "internal.h"

static const yolo_kernels kernels_generic = {
    .isa = YOLO_ISA_GENERIC,
    .name = "generic",
    .gemm = convf_kernel_generic,
    .copy2 = convf_copy2_generic,
    .activate = apply_activation,
    .sigmoid = convf_sigmoid_generic,
    .wino_input = wino_input_generic,
    .wino_output = wino_output_generic,
    .decode = detect_decode_generic,
};

#if defined(__x86_64__) || defined(__i386__)
static const yolo_kernels kernels_avx2 = {
    .isa = YOLO_ISA_AVX2,
    .name = "avx2",
    .gemm = convf_kernel_avx2,
    .copy2 = convf_copy2_avx2,
    .activate = convf_activate_avx2,
    .sigmoid = convf_sigmoid_avx2,
    .wino_input = wino_input_avx2,
    .wino_output = wino_output_avx2,
    .decode = detect_decode_avx2,
};

static const yolo_kernels kernels_avx512 = {
    .isa = YOLO_ISA_AVX512,
    .name = "avx512",
    .gemm = convf_kernel_avx512,
    .copy2 = convf_copy2_avx512,
    .activate = convf_activate_avx512,
    .sigmoid = convf_sigmoid_avx512,
    .wino_input = wino_input_avx512,
    .wino_output = wino_output_avx512,
    .decode = detect_decode_avx512,
};
#endif

const yolo_kernels *kernels_for(yolo_isa isa)
{
    const yolo_kernels *k = NULL;
    switch (isa) {
    case YOLO_ISA_GENERIC:
        k = &kernels_generic;
        break;
#if defined(__x86_64__) || defined(__i386__)
    case YOLO_ISA_AVX2:
        k = &kernels_avx2;
        break;
    case YOLO_ISA_AVX512:
        k = &kernels_avx512;
        break;
#endif
    default: /* AUTO is not an ISA; NEON has no kernels yet */
        break;
    }
    return k && cpu_has_isa(isa) ? k : NULL;
}
