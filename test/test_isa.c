/*
 * Choosing the ISA of the FAST kernels (cpu.c, kernels.c, yolo_ctx_params.isa,
 * YOLO_ISA): names; forcing each ISA this CPU has gives a ctx that runs that
 * ISA's table (yolo_ctx_isa, the ctx's table) and computes the model as the
 * REFERENCE backend does; forcing one it lacks (NEON on x86; AVX-512 hidden
 * by cpu_mask_for_tests) fails with YOLO_ERR_UNSUPPORTED and a message naming
 * it; GEMM and REFERENCE check the field too. YOLO_ISA is read once per
 * process, so its cases run in child processes (this program started again
 * with --child and the variable set): each value is honoured or refused as
 * yolo.h says, an explicit isa wins over it, and changing it later has no
 * effect. Nothing here depends on the machine's speed; an ISA this CPU
 * lacks is reported as not run, and its refusal is what is checked.
 */
#include "testutil.h"

#include <sys/wait.h>
#include <unistd.h>

#include "cpu.h"
#include "graph.h"
#include "modelgen.h"
#include "yolo.h"

#define H 32
#define W 48

extern char **environ;

static char tmp_dir[256];
static char model_path[320];
static yolo_model *model;

static int setup(void **state)
{
    (void)state;
    mg_model gen;
    if (mg_temp_dir(tmp_dir, sizeof tmp_dir, "isa") != 0)
        return -1;
    snprintf(model_path, sizeof model_path, "%s/full.bin", tmp_dir);
    mg_build_full(&gen, 99);
    int r = mg_write(&gen, model_path);
    mg_free(&gen);
    if (r != 0 || yolo_model_load(model_path, NULL, &model) != YOLO_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    yolo_model_free(model);
    unlink(model_path);
    rmdir(tmp_dir);
    return 0;
}

static yolo_status make_ctx(yolo_backend backend, yolo_isa isa, yolo_ctx **out)
{
    yolo_ctx_params p = yolo_ctx_default_params();
    p.backend = backend;
    p.isa = isa;
    p.threads = 2;
    return yolo_ctx_create(model, &p, out);
}

static int supported(yolo_isa isa)
{
    int yes = -1;
    assert_int_equal(yolo_isa_supported(isa, &yes), YOLO_OK);
    return yes;
}

/* The ctx creation failed with `status` and a message holding each of the
 * NULL-terminated strings. */
static void expect_refused(yolo_status got, yolo_status status, const char *const *words)
{
    assert_int_equal(got, status);
    const char *msg = yolo_last_error();
    for (int i = 0; words[i]; i++)
        if (!strstr(msg, words[i]))
            fail_msg("message \"%s\" does not name \"%s\"", msg, words[i]);
}

static void test_names(void **state)
{
    (void)state;
    static const char *const names[] = {"auto", "generic", "avx2", "avx512", "neon"};
    for (int i = 0; i < 5; i++) {
        yolo_isa isa = YOLO_ISA_GENERIC;
        assert_string_equal(yolo_isa_name((yolo_isa)i), names[i]);
        assert_int_equal(yolo_isa_from_name(names[i], &isa), YOLO_OK);
        assert_int_equal(isa, (yolo_isa)i);
    }
    yolo_isa isa;
    assert_int_equal(yolo_isa_from_name("AVX512", &isa), YOLO_OK);
    assert_int_equal(isa, YOLO_ISA_AVX512);
    assert_int_equal(yolo_isa_from_name("sse2", &isa), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "sse2"));
    assert_int_equal(yolo_isa_from_name(NULL, &isa), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_isa_from_name("avx2", NULL), YOLO_ERR_INVALID_ARG);
    assert_string_equal(yolo_isa_name((yolo_isa)42), "?");
    int yes;
    assert_int_equal(yolo_isa_supported((yolo_isa)42, &yes), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_isa_supported(YOLO_ISA_GENERIC, NULL), YOLO_ERR_INVALID_ARG);
    assert_true(supported(YOLO_ISA_AUTO) && supported(YOLO_ISA_GENERIC));
#if defined(__x86_64__) || defined(__i386__)
    assert_false(supported(YOLO_ISA_NEON));
#endif
    for (yolo_isa i = YOLO_ISA_GENERIC; i <= YOLO_ISA_NEON; i++)
        assert_int_equal(supported(i), kernels_for(i) != NULL);
}

