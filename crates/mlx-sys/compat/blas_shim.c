/*
 * lamina's cblas_sgemm, linked ahead of OpenBLAS so that MLX's f32 matrix products
 * resolve here (MLX's CPU backend sends every f32 product, even a single row, to
 * cblas_sgemm). Products with one row or one column are vector products: they go to
 * sgemv, which reads the matrix once. OpenBLAS 0.3.21 (Debian 12) runs them through its
 * general sgemm, which first copies ("packs") the whole matrix: for one decoded token
 * that tripled the memory traffic of every weight (measured: 39% of decode time in
 * sgemm_incopy). Newer OpenBLAS releases forward gemm to gemv themselves; this does the
 * same here. Tiny products (attention of a decoding batch: a few query rows against a few
 * dozen keys, thousands of calls per step) and products of a few rows (a decoded token's
 * attention: a GQA group's query rows against the cached keys) are computed right here:
 * OpenBLAS would wake its threads for each and leave them spinning in sched_yield
 * (measured: 14% of a 16-sequence decode step; ~20% of a 4-bit model's decode). Everything else goes to OpenBLAS's sgemm unchanged (the
 * Fortran entry point, with operands swapped for row-major order). Last, the shim checks
 * which kernels OpenBLAS chose for this CPU (below).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { RowMajor = 101, ColMajor = 102 };
enum { NoTrans = 111 };

extern void sgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k, const float *alpha,
                   const float *a, const int *lda, const float *b, const int *ldb, const float *beta, float *c,
                   const int *ldc);
extern void sgemv_(const char *t, const int *m, const int *n, const float *alpha, const float *a, const int *lda,
                   const float *x, const int *incx, const float *beta, float *y, const int *incy);

/* Keeps the library in every binary's NEEDED list (see lib.rs). */
int lamina_blas_shim_present(void) { return 1; }

/* Multiply-adds at or below which a product is computed on the calling thread. */
enum { TinyProduct = 1 << 15 };
/* The same for products with at most `FewRows` rows or columns: a decoded token's
 * attention, one or a few query rows of a GQA group against the cached keys and values
 * (OpenBLAS threads even a one-row product of 64 x 200). */
enum { FewRows = 8, FewRowsProduct = 1 << 18 };

/* Row-major c[m, n] = alpha op(a) op(b) + beta c, plainly (the compiler vectorizes the
 * inner loops: `omp simd` lets it reorder the dot products' sums). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void tiny_sgemm(
    int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
    float beta, float *c, int ldc) {
  for (int i = 0; i < m; ++i) {
    float *ci = c + (size_t)i * ldc;
    if (ta == NoTrans && tb != NoTrans) {
      /* Both operands run along k: a dot product per output (queries times keys). */
      const float *ai = a + (size_t)i * lda;
      for (int j = 0; j < n; ++j) {
        const float *bj = b + (size_t)j * ldb;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int l = 0; l < k; ++l) sum += ai[l] * bj[l];
        ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
      }
      continue;
    }
    for (int j = 0; j < n; ++j) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
    for (int l = 0; l < k; ++l) {
      const float ail = alpha * (ta == NoTrans ? a[(size_t)i * lda + l] : a[(size_t)l * lda + i]);
      if (tb == NoTrans) {
        const float *bl = b + (size_t)l * ldb;
#pragma omp simd
        for (int j = 0; j < n; ++j) ci[j] += ail * bl[j];
      } else {
        for (int j = 0; j < n; ++j) ci[j] += ail * b[(size_t)j * ldb + l];
      }
    }
  }
}

