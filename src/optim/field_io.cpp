#include "optim/field_io.h"

#include <cmath>

namespace rnnkit::optim::detail {

void FieldWriter::operator()(const std::string& name, double& value) {
  out_.insert(prefix_ + name, scalar_tensor(value, kFloat64));
}
void FieldWriter::operator()(const std::string& name, bool& value) {
  out_.insert(prefix_ + name, scalar_tensor(value ? 1.0 : 0.0, kFloat64));
}
void FieldWriter::operator()(const std::string& name, int64_t& value) {
  Tensor t = empty({}, kInt64);
  *t.data_ptr<int64_t>() = value;
  out_.insert(prefix_ + name, t);
}
void FieldWriter::operator()(const std::string& name, std::vector<int64_t>& value) {
  out_.insert(prefix_ + name, from_vector(value, {static_cast<int64_t>(value.size())}));
}

const Tensor& FieldReader::find(const std::string& name, bool scalar) {
  const std::string key = prefix_ + name;
  const Tensor* t = in_.find(key);
  RNNKIT_CHECK(t != nullptr, owner_, ".load_state_dict: missing key \"", key, "\"");
  if (scalar)
    RNNKIT_CHECK(t->dim() == 0, owner_, ".load_state_dict: \"", key, "\" must be a 0-d tensor, got shape ",
                 shape_str(t->sizes()));
  else
    RNNKIT_CHECK(t->dim() == 1 && t->dtype() == kInt64, owner_, ".load_state_dict: \"", key,
                 "\" must be a 1-D int64 tensor, got shape ", shape_str(t->sizes()), " of ", dtype_name(t->dtype()));
  if (used_) used_->insert(key);
  return *t;
}

void FieldReader::operator()(const std::string& name, double& value) {
  const double v = find(name, true).item();
  if (apply_) value = v;
}
void FieldReader::operator()(const std::string& name, bool& value) {
  const double v = find(name, true).item();
  RNNKIT_CHECK(v == 0.0 || v == 1.0, owner_, ".load_state_dict: \"", prefix_ + name,
               "\" is a flag and must be 0 or 1, got ", v);
  if (apply_) value = v != 0.0;
}
void FieldReader::operator()(const std::string& name, int64_t& value) {
  const Tensor& t = find(name, true);
  int64_t v;
  if (t.dtype() == kInt64) {
    v = *t.data_ptr<int64_t>();
  } else {
    const double d = t.item();
    RNNKIT_CHECK(std::isfinite(d) && d == std::floor(d), owner_, ".load_state_dict: \"", prefix_ + name,
                 "\" must hold an integer, got ", d);
    v = static_cast<int64_t>(d);
  }
  if (apply_) value = v;
}
void FieldReader::operator()(const std::string& name, std::vector<int64_t>& value) {
  std::vector<int64_t> v = find(name, false).to_vector<int64_t>();
  if (apply_) value = std::move(v);
}

void check_no_unexpected_keys(const StateDict& state, const std::set<std::string>& used, const std::string& prefix,
                              const std::string& owner) {
  std::string unexpected;
  for (const auto& item : state) {
    const std::string& key = item.first;
    if (key.compare(0, prefix.size(), prefix) != 0 || used.count(key)) continue;
    unexpected += (unexpected.empty() ? "\"" : ", \"") + key + "\"";
  }
  RNNKIT_CHECK(unexpected.empty(), owner, ".load_state_dict: unexpected key(s) in state_dict: ", unexpected);
}

}  // namespace rnnkit::optim::detail
