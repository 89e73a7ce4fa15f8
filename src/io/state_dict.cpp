// StateDict: ordered name -> tensor map.
#include "rnnkit/state_dict.h"

namespace rnnkit {

void StateDict::insert(const std::string& key, const Tensor& value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second].second = value;
    return;
  }
  index_[key] = items_.size();
  items_.emplace_back(key, value);
}

const Tensor* StateDict::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const Tensor& StateDict::at(const std::string& key) const {
  const Tensor* t = find(key);
  RNNKIT_CHECK(t != nullptr, "StateDict: no entry named '", key, "'");
  return *t;
}

Tensor& StateDict::at(const std::string& key) {
  auto it = index_.find(key);
  RNNKIT_CHECK(it != index_.end(), "StateDict: no entry named '", key, "'");
  return items_[it->second].second;
}

bool StateDict::erase(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_[items_[i].first] = i;
  return true;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> k;
  for (const auto& it : items_) k.push_back(it.first);
  return k;
}

}  // namespace rnnkit
