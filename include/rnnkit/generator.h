#pragma once
// One seeded random generator API. Every random op (rand, randn, uniform_,
// normal_, dropout masks, parameter initialisation, data shuffling) takes an
// optional Generator*; null means the global default generator, which
// rnnkit::manual_seed reseeds. The state is a plain value that can be saved in
// a checkpoint and restored to continue the exact same stream.
#include <array>
#include <cstdint>

namespace rnnkit {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed5eedULL) { manual_seed(seed); }
  void manual_seed(uint64_t seed);
  uint64_t seed() const { return seed_; }

  uint64_t next_u64();
  // The next n values of next_u64 into out (the same stream, without a call each).
  void fill_u64(uint64_t* out, int64_t n);
  // Uniform in [0, 1) with 24 (float) or 53 (double) random bits.
  float next_float();
  double next_double();
  // Standard normal (Box-Muller; the spare value is kept in the state).
  double next_normal();
  // Uniform integer in [0, n).
  uint64_t next_below(uint64_t n);

  struct State {
    std::array<uint64_t, 4> s{};
    uint64_t seed = 0;
    double spare_normal = 0.0;
    bool has_spare = false;
  };
  State state() const { return {s_, seed_, spare_, has_spare_}; }
  void set_state(const State& st) {
    s_ = st.s;
    seed_ = st.seed;
    spare_ = st.spare_normal;
    has_spare_ = st.has_spare;
  }

 private:
  std::array<uint64_t, 4> s_{};
  uint64_t seed_ = 0;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace rnnkit
