#pragma once
// bfloat16 rounding shared by the packed weights (simd::pack_recurrent_bf16)
// and the modules' bfloat16 inference (nn::RNNImplBase::set_bf16_inference),
// which must round exactly alike: to nearest, ties to even, as PyTorch's
// Tensor.bfloat16() does; a NaN stays a quiet NaN, infinities stay infinite.
#include <cstdint>
#include <cstring>

namespace rnnkit::kernels::cpu {

// The upper 16 bits of x rounded to bfloat16.
inline uint16_t bfloat16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = nan ? (bits | 0x00400000u) : bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// x rounded to bfloat16, as a float.
inline float round_to_bfloat16(float x) {
  const uint32_t bits = static_cast<uint32_t>(bfloat16_bits(x)) << 16;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}

}  // namespace rnnkit::kernels::cpu
