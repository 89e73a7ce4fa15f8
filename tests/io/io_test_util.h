#pragma once
// Helpers shared by the io tests: a temporary folder, random state_dicts,
// bitwise tensor comparison, and "throws rnnkit::Error mentioning ...".
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include "rnnkit/io/checkpoint.h"
#include "rnnkit/io/safetensors.h"
#include "rnnkit/rnnkit.h"

namespace rnnkit::iotest {

// A fresh folder under $TMPDIR (or /tmp), removed with its files at scope exit.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/rnnkit-io-XXXXXX";
    RNNKIT_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp failed: ", std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  static void remove_tree(const std::string& p) {
    if (DIR* d = ::opendir(p.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") remove_tree(p + "/" + n);
      }
      ::closedir(d);
      ::rmdir(p.c_str());
    } else {
      ::unlink(p.c_str());
    }
  }

 private:
  std::string path_;
};

inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Same dtype, shape and bytes (so NaN payloads and -0.0 count).
inline ::testing::AssertionResult bit_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << "dtype " << a.dtype() << " != " << b.dtype();
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.sizes()) << " != " << shape_str(b.sizes());
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  if (ca.nbytes() > 0 && std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) != 0)
    return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult same_state(const StateDict& got, const StateDict& want) {
  if (got.keys() != want.keys()) {
    std::string g, w;
    for (auto& k : got.keys()) g += k + " ";
    for (auto& k : want.keys()) w += k + " ";
    return ::testing::AssertionFailure() << "keys [" << g << "] != [" << w << "]";
  }
  for (const auto& [k, v] : want) {
    auto r = bit_equal(got.at(k), v);
    if (!r) return ::testing::AssertionFailure() << k << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

// Runs f; passes when it throws rnnkit::Error whose message holds every part.
template <typename F>
::testing::AssertionResult throws_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-rnnkit exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

inline int64_t pick(Generator& g, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(g.next_below(static_cast<uint64_t>(hi - lo + 1)));
}

// A state_dict with every dtype, 0-d and empty tensors, a non-contiguous
// view, and float specials (NaN, inf, -0.0), in a random order of sizes.
inline StateDict random_state(Generator& g, int64_t max_dim = 6) {
  StateDict sd;
  auto shape = [&](int64_t min_rank) {
    Shape s(pick(g, min_rank, 3));
    for (auto& d : s) d = pick(g, 1, max_dim);
    return s;
  };
  sd.insert("encoder.weight", randn(shape(2), kFloat32, &g));
  sd.insert("encoder.bias", randn(shape(1), kFloat32, &g));
  sd.insert("lstm.weight_ih_l0", randn(shape(2), kFloat64, &g));
  sd.insert("steps", scalar_tensor(static_cast<double>(pick(g, 0, 1000)), kInt64));
  sd.insert("scale", scalar_tensor(0.5, kFloat32));
  std::vector<int64_t> bits(static_cast<size_t>(pick(g, 1, 9)));
  for (auto& b : bits) b = static_cast<int64_t>(g.next_below(2));
  sd.insert("mask", from_vector(bits).to(kBool));
  sd.insert("empty", zeros({0, pick(g, 1, 4)}, kFloat32));
  sd.insert("indices", randperm(pick(g, 1, 12), &g));
  Tensor m = randn({pick(g, 2, 5), pick(g, 2, 5)}, kFloat32, &g);
  sd.insert("decoder.weight_t", m.t());  // stored contiguous, same values
  std::vector<float> specials = {NAN, INFINITY, -INFINITY, -0.0f, 1e-45f, 3.4e38f};
  sd.insert("specials", from_vector(specials));
  return sd;
}

// A checkpoint with every field set (random_state as the model).
inline io::TrainingCheckpoint random_checkpoint(Generator& g, int64_t max_dim = 6) {
  io::TrainingCheckpoint c;
  c.model = random_state(g, max_dim);
  c.optimizer.insert("state.0.step", scalar_tensor(static_cast<double>(pick(g, 1, 100)), kFloat32));
  c.optimizer.insert("state.0.exp_avg", randn({pick(g, 1, max_dim), 3}, kFloat32, &g));
  c.optimizer.insert("param_groups.0.lr", scalar_tensor(1e-3, kFloat64));
  c.optimizer.insert("param_groups.0.betas", from_vector(std::vector<double>{0.9, 0.999}));
  c.scheduler.insert("last_epoch", scalar_tensor(static_cast<double>(pick(g, 0, 50)), kInt64));
  c.extra.insert("best_loss", scalar_tensor(1.25, kFloat64));
  c.epoch = pick(g, 0, 1000);
  c.step = pick(g, 0, 1'000'000'000) * 1000;
  Generator rng(g.next_u64());
  rng.next_normal();  // leaves a spare normal in the state
  c.rng = rng.state();
  c.data.batch_index = pick(g, 0, 500);
  c.data.shuffle_seed = g.next_u64();
  c.data.shuffle_rng = Generator(g.next_u64()).state();
  c.data.permutation = randperm(pick(g, 1, 20), &g);
  c.metadata["config"] = R"({"model": "lstm", "hidden_size": 32, "layers": 2})";
  c.metadata["git"] = "6dc6e31";
  return c;
}

}  // namespace rnnkit::iotest