/* The FAST ctx of a forced ISA holds that ISA's table and computes what the
 * REFERENCE backend computes (within the rounding of another summation
 * order); its predictions are compared on random input. */
static void check_forced(yolo_isa isa, const float *x, const float *ref, size_t n)
{
    yolo_ctx *c = NULL;
    yolo_status st = make_ctx(YOLO_BACKEND_FAST, isa, &c);
    if (st != YOLO_OK)
        fail_msg("%s: %s", yolo_isa_name(isa), yolo_last_error());
    yolo_isa ran = YOLO_ISA_AUTO;
    assert_int_equal(yolo_ctx_isa(c, &ran), YOLO_OK);
    assert_int_equal(ran, isa);
    assert_ptr_equal(c->kernels, kernels_for(isa));
    assert_int_equal(yolo_forward(c, x, 1, H, W), YOLO_OK);
    const float *p;
    int rows, cols;
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    assert_int_equal((size_t)rows * (size_t)cols, n);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)p[i] - (double)ref[i]) <= 1e-3 * (1.0 + fabs((double)ref[i]))))
            fail_msg("%s: prediction %zu is %.9g, REFERENCE %.9g", yolo_isa_name(isa), i,
                     (double)p[i], (double)ref[i]);
    print_message("forced %s: ran %s, predictions agree with REFERENCE\n", yolo_isa_name(isa),
                  yolo_isa_name(ran));
    yolo_ctx_free(c);
}

/* Every ISA: forced where this CPU has it, refused where not. */
static void test_forced_isa_runs(void **state)
{
    (void)state;
    uint64_t seed = 5;
    float x[3 * H * W];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        x[i] = 0.5f + 0.5f * tu_rand(&seed);
    yolo_ctx *r = NULL;
    assert_int_equal(make_ctx(YOLO_BACKEND_REFERENCE, YOLO_ISA_AUTO, &r), YOLO_OK);
    assert_int_equal(yolo_forward(r, x, 1, H, W), YOLO_OK);
    const float *ref;
    int rows, cols;
    assert_int_equal(yolo_predictions(r, 0, &ref, &rows, &cols), YOLO_OK);
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        if (supported(isa)) {
            check_forced(isa, x, ref, (size_t)rows * (size_t)cols);
            continue;
        }
        yolo_ctx *c = NULL;
        const char *words[] = {yolo_isa_name(isa), "yolo_ctx_params.isa", NULL};
        expect_refused(make_ctx(YOLO_BACKEND_FAST, isa, &c), YOLO_ERR_UNSUPPORTED, words);
        assert_null(c);
        print_message("%s: not run, this CPU lacks it; refused: %s\n", yolo_isa_name(isa),
                      yolo_last_error());
    }
    yolo_ctx_free(r);
}

/* NEON on x86 is refused by every backend, and a value outside the enum
 * is an invalid argument. */
static void test_refusals(void **state)
{
    (void)state;
    yolo_ctx *c = NULL;
#if defined(__x86_64__) || defined(__i386__)
    const char *words[] = {"neon", "lacks", NULL};
    expect_refused(make_ctx(YOLO_BACKEND_FAST, YOLO_ISA_NEON, &c), YOLO_ERR_UNSUPPORTED, words);
    expect_refused(make_ctx(YOLO_BACKEND_GEMM, YOLO_ISA_NEON, &c), YOLO_ERR_UNSUPPORTED, words);
    expect_refused(make_ctx(YOLO_BACKEND_REFERENCE, YOLO_ISA_NEON, &c), YOLO_ERR_UNSUPPORTED,
                   words);
#endif
    const char *bad[] = {"isa 9", NULL};
    expect_refused(make_ctx(YOLO_BACKEND_FAST, (yolo_isa)9, &c), YOLO_ERR_INVALID_ARG, bad);
    assert_null(c);
    assert_int_equal(yolo_ctx_isa(NULL, NULL), YOLO_ERR_INVALID_ARG);
}

