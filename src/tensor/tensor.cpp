// Tensor handle: metadata, storage, factories, autograd field access.
#include "rnnkit/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "rnnkit/autograd/node.h"
#include "rnnkit/ops.h"
#include "tensor/iter.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit {

// ---------------------------------------------------------------- dtype/device

size_t element_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::Float32: return 4;
    case Dtype::Float64: return 8;
    case Dtype::Int64: return 8;
    case Dtype::Bool: return 1;
    case Dtype::BFloat16: return 2;
    case Dtype::Float16: return 2;
  }
  return 0;
}

std::string dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::Float32: return "torch.float32";
    case Dtype::Float64: return "torch.float64";
    case Dtype::Int64: return "torch.int64";
    case Dtype::Bool: return "torch.bool";
    case Dtype::BFloat16: return "torch.bfloat16";
    case Dtype::Float16: return "torch.float16";
  }
  return "unknown";
}

bool is_floating(Dtype dtype) {
  return dtype == Dtype::Float32 || dtype == Dtype::Float64 || dtype == Dtype::BFloat16 ||
         dtype == Dtype::Float16;
}

std::ostream& operator<<(std::ostream& os, Dtype dtype) { return os << dtype_name(dtype); }

std::ostream& operator<<(std::ostream& os, const Device& device) {
  if (device.type == DeviceType::CPU) return os << "cpu";
  return os << "cuda:" << device.index;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// ---------------------------------------------------------------- storage

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  RNNKIT_CHECK(device.is_cpu(), "Storage: device ", device,
               " is not available in this build (expected cpu)");
  const size_t rounded = ((nbytes + 63) / 64) * 64;
  if (rounded > 0) {
    data_ = std::aligned_alloc(64, rounded);
    RNNKIT_CHECK(data_ != nullptr, "Storage: out of memory allocating ", nbytes, " bytes");
  }
}

Storage::~Storage() { std::free(data_); }

// ---------------------------------------------------------------- helpers

Shape contiguous_strides(const Shape& sizes) {
  Shape strides(sizes.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= std::max<int64_t>(sizes[i], 1);
  }
  return strides;
}

