// Choosing the tier once: what the CPU and the OS allow (cpuid and the saved register
// state on x86; NEON on every aarch64, its byte dot products where the OS says the CPU has
// them), capped by LAMINA_ISA.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "isa.h"

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace lamina_kernels {
namespace {

#if defined(__x86_64__)
// The best x86 tier this CPU runs, with the OS saving the registers it needs (XCR0).
Isa detect() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::portable;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!(fma && osxsave && avx && f16c)) return Isa::portable;
  unsigned xcr0_low = 0, xcr0_high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  if ((xcr0_low & 0x6) != 0x6) return Isa::portable;  // SSE and AVX state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Isa::portable;
  const bool avx2 = b & (1u << 5);
  if (!avx2) return Isa::portable;
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));
  const bool zmm_state = (xcr0_low & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (!avx512 || !zmm_state) return Isa::avx2;
  const bool vbmi = c & (1u << 1), vnni = c & (1u << 11);
  return vbmi && vnni ? Isa::avx512_vbmi : Isa::avx512;
}
#elif defined(__aarch64__)
// NEON, with Armv8.2's byte dot products (`sdot`) where the CPU has them: the kernel's
// hardware capabilities on Linux (HWCAP_ASIMDDP), sysctl on macOS.
Isa detect() {
#if defined(__linux__)
  constexpr unsigned long kAsimdDp = 1ul << 20;  // HWCAP_ASIMDDP
  return (getauxval(AT_HWCAP) & kAsimdDp) != 0 ? Isa::neon_dotprod : Isa::neon;
#elif defined(__APPLE__)
  int has = 0;
  size_t size = sizeof has;
  const bool known = sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &size, nullptr, 0) == 0;
  return known && has != 0 ? Isa::neon_dotprod : Isa::neon;
#else
  return Isa::neon;
#endif
}
#else
Isa detect() { return Isa::portable; }
#endif

// LAMINA_ISA's tier, or the machine's when unset or unknown.
Isa wanted(Isa machine) {
  const char* value = std::getenv("LAMINA_ISA");
  if (value == nullptr || *value == '\0') return machine;
  const std::string name(value);
  if (name == "portable") return Isa::portable;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  if (name == "avx512_vbmi") return Isa::avx512_vbmi;
  if (name == "neon") return Isa::neon;
  if (name == "neon_dotprod") return Isa::neon_dotprod;
  return machine;
}

Kernels build() {
  const Isa machine = detect();
  const Isa cap = wanted(machine);
  Kernels k = portable_kernels();
#if defined(__x86_64__)
  // A cap above the machine (or a NEON tier on x86) gives the machine's best.
  const int top = cap >= Isa::neon ? static_cast<int>(machine)
                                   : std::min(static_cast<int>(cap), static_cast<int>(machine));
  if (top >= static_cast<int>(Isa::avx2)) k = avx2_kernels(k);
  if (top >= static_cast<int>(Isa::avx512)) k = avx512_kernels(k);
  if (top >= static_cast<int>(Isa::avx512_vbmi)) k = avx512_vbmi_kernels(k);
#elif defined(__aarch64__)
  // An x86 cap gives the machine's best.
  if (cap != Isa::portable) k = neon_kernels();
  if (machine == Isa::neon_dotprod && cap != Isa::portable && cap != Isa::neon) k = neon_dotprod_kernels(k);
#endif
  (void)cap;
  return k;
}

}  // namespace

const Kernels& kernels() {
  static const Kernels table = build();
  return table;
}

void widen_f16(const uint16_t* src, int n, float* dst) { kernels().widen_f16(src, n, dst); }

float round_chunk(const float* values, int size, int8_t* out) { return kernels().round_chunk(values, size, out); }

}  // namespace lamina_kernels

extern "C" {

// The tier in use: portable, avx2, avx512, avx512_vbmi, neon or neon_dotprod.
__attribute__((visibility("default"))) const char* lamina_kernel_isa() { return lamina_kernels::kernels().name; }

// Whether quantized products of `bits`-wide weights in groups of `group` run on lamina's
// kernels on this CPU (else MLX's own op serves them).
__attribute__((visibility("default"))) int lamina_kernels_supports_quantized(int bits, int group) {
  return bits >= 2 && bits <= 8 && bits != 7 && group >= 32 && group % 32 == 0 && lamina_kernels::kernels().quantized(bits);
}

// Whether this CPU's tier multiplies GGUF block format `format` (blocks.h's codes) with a
// kernel of its own (not the portable tier's per-value loops).
__attribute__((visibility("default"))) int lamina_kernels_blocks_native(int format) {
  if (format <= 0 || format >= lamina_kernels::kFormats) return 0;
  return lamina_kernels::kernels().products_blocks_int8[format] != nullptr;
}

}  // extern "C"
