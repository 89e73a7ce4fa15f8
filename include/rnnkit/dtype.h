#pragma once
// Element types and devices. float32 is the product; float64 serves gradient
// checks; int64 holds indices and lengths; bool holds masks. bfloat16/float16
// and CUDA are named now so that every signature already carries them.
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

namespace rnnkit {

enum class Dtype : uint8_t { Float32, Float64, Int64, Bool, BFloat16, Float16 };

constexpr Dtype kFloat32 = Dtype::Float32;
constexpr Dtype kFloat64 = Dtype::Float64;
constexpr Dtype kInt64 = Dtype::Int64;
constexpr Dtype kBool = Dtype::Bool;

size_t element_size(Dtype dtype);
// PyTorch's spelling: "torch.float32", "torch.int64", ...
std::string dtype_name(Dtype dtype);
bool is_floating(Dtype dtype);
std::ostream& operator<<(std::ostream& os, Dtype dtype);

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  Device() = default;
  Device(DeviceType t, int i = 0) : type(t), index(i) {}
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};
constexpr DeviceType kCPU = DeviceType::CPU;
constexpr DeviceType kCUDA = DeviceType::CUDA;
std::ostream& operator<<(std::ostream& os, const Device& device);

}  // namespace rnnkit