/* GEMM and REFERENCE accept any ISA the CPU has and report generic: their
 * own loops are portable C. */
static void test_other_backends(void **state)
{
    (void)state;
    const yolo_backend backends[] = {YOLO_BACKEND_GEMM, YOLO_BACKEND_REFERENCE};
    for (int b = 0; b < 2; b++) {
        yolo_ctx *c = NULL;
        assert_int_equal(make_ctx(backends[b], YOLO_ISA_GENERIC, &c), YOLO_OK);
        yolo_isa isa = YOLO_ISA_AUTO;
        assert_int_equal(yolo_ctx_isa(c, &isa), YOLO_OK);
        assert_int_equal(isa, YOLO_ISA_GENERIC);
        yolo_ctx_free(c);
    }
}

/* With AVX-512 hidden (the test hook), forcing it is refused wherever the
 * CPU has it; AUTO falls back to the next ISA; a ctx made before keeps its
 * table. */
static void test_hidden_avx512(void **state)
{
    (void)state;
    yolo_ctx *before = NULL, *c = NULL;
    assert_int_equal(make_ctx(YOLO_BACKEND_FAST, YOLO_ISA_GENERIC, &before), YOLO_OK);
    cpu_mask_for_tests(CPU_AVX512F);
    assert_false(supported(YOLO_ISA_AVX512));
    const char *words[] = {"avx512", "yolo_ctx_params.isa", "lacks", NULL};
    expect_refused(make_ctx(YOLO_BACKEND_FAST, YOLO_ISA_AVX512, &c), YOLO_ERR_UNSUPPORTED, words);
    print_message("AVX-512 hidden: %s\n", yolo_last_error());
    assert_int_not_equal(cpu_best_isa(), YOLO_ISA_AVX512);
    if (!getenv("YOLO_ISA")) { /* AUTO is the CPU's best only without the variable */
        assert_int_equal(make_ctx(YOLO_BACKEND_FAST, YOLO_ISA_AUTO, &c), YOLO_OK);
        yolo_isa isa;
        assert_int_equal(yolo_ctx_isa(c, &isa), YOLO_OK);
        assert_int_equal(isa, cpu_has(CPU_AVX2 | CPU_FMA) ? YOLO_ISA_AVX2 : YOLO_ISA_GENERIC);
        yolo_ctx_free(c);
    }
    cpu_mask_for_tests(0);
    assert_ptr_equal(before->kernels, kernels_for(YOLO_ISA_GENERIC));
    yolo_ctx_free(before);
}

/* ---- YOLO_ISA, in child processes -------------------------------------------- */

/* The child: hides the features in `mask`, makes a FAST ctx with params.isa
 * = `explicit_isa` and prints "isa NAME" or "error STATUS: MESSAGE"; with
 * `twice` it then sets YOLO_ISA=bogus and makes a second ctx. */
static int child_main(char **argv)
{
    cpu_mask_for_tests((unsigned)strtoul(argv[3], NULL, 16));
    yolo_isa want = YOLO_ISA_AUTO;
    if (yolo_model_load(argv[2], NULL, &model) != YOLO_OK ||
        yolo_isa_from_name(argv[4], &want) != YOLO_OK) {
        printf("setup failed: %s\n", yolo_last_error());
        return 1;
    }
    for (int round = 0; round < 1 + atoi(argv[5]); round++) {
        if (round == 1)
            setenv("YOLO_ISA", "bogus", 1);
        yolo_ctx *c = NULL;
        yolo_status st = make_ctx(YOLO_BACKEND_FAST, want, &c);
        yolo_isa isa = YOLO_ISA_AUTO;
        if (st == YOLO_OK && yolo_ctx_isa(c, &isa) == YOLO_OK)
            printf("isa %s\n", yolo_isa_name(isa));
        else
            printf("error %d: %s\n", (int)st, yolo_last_error());
        yolo_ctx_free(c);
    }
    yolo_model_free(model);
    return 0;
}

