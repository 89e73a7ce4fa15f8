#pragma once
// StateDict: name -> tensor in insertion order (PyTorch's OrderedDict), the
// unit that moves between modules, optimizers and files.
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rnnkit/tensor.h"

namespace rnnkit {

class StateDict {
 public:
  using Item = std::pair<std::string, Tensor>;

  // Inserts or replaces (keeping the original position on replace).
  void insert(const std::string& key, const Tensor& value);
  bool contains(const std::string& key) const { return index_.count(key) != 0; }
  // Throws rnnkit::Error naming the key when absent.
  const Tensor& at(const std::string& key) const;
  Tensor& at(const std::string& key);
  const Tensor* find(const std::string& key) const;
  bool erase(const std::string& key);
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  std::vector<std::string> keys() const;
  const std::vector<Item>& items() const { return items_; }
  std::vector<Item>::const_iterator begin() const { return items_.begin(); }
  std::vector<Item>::const_iterator end() const { return items_.end(); }

 private:
  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace rnnkit
