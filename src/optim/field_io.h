#pragma once
// Saving and loading FieldVisitor fields (optimizer hyperparameters,
// scheduler state) as tensors of a StateDict: reals and flags as 0-d float64,
// counts as 0-d int64, integer lists as 1-D int64.
#include <set>
#include <string>

#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim::detail {

class FieldWriter final : public FieldVisitor {
 public:
  FieldWriter(StateDict& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  void operator()(const std::string& name, double& value) override;
  void operator()(const std::string& name, bool& value) override;
  void operator()(const std::string& name, int64_t& value) override;
  void operator()(const std::string& name, std::vector<int64_t>& value) override;

 private:
  StateDict& out_;
  std::string prefix_;
};

// Reads every visited field from `in` (key = prefix + name) and records the
// keys it used in `used`. Throws rnnkit::Error naming `owner` and the key for
// a missing key or a tensor of the wrong shape or value. With apply=false it
// only checks, so a load can validate everything before changing anything.
class FieldReader final : public FieldVisitor {
 public:
  FieldReader(const StateDict& in, std::string prefix, std::string owner, bool apply, std::set<std::string>* used)
      : in_(in), prefix_(std::move(prefix)), owner_(std::move(owner)), apply_(apply), used_(used) {}
  void operator()(const std::string& name, double& value) override;
  void operator()(const std::string& name, bool& value) override;
  void operator()(const std::string& name, int64_t& value) override;
  void operator()(const std::string& name, std::vector<int64_t>& value) override;

 private:
  const Tensor& find(const std::string& name, bool scalar);
  const StateDict& in_;
  std::string prefix_, owner_;
  bool apply_;
  std::set<std::string>* used_;
};

// Throws rnnkit::Error listing the keys of `state` that start with `prefix`
// (all keys for an empty prefix) and are not in `used`.
void check_no_unexpected_keys(const StateDict& state, const std::set<std::string>& used, const std::string& prefix,
                              const std::string& owner);

}  // namespace rnnkit::optim::detail