/* Whether a product is small enough to compute here rather than wake OpenBLAS's threads. */
static int computed_here(int m, int n, int k) {
  const long macs = (long)m * n * k;
  if (macs <= TinyProduct) return 1;
  return (m <= FewRows || n <= FewRows) && macs <= FewRowsProduct;
}

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
  if (order == ColMajor) {
    /* Column-major C = op(A) op(B) is row-major C^T = op(B)^T op(A)^T. */
    cblas_sgemm(RowMajor, tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
    return;
  }
  const int one = 1;
  if (computed_here(m, n, k)) {
    tiny_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m == 1 && k > 0) {
    /* c[1, n] = a[1, k] op(B)[k, n]. */
    const int inc_a = ta == NoTrans ? 1 : lda;
    if (tb == NoTrans) {
      sgemv_("N", &n, &k, &alpha, b, &ldb, a, &inc_a, &beta, c, &one); /* B row-major [k, n] */
    } else {
      sgemv_("T", &k, &n, &alpha, b, &ldb, a, &inc_a, &beta, c, &one); /* B row-major [n, k] */
    }
    return;
  }
  if (n == 1 && k > 0) {
    /* c[m, 1] (stride ldc) = op(A)[m, k] b[k, 1]. */
    const int inc_b = tb == NoTrans ? ldb : 1;
    if (ta == NoTrans) {
      sgemv_("T", &k, &m, &alpha, a, &lda, b, &inc_b, &beta, c, &ldc); /* A row-major [m, k] */
    } else {
      sgemv_("N", &m, &k, &alpha, a, &lda, b, &inc_b, &beta, c, &ldc); /* A row-major [k, m] */
    }
    return;
  }
  const char tA = ta == NoTrans ? 'N' : 'T';
  const char tB = tb == NoTrans ? 'N' : 'T';
  sgemm_(&tB, &tA, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

/* ---- OpenBLAS's kernel choice ----
 * OpenBLAS built with DYNAMIC_ARCH (every distribution's) picks its kernels when it loads,
 * from the CPU model number. A release older than the CPU does not know it and falls back
 * to its generic SSE3 kernel: Debian 12's OpenBLAS 0.3.21 on a Sapphire Rapids Xeon runs
 * `Prescott`, 70 GFLOP/s where its own SkylakeX/Cooperlake kernel does 350-370 (2 cores).
 * Every f32 product MLX sends to BLAS inherits it. The shim's constructor runs after
 * OpenBLAS's (the shim depends on it) and before any product: where the core OpenBLAS chose
 * uses fewer instructions than the CPU has, it chooses again, by the instruction sets the
 * CPU reports (the names and the entry points are OpenBLAS's own, the ones
 * `OPENBLAS_CORETYPE` selects). A user's `OPENBLAS_CORETYPE` is left alone; a build without
 * DYNAMIC_ARCH, or one that lacks the kernel, is left as it is. */

/* OpenBLAS's entry points for the choice (weak: absent where OpenBLAS was built for one
 * CPU, and then nothing is chosen again). */
extern const char *openblas_get_corename(void) __attribute__((weak));
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

/* How wide a core's kernels are: what a choice is compared by. */
typedef enum { Generic = 0, Avx2 = 1, Avx512 = 2 } Width;

/* The kernel OpenBLAS chose itself where lamina chose again; empty otherwise. */
static char detected_core[32];

/* The width of an OpenBLAS core name (OpenBLAS's `corename` table; newer releases add
 * names, all of which are at least as wide as those listed). */
static Width core_width(const char *name) {
  static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
  static const char *const avx2[] = {"Haswell", "Zen"};
  for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; ++i)
    if (strcasecmp(name, avx512[i]) == 0) return Avx512;
  for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; ++i)
    if (strcasecmp(name, avx2[i]) == 0) return Avx2;
  return Generic;
}

/* The OpenBLAS core (and its kernel table's symbol) for what this CPU runs, or NULL. */
static const char *core_for_cpu(Width *width, const char **table) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    *width = Avx512;
    if (__builtin_cpu_supports("avx512bf16")) {
      *table = "gotoblas_COOPERLAKE";
      return "Cooperlake";
    }
    *table = "gotoblas_SKYLAKEX";
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    *width = Avx2;
    *table = "gotoblas_HASWELL";
    return "Haswell";
  }
#endif
  (void)width;
  (void)table;
  return NULL;
}

/* Chooses OpenBLAS's kernels again where it chose narrower ones than the CPU runs (the
 * shim's constructor calls it; exported so a test can repeat it after forcing a generic
 * core). Call it before any BLAS product runs, from one thread. */
void lamina_blas_choose_core(void) {
  if (!openblas_get_corename || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
  if (getenv("OPENBLAS_CORETYPE")) return;
  Width wanted = Generic;
  const char *table = NULL;
  const char *core = core_for_cpu(&wanted, &table);
  const char *chosen = openblas_get_corename();
  if (!core || !chosen || core_width(chosen) >= wanted || !dlsym(RTLD_DEFAULT, table)) return;
  snprintf(detected_core, sizeof detected_core, "%s", chosen);
  /* OpenBLAS reads the variable only while choosing; it is set for that call alone. */
  setenv("OPENBLAS_CORETYPE", core, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
}

__attribute__((constructor)) static void choose_openblas_core(void) { lamina_blas_choose_core(); }

/* The OpenBLAS core whose kernels serve products now ("" where OpenBLAS cannot say). */
const char *lamina_blas_core(void) {
  const char *name = openblas_get_corename ? openblas_get_corename() : NULL;
  return name ? name : "";
}

/* The core OpenBLAS had chosen itself where lamina chose again; "" otherwise. */
const char *lamina_blas_detected_core(void) { return detected_core; }
