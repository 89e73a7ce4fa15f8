#pragma once
// Hands the groups of one time step to the threads of a persistent OpenMP region,
// one synchronisation per step instead of a fork/join: group g is thread g's (its
// slice of the weights stays in that core's cache), step s may start once every
// group of step s-1 is done, and the threads meet only through two cache lines
// per group (the step it was claimed for, the step it finished).
//
// A thread that finds a group of the current step still unclaimed after a grace
// period (its owner is late: on a shared machine, usually descheduled; the grace
// grows with the length of the groups' work, so that a slow start of a long step
// is not mistaken for absence) claims and runs it itself, so that one preempted
// thread stalls the others for microseconds rather than for the rest of a
// scheduler time slice; while the owner stays away it does so without waiting. A group is run exactly once per
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

  // A thread's own state across steps; one per thread, fresh (default) at the
  // start of the region.
  struct ThreadState {
    // Whether it ran another thread's group in its previous step; if so it does
    // not wait for the grace period again, until a step goes by without taking
    // over.
    bool stole = false;
    // Time its own group took, measured on some steps (see step()).
    int64_t run_ns = 0;
  };

  // Called by every thread t of the region for steps 1, 2, ... in order; returns
  // when all groups of `step` are done. run(g) does group g of this step.
  template <class Run>
  void step(int t, int64_t step, ThreadState& state, Run&& run) {
    if (all_done(step)) return;  // done by the others
    // The clock is read only where it is needed, as a read costs about as much
    // as the step's synchronisation itself on some virtual machines: the length
    // of the thread's own group on the first steps and every 32nd (steps are
    // alike), and the start of a wait once it has lasted 16 spins.
    const bool timed = step <= 2 || step % 32 == 0;
    const int64_t start = timed ? now_ns() : 0;
    if (t < groups_ && claim(t, step)) finish(run, t, step);
    if (timed) state.run_ns = now_ns() - start;
    // A group still unclaimed this long after its peers started is late: half
    // the time this thread's own group takes (the owner would have started by
    // then), and at least kGraceNs. No wait at all while the owner stays away.
    const int64_t grace = state.stole ? 0 : std::max(kGraceNs, state.run_ns / 2);
    state.stole = false;
    int64_t waiting_since = 0;
    for (int spins = 0; !all_done(step); ++spins) {
      bool late = grace == 0;
      if (!late && spins % 16 == 15) {
        const int64_t now = now_ns();
        if (waiting_since == 0) waiting_since = now;
        late = now - waiting_since >= grace;
      }
      if (late)
        for (int g = 0; g < groups_; ++g)
          if (g != t && claimed_[g].step.load(std::memory_order_relaxed) == step - 1 && claim(g, step)) {
            finish(run, g, step);
            state.stole = true;
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
  void finish(Run& run, int g, int64_t step) {
    run(g);
    done_[g].step.store(step, std::memory_order_release);
  }
  bool all_done(int64_t step) const {
    for (int g = 0; g < groups_; ++g)
      if (done_[g].step.load(std::memory_order_acquire) < step) return false;
    return true;
  }
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }

  struct alignas(64) Counter {
    std::atomic<int64_t> step{0};
  };
  const int groups_;
  // Per group, each on its own cache line: the last step it was claimed for
  // (written by the claiming thread), and the last step it finished (written by
  // the thread that ran it, read by all). A finished group is published with a
  // plain store to a line no other thread writes, so finishing costs its runner
  // nothing and the others one cache-line transfer, instead of a read-modify-
  // write on one shared counter that every thread's spinning pulls back and forth.
  Counter claimed_[kMaxGroups];
  Counter done_[kMaxGroups];
};

}  // namespace rnnkit::kernels::cpu::detail