int64_t shape_numel(const Shape& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim;
  const int64_t hi = ndim == 0 ? 0 : ndim - 1;
  RNNKIT_CHECK(dim >= lo && dim <= hi, op, ": Dimension out of range (expected to be in range of [",
               lo, ", ", hi, "], but got ", dim, ")");
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

Tensor make_view(const Tensor& t, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = t.impl()->dtype;
  return Tensor(std::move(impl));
}

void check_defined(const Tensor& t, const char* op, const char* arg) {
  RNNKIT_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}

void check_floating(const Tensor& t, const char* op, const char* arg) {
  check_defined(t, op, arg);
  RNNKIT_CHECK(t.dtype() == Dtype::Float32 || t.dtype() == Dtype::Float64, op, ": argument '",
               arg, "' must be torch.float32 or torch.float64, got ", dtype_name(t.dtype()));
}

static void check_shape_arg(const Shape& shape, const char* op) {
  for (int64_t s : shape)
    RNNKIT_CHECK(s >= 0, op, ": Trying to create tensor with negative dimension ", s, ": ",
                 shape_str(shape));
}

// ---------------------------------------------------------------- metadata

#define RNNKIT_IMPL_OR_THROW(what)                                                           \
  RNNKIT_CHECK(impl_ != nullptr, "Tensor.", what, ": called on an undefined tensor")

const Shape& Tensor::sizes() const {
  RNNKIT_IMPL_OR_THROW("sizes");
  return impl_->sizes;
}
const Shape& Tensor::strides() const {
  RNNKIT_IMPL_OR_THROW("strides");
  return impl_->strides;
}
int64_t Tensor::dim() const {
  RNNKIT_IMPL_OR_THROW("dim");
  return static_cast<int64_t>(impl_->sizes.size());
}
int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim(), "Tensor.size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "Tensor.stride")]; }
int64_t Tensor::numel() const { return shape_numel(sizes()); }
int64_t Tensor::storage_offset() const {
  RNNKIT_IMPL_OR_THROW("storage_offset");
  return impl_->offset;
}
Dtype Tensor::dtype() const {
  RNNKIT_IMPL_OR_THROW("dtype");
  return impl_->dtype;
}
Device Tensor::device() const {
  RNNKIT_IMPL_OR_THROW("device");
  return impl_->storage ? impl_->storage->device() : Device();
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  RNNKIT_IMPL_OR_THROW("storage");
  return impl_->storage;
}
bool Tensor::is_contiguous() const {
  const Shape& sz = sizes();
  const Shape& st = strides();
  int64_t expected = 1;
  for (int64_t i = static_cast<int64_t>(sz.size()) - 1; i >= 0; --i) {
    if (sz[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sz[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  RNNKIT_IMPL_OR_THROW("data_ptr");
  if (!impl_->storage) return nullptr;
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * element_size(impl_->dtype);
}

const void* Tensor::const_raw_data() const {
  RNNKIT_IMPL_OR_THROW("const_data_ptr");
  if (!impl_->storage) return nullptr;
  return static_cast<const char*>(impl_->storage->const_data()) + impl_->offset * element_size(impl_->dtype);
}

template <typename T>
static Dtype dtype_of();
template <> Dtype dtype_of<float>() { return Dtype::Float32; }
template <> Dtype dtype_of<double>() { return Dtype::Float64; }
template <> Dtype dtype_of<int64_t>() { return Dtype::Int64; }
template <> Dtype dtype_of<bool>() { return Dtype::Bool; }

template <typename T>
T* Tensor::data_ptr() const {
  RNNKIT_IMPL_OR_THROW("data_ptr");
  RNNKIT_CHECK(impl_->dtype == dtype_of<T>(), "Tensor.data_ptr: expected dtype ",
               dtype_name(dtype_of<T>()), " but the tensor has ", dtype_name(impl_->dtype));
  return static_cast<T*>(raw_data());
}

template <typename T>
const T* Tensor::const_data_ptr() const {
  RNNKIT_IMPL_OR_THROW("const_data_ptr");
  RNNKIT_CHECK(impl_->dtype == dtype_of<T>(), "Tensor.const_data_ptr: expected dtype ",
               dtype_name(dtype_of<T>()), " but the tensor has ", dtype_name(impl_->dtype));
  return static_cast<const T*>(const_raw_data());
}
template const float* Tensor::const_data_ptr<float>() const;
template const double* Tensor::const_data_ptr<double>() const;
template const int64_t* Tensor::const_data_ptr<int64_t>() const;
template const bool* Tensor::const_data_ptr<bool>() const;
template float* Tensor::data_ptr<float>() const;
template double* Tensor::data_ptr<double>() const;
template int64_t* Tensor::data_ptr<int64_t>() const;
template bool* Tensor::data_ptr<bool>() const;

double Tensor::item() const {
  RNNKIT_CHECK(numel() == 1, "Tensor.item: a Tensor with ", numel(),
               " elements cannot be converted to Scalar");
  return dispatch_all(dtype(), "Tensor.item", [&](auto tag) -> double {
    using T = decltype(tag);
    return static_cast<double>(*static_cast<const T*>(const_raw_data()));
  });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = native::contiguous(to(dtype_of<T>()));
  const T* p = c.const_data_ptr<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

// ---------------------------------------------------------------- autograd fields

bool Tensor::requires_grad() const {
  RNNKIT_IMPL_OR_THROW("requires_grad");
  return impl_->requires_grad || impl_->grad_fn != nullptr;
}

Tensor& Tensor::requires_grad_(bool requires) {
  RNNKIT_IMPL_OR_THROW("requires_grad_");
  RNNKIT_CHECK(impl_->grad_fn == nullptr,
               "requires_grad_: you can only change requires_grad flags of leaf variables");
  RNNKIT_CHECK(!requires || is_floating(impl_->dtype),
               "requires_grad_: only Tensors of floating point dtype can require gradients, got ",
               dtype_name(impl_->dtype));
  impl_->requires_grad = requires;
  return *this;
}

bool Tensor::is_leaf() const {
  RNNKIT_IMPL_OR_THROW("is_leaf");
  return impl_->grad_fn == nullptr;
}

Tensor Tensor::grad() const {
  RNNKIT_IMPL_OR_THROW("grad");
  return impl_->grad;
}

void Tensor::set_grad(const Tensor& grad) const {
  RNNKIT_IMPL_OR_THROW("set_grad");
  if (grad.defined())
    RNNKIT_CHECK(grad.sizes() == sizes(), "Tensor.set_grad: assigned grad has shape ",
                 shape_str(grad.sizes()), " but the tensor has shape ", shape_str(sizes()));
  impl_->grad = grad;
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  RNNKIT_IMPL_OR_THROW("grad_fn");
  return impl_->grad_fn;
}

uint32_t Tensor::output_nr() const {
  RNNKIT_IMPL_OR_THROW("output_nr");
  return impl_->output_nr;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  RNNKIT_IMPL_OR_THROW("backward");
  RNNKIT_CHECK(requires_grad(),
               "backward: element 0 of tensors does not require grad and does not have a grad_fn");
  Tensor g = gradient;
  if (!g.defined()) {
    RNNKIT_CHECK(numel() == 1, "backward: grad can be implicitly created only for scalar outputs (got shape ",
                 shape_str(sizes()), ")");
    g = ones(sizes(), TensorOptions(dtype()));
  } else {
    RNNKIT_CHECK(g.sizes() == sizes(), "backward: gradient has shape ", shape_str(g.sizes()),
                 " but the tensor has shape ", shape_str(sizes()));
  }
  autograd::run_backward({*this}, {g}, retain_graph);
}

Tensor Tensor::detach() const {
  RNNKIT_IMPL_OR_THROW("detach");
  return make_view(*this, impl_->sizes, impl_->strides, impl_->offset);
}

Tensor& Tensor::detach_() {
  RNNKIT_IMPL_OR_THROW("detach_");
  impl_->grad_fn.reset();
  impl_->requires_grad = false;
  impl_->output_nr = 0;
  return *this;
}

void Tensor::set_data(const Tensor& new_data) const {
  RNNKIT_IMPL_OR_THROW("set_data");
  check_defined(new_data, "set_data", "new_data");
  if (impl_->grad.defined() && (impl_->grad.sizes() != new_data.sizes() || impl_->grad.dtype() != new_data.dtype()))
    impl_->grad = Tensor();
  impl_->storage = new_data.impl()->storage;
  impl_->sizes = new_data.impl()->sizes;
  impl_->strides = new_data.impl()->strides;
  impl_->offset = new_data.impl()->offset;
  impl_->dtype = new_data.impl()->dtype;
  impl_->grad_accumulator.reset();
}

// ---------------------------------------------------------------- copies

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

// ---------------------------------------------------------------- in-place

static void check_inplace(const Tensor& t, const char* op) {
  RNNKIT_CHECK(t.defined(), op, ": called on an undefined tensor");
  RNNKIT_CHECK(!(autograd::grad_mode_enabled() && t.requires_grad() && t.is_leaf()), op,
               ": a leaf Variable that requires grad is being used in an in-place operation");
}

Tensor& Tensor::zero_() { return fill_(0.0); }

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  native::copy_into(*this, scalar_tensor(value, TensorOptions(Dtype::Float64)));
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  check_defined(src, "copy_", "src");
  broadcast_shapes(src.sizes(), sizes(), "copy_");
  Tensor s = src;
  if (s.storage() == storage()) s = native::contiguous(s.detach()).clone();
  native::copy_into(*this, s);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_");
  if (native::add_scaled_into(*this, other, alpha)) return *this;
  Tensor r = native::add_scaled(detach(), other.detach().to(dtype()), alpha, "add_");
  RNNKIT_CHECK(r.sizes() == sizes(), "add_: output with shape ", shape_str(sizes()),
               " doesn't match the broadcast shape ", shape_str(r.sizes()));
  native::copy_into(*this, r);
  return *this;
}

Tensor& Tensor::mul_(double value) {
  check_inplace(*this, "mul_");
  native::copy_into(*this, native::scalar_op(detach(), value, native::Binary::Mul));
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other) {
  check_inplace(*this, "mul_");
  Tensor r = native::binary(detach(), other.detach().to(dtype()), native::Binary::Mul, "mul_");
  RNNKIT_CHECK(r.sizes() == sizes(), "mul_: output with shape ", shape_str(sizes()),
               " doesn't match the broadcast shape ", shape_str(r.sizes()));
  native::copy_into(*this, r);
  return *this;
}

Tensor& Tensor::clamp_(double lo, double hi) {
  check_inplace(*this, "clamp_");
  native::copy_into(*this, native::clamp(detach(), lo, hi));
  return *this;
}

Tensor& Tensor::masked_fill_(const Tensor& mask, double value) {
  check_inplace(*this, "masked_fill_");
  native::copy_into(*this, native::where(mask, full({}, value, TensorOptions(dtype())), detach()));
  return *this;
}

Tensor& Tensor::uniform_(double from, double to, Generator* gen) {
  check_inplace(*this, "uniform_");
  RNNKIT_CHECK(from <= to, "uniform_: expects to return a [from, to) range, but found from=", from,
               " > to=", to);
  Generator& g = gen ? *gen : default_generator();
  Tensor tmp = empty(sizes(), TensorOptions(dtype()));
  dispatch_floating(dtype(), "uniform_", [&](auto tag) {
    using T = decltype(tag);
    T* p = tmp.data_ptr<T>();
    const int64_t n = tmp.numel();
    for (int64_t i = 0; i < n; ++i) {
      const double u = std::is_same<T, float>::value ? g.next_float() : g.next_double();
      p[i] = static_cast<T>(from + (to - from) * u);
    }
  });
  native::copy_into(*this, tmp);
  return *this;
}

Tensor& Tensor::normal_(double mean, double std, Generator* gen) {
  check_inplace(*this, "normal_");
  RNNKIT_CHECK(std >= 0.0, "normal_: expects std >= 0.0, but found std ", std);
  Generator& g = gen ? *gen : default_generator();
  Tensor tmp = empty(sizes(), TensorOptions(dtype()));
  dispatch_floating(dtype(), "normal_", [&](auto tag) {
    using T = decltype(tag);
    T* p = tmp.data_ptr<T>();
    const int64_t n = tmp.numel();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(mean + std * g.next_normal());
  });
  native::copy_into(*this, tmp);
  return *this;
}

// ---------------------------------------------------------------- factories

Tensor empty(const Shape& shape, TensorOptions options) {
  check_shape_arg(shape, "empty");
  RNNKIT_CHECK(options.dtype_ != Dtype::BFloat16 && options.dtype_ != Dtype::Float16,
               "empty: dtype ", dtype_name(options.dtype_), " is not supported yet");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(
      static_cast<size_t>(shape_numel(shape)) * element_size(options.dtype_), options.device_);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = options.dtype_;
  Tensor t(std::move(impl));
  if (options.requires_grad_) t.requires_grad_(true);
  return t;
}

Tensor full(const Shape& shape, double value, TensorOptions options) {
  const bool rg = options.requires_grad_;
  options.requires_grad_ = false;
  Tensor t = empty(shape, options);
  dispatch_all(t.dtype(), "full", [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data_ptr<T>();
    const T v = static_cast<T>(value);
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = v;
  });
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), TensorOptions(t.dtype())); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), TensorOptions(t.dtype())); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), TensorOptions(t.dtype())); }
Tensor full_like(const Tensor& t, double value) {
  return full(t.sizes(), value, TensorOptions(t.dtype()));
}
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

