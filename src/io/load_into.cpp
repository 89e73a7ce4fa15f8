// Checking a loaded state_dict against the one it is meant to replace, and
// loading a file into a module, with errors that name the file and each key.
#include <sstream>

#include "rnnkit/io/safetensors.h"
#include "rnnkit/nn/module.h"

namespace rnnkit::io {

void check_state_dict(const StateDict& expected, const StateDict& loaded, const std::string& source, bool strict) {
  std::vector<std::string> missing, unexpected;
  std::ostringstream mismatches;
  for (const auto& [key, want] : expected) {
    const Tensor* got = loaded.find(key);
    if (got == nullptr) {
      missing.push_back(key);
    } else if (got->sizes() != want.sizes()) {
      mismatches << "\n\tsize mismatch for " << key << ": the file has shape " << shape_str(got->sizes())
                 << ", the model has " << shape_str(want.sizes()) << ".";
    } else if (got->dtype() != want.dtype()) {
      mismatches << "\n\tdtype mismatch for " << key << ": the file has " << dtype_name(got->dtype())
                 << ", the model has " << dtype_name(want.dtype()) << ".";
    }
  }
  for (const auto& kv : loaded)
    if (!expected.contains(kv.first)) unexpected.push_back(kv.first);
  auto list = [](const std::vector<std::string>& keys) {
    std::string s;
    for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", \"" : "\"") + keys[i] + "\"";
    return s;
  };
  std::ostringstream err;
  if (strict && !unexpected.empty()) err << "\n\tUnexpected key(s) in state_dict: " << list(unexpected) << ".";
  if (strict && !missing.empty()) err << "\n\tMissing key(s) in state_dict: " << list(missing) << ".";
  err << mismatches.str();
  RNNKIT_CHECK(err.str().empty(), "Error(s) in loading state_dict from '", source, "':", err.str());
}

void load_into(nn::Module& module, const std::string& path, bool strict) {
  SafetensorsContent content = load_safetensors(path);
  check_state_dict(module.state_dict(), content.tensors, path, strict);
  module.load_state_dict(content.tensors, strict);
}

}  // namespace rnnkit::io
