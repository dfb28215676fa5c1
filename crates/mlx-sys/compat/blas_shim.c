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
 * Fortran entry point, with operands swapped for row-major order).
 */
#include <stddef.h>

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