Tensor eye(int64_t n, TensorOptions options) {
  RNNKIT_CHECK(n >= 0, "eye: n must be greater or equal to 0, got ", n);
  const bool rg = options.requires_grad_;
  options.requires_grad_ = false;
  Tensor t = zeros({n, n}, options);
  dispatch_all(t.dtype(), "eye", [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i) p[i * n + i] = T(1);
  });
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor arange(double start, double end, double step, TensorOptions options) {
  RNNKIT_CHECK(step != 0.0, "arange: step must be nonzero");
  RNNKIT_CHECK((step > 0 && end >= start) || (step < 0 && end <= start),
               "arange: upper bound and larger bound inconsistent with step sign (start=", start,
               ", end=", end, ", step=", step, ")");
  const int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  Tensor t = empty({n}, options);
  dispatch_all(t.dtype(), "arange", [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  return t;
}

Tensor arange(int64_t end, TensorOptions options) {
  return arange(0.0, static_cast<double>(end), 1.0, options);
}

Tensor rand(const Shape& shape, TensorOptions options, Generator* gen) {
  const bool rg = options.requires_grad_;
  options.requires_grad_ = false;
  Tensor t = empty(shape, options);
  t.uniform_(0.0, 1.0, gen);
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor randn(const Shape& shape, TensorOptions options, Generator* gen) {
  const bool rg = options.requires_grad_;
  options.requires_grad_ = false;
  Tensor t = empty(shape, options);
  t.normal_(0.0, 1.0, gen);
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor randperm(int64_t n, Generator* gen) {
  RNNKIT_CHECK(n >= 0, "randperm: n must be non-negative, got ", n);
  Generator& g = gen ? *gen : default_generator();
  Tensor t = arange(n);
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(g.next_below(static_cast<uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  return t;
}

template <typename T>
static Tensor from_vector_impl(const std::vector<T>& data, const Shape& shape, TensorOptions options,
                               Dtype native_dtype) {
  Shape s = shape.empty() ? Shape{static_cast<int64_t>(data.size())} : shape;
  RNNKIT_CHECK(shape_numel(s) == static_cast<int64_t>(data.size()), "from_vector: shape ",
               shape_str(s), " is invalid for input of size ", data.size());
  const bool rg = options.requires_grad_;
  Tensor t = empty(s, TensorOptions(native_dtype));
  if (!data.empty()) std::memcpy(t.raw_data(), data.data(), data.size() * sizeof(T));
  if (options.dtype_ != native_dtype) t = t.to(options.dtype_);
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor from_vector(const std::vector<float>& data, const Shape& shape, TensorOptions options) {
  return from_vector_impl(data, shape, options, Dtype::Float32);
}
Tensor from_vector(const std::vector<double>& data, const Shape& shape, TensorOptions options) {
  return from_vector_impl(data, shape, options, Dtype::Float64);
}
Tensor from_vector(const std::vector<int64_t>& data, const Shape& shape, TensorOptions options) {
  return from_vector_impl(data, shape, options, Dtype::Int64);
}
Tensor tensor(std::initializer_list<float> data, TensorOptions options) {
  return from_vector(std::vector<float>(data), {}, options);
}
Tensor tensor(std::initializer_list<double> data, TensorOptions options) {
  return from_vector(std::vector<double>(data), {}, options);
}
Tensor tensor(std::initializer_list<int64_t> data, TensorOptions options) {
  return from_vector(std::vector<int64_t>(data), {}, options);
}

Tensor from_blob(void* data, const Shape& shape, Dtype dtype) {
  check_shape_arg(shape, "from_blob");
  Tensor t = empty(shape, TensorOptions(dtype));
  std::memcpy(t.raw_data(), data, t.nbytes());
  return t;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.sizes() != b.sizes()) return false;
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return false;
    if (std::abs(va[i] - vb[i]) > atol + rtol * std::abs(vb[i])) return false;
  }
  return true;
}

bool equal(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.dtype() != b.dtype()) return false;
  return a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace rnnkit
