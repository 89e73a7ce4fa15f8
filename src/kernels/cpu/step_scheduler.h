#pragma once
// Hands the groups of one time step to the threads of a persistent OpenMP region,
// one synchronisation per step instead of a fork/join: group g is thread g's (its
// slice of the weights stays in that core's cache), step s may start once every
// group of step s-1 is done, and the threads meet only through two cache lines
// (one counter per group, one for completed work).
//
// A thread that finds a group of the current step still unclaimed after a grace
// period (its owner is late: on a shared machine, usually descheduled; the grace
// grows with the length of the groups' work, so that a slow start of a long step
// is not mistaken for absence) claims and runs it itself, so that one preempted thread stalls the others for
// microseconds rather than for the rest of a scheduler time slice; while the
// owner stays away it does so without waiting. A group is run exactly once per
// step either way, and its result does not depend on which thread ran it.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace rnnkit::kernels::cpu::detail {

class StepScheduler {
 public:
  static constexpr int kMaxGroups = 64;

  explicit StepScheduler(int groups) : groups_(groups) {}

  // Called by every thread t of the region for steps 1, 2, ... in order; returns
  // when all groups of `step` are done. run(g) does group g of this step.
  // `stole` is the calling thread's own flag (false at first): whether it ran
  // another thread's group in its previous step; if so it does not wait for the
  // grace period again, until a step goes by without taking over.
  template <class Run>
  void step(int t, int64_t step, bool& stole, Run&& run) {
    const int64_t target = step * groups_;
    if (done_.load(std::memory_order_acquire) >= target) return;  // done by the others
    const int64_t start = now_ns();
    if (t < groups_ && claim(t, step)) finish(run, t);
    const int64_t finished = now_ns();
    // A group still unclaimed this long after its peers started is late: half
    // the time this thread's own group took (the owner would have started by
    // then), and at least kGraceNs. No wait at all while the owner stays away.
    const int64_t grace = stole ? 0 : std::max(kGraceNs, (finished - start) / 2);
    stole = false;
    for (int spins = 0; done_.load(std::memory_order_acquire) < target; ++spins) {
      if (grace == 0 || (spins % 16 == 0 && now_ns() - finished >= grace))
        for (int g = 0; g < groups_; ++g)
          if (g != t && claimed_[g].step.load(std::memory_order_relaxed) == step - 1 && claim(g, step)) {
            finish(run, g);
            stole = true;
          }
      if (spins < kYieldSpins)
        pause();
      else
        sched_yield();
    }
  }

 private:
  static constexpr int64_t kGraceNs = 5000;
  // Yielding the core after about 1 ms of waiting for a group someone else runs.
  static constexpr int kYieldSpins = 32768;

  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  bool claim(int g, int64_t step) {
    int64_t expected = step - 1;
    return claimed_[g].step.compare_exchange_strong(expected, step, std::memory_order_acq_rel);
  }
  template <class Run>
  void finish(Run& run, int g) {
    run(g);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }

  struct alignas(64) Claimed {
    std::atomic<int64_t> step{0};  // the last step this group was claimed for
  };
  const int groups_;
  alignas(64) std::atomic<int64_t> done_{0};  // groups finished, over all steps
  Claimed claimed_[kMaxGroups];
};

}  // namespace rnnkit::kernels::cpu::detail