/* Runs this program as a child with YOLO_ISA=value (unset if NULL) and the
 * child's arguments; its output into out. */
static void run_child(const char *value, const char *mask, const char *isa, int twice,
                      char *out, size_t size)
{
    static char env_buf[128];
    char *envp[256];
    int n = 0;
    for (char **e = environ; *e && n < 254; e++)
        if (strncmp(*e, "YOLO_ISA=", 9) != 0)
            envp[n++] = *e;
    if (value) {
        snprintf(env_buf, sizeof env_buf, "YOLO_ISA=%s", value);
        envp[n++] = env_buf;
    }
    envp[n] = NULL;
    char a0[] = "test_isa", a1[] = "--child", a3[16], a4[16], a5[2] = {twice ? '1' : '0', 0};
    snprintf(a3, sizeof a3, "%s", mask);
    snprintf(a4, sizeof a4, "%s", isa);
    char *argv[] = {a0, a1, model_path, a3, a4, a5, NULL};
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd[0], out + got, size - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = 0;
    close(fd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child (YOLO_ISA=%s) failed: %s", value ? value : "(unset)", out);
}

/* One YOLO_ISA case: the child's output must start with `want` and hold
 * each of the NULL-terminated words. */
static void env_case(const char *value, const char *mask, const char *isa, int twice,
                     const char *want, const char *const *words)
{
    char out[2048];
    run_child(value, mask, isa, twice, out, sizeof out);
    print_message("YOLO_ISA=%s, mask %s, isa %s: %s", value ? value : "(unset)", mask, isa, out);
    if (strncmp(out, want, strlen(want)) != 0)
        fail_msg("expected \"%s...\", got \"%s\"", want, out);
    for (int i = 0; words && words[i]; i++)
        if (!strstr(out, words[i]))
            fail_msg("\"%s\" does not name \"%s\"", out, words[i]);
}

/* An ISA the variable asks for: run where the CPU has it, refused where
 * not, naming the variable. */
static void env_isa_case(yolo_isa isa, const char *spelling)
{
    char want[32];
    const char *words[] = {"YOLO_ISA", yolo_isa_name(isa), NULL};
    snprintf(want, sizeof want, "isa %s", yolo_isa_name(isa));
    if (supported(isa)) {
        env_case(spelling, "0", "auto", 0, want, NULL);
        return;
    }
    snprintf(want, sizeof want, "error %d:", (int)YOLO_ERR_UNSUPPORTED);
    env_case(spelling, "0", "auto", 0, want, words);
}

static void test_env(void **state)
{
    (void)state;
    char best[32], unsupported[32];
    snprintf(best, sizeof best, "isa %s", yolo_isa_name(cpu_best_isa()));
    snprintf(unsupported, sizeof unsupported, "error %d:", (int)YOLO_ERR_UNSUPPORTED);
    env_case(NULL, "0", "auto", 0, best, NULL);
    env_case("", "0", "auto", 0, best, NULL);
    env_case("auto", "0", "auto", 0, best, NULL);
    env_isa_case(YOLO_ISA_GENERIC, "generic");
    env_isa_case(YOLO_ISA_AVX2, "AVX2");
    env_isa_case(YOLO_ISA_AVX512, "avx512");
    env_isa_case(YOLO_ISA_NEON, "neon");
    const char *bogus[] = {"YOLO_ISA=sse3", NULL};
    env_case("sse3", "0", "auto", 0, unsupported, bogus);
    /* AVX-512 hidden: refused by name even on a CPU that has it */
    char mask[16];
    snprintf(mask, sizeof mask, "%x", CPU_AVX512F);
    const char *hidden[] = {"YOLO_ISA", "avx512", "lacks", NULL};
    env_case("avx512", mask, "auto", 0, unsupported, hidden);
    /* an explicit isa wins; the variable is read once */
    env_case("neon", "0", "generic", 0, "isa generic", NULL);
    env_case("generic", "0", "auto", 1, "isa generic\nisa generic\n", NULL);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--child") == 0)
        return child_main(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_forced_isa_runs),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_other_backends),
        cmocka_unit_test(test_hidden_avx512),
        cmocka_unit_test(test_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
