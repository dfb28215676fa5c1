/*
 * Force-included (`-include`) into every mlx-c translation unit and into bindgen's parse,
 * on every target. mlx-c 0.7.0 is written for macOS on Apple silicon; this header supplies
 * the two things it assumes there, each only where a feature test says it is missing
 * (so it is empty on a Mac). See notes/mlx-on-linux.md.
 */
#ifndef LAMINA_MLX_COMPAT_H
#define LAMINA_MLX_COMPAT_H

#if !defined(__aarch64__)
/*
 * mlx-c's `mlx/c/half.h` defines `float16_t`/`bfloat16_t` (and HAS_FLOAT16/HAS_BFLOAT16,
 * which gate the f16/bf16 accessors mlx-rs calls) only on aarch64. Claim its include guard
 * and define them here. Only their size matters: they cross the C boundary by pointer or as
 * 2-byte values. bindgen (clang) must see `__fp16`, which it maps to a u16 tuple struct as
 * mlx-rs expects (clang 14 rejects `_Float16` on x86); GCC compiles `_Float16`.
 */
#define MLX_HALF_H
#define HAS_FLOAT16
#define HAS_BFLOAT16
#include <stdint.h>
#if defined(__clang__)
typedef __fp16 float16_t;
#else
typedef _Float16 float16_t;
#endif
typedef uint16_t bfloat16_t;
#endif /* !__aarch64__ */

#if defined(__cplusplus)
#include <version>
#if !defined(__cpp_lib_format)
/*
 * GCC 12's libstdc++ has no std::format; mlx-c uses it only to build five error messages in
 * `mlx/c/private/io.h`, with plain `{}` placeholders. This substitutes each `{}` in order.
 */
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
namespace std {
template <typename... Args>
inline string format(string_view fmt, Args&&... args) {
  ostringstream out;
  auto emit = [&](auto&& arg) {
    auto at = fmt.find("{}");
    if (at == string_view::npos) {
      return;
    }
    out << fmt.substr(0, at) << arg;
    fmt.remove_prefix(at + 2);
  };
  (emit(std::forward<Args>(args)), ...);
  out << fmt;
  return out.str();
}
} // namespace std
#endif /* !__cpp_lib_format */
#endif /* __cplusplus */

#endif /* LAMINA_MLX_COMPAT_H */
