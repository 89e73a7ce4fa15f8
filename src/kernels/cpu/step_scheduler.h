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
//
// A group may also be split into parts (set_parts), of which a thread done with
// its own group runs the last ones for a runner that is behind; each part, too,
// runs exactly once per step, with the same result whichever thread runs it.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace rnnkit::kernels::cpu::detail {

class StepScheduler {
 public:
  static constexpr int kMaxGroups = 64;

  explicit StepScheduler(int groups) : groups_(groups) {
    for (int g = 0; g < kMaxGroups; ++g) set_parts(g, 1);
  }

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

  // Groups in parts. A group may be split into parts (its blocks of units) that
  // other threads help with: whoever runs the group takes the parts from the
  // front with take_front, and a thread done with its own group takes the last
  // ones, while at least two are left, and runs them through step's run_part.
  // So when one core is slower for a while (a neighbour on the host, a busier
  // cache) the other takes over the end of its work instead of waiting for it.
  // Parts default to 1: the group is run whole. At most kMaxParts.
  static constexpr int kMaxParts = 0xffff;
  // Call before any step.
  void set_parts(int g, int parts) {
    parts_[g] = std::clamp(parts, 1, kMaxParts);
    done_[g].step.store(parts_[g], std::memory_order_relaxed);  // step 0 done: see finish
  }

  // The next parts of group g for its runner, counted from the front: [*first,
  // *first + count), count 0 when every part is taken. A quarter of those left
  // at a time (at least one), so that a step takes a few atomic operations per
  // group rather than one per part (each is a full fence, which likely stalls
  // the weight stream: one per part was slower), while the last parts stay free
  // for a helper.
  int take_front(int g, int64_t step, int* first) {
    std::atomic<uint64_t>& word = taken_[g].word;
    uint64_t old = word.load(std::memory_order_relaxed);
    for (;;) {
      const Taken k = unpack(old, step);
      const int left = parts_[g] - k.front - k.back;
      if (left <= 0) return 0;
      const int count = (left + 3) / 4;
      if (word.compare_exchange_weak(old, pack(step, k.front + count, k.back), std::memory_order_relaxed)) {
        *first = k.front;
        return count;
      }
    }
  }

  // Called by every thread t of the region for steps 1, 2, ... in order; returns
  // when all groups of `step` are done. run(g) does group g of this step.
  template <class Run>
  void step(int t, int64_t step, ThreadState& state, Run&& run) {
    this->step(t, step, state, run, NoParts{});
  }

  // The same, for groups split into parts (set_parts): run(g) takes its parts
  // with take_front, and run_part(g, i) runs part i of group g (counted from the
  // front) for a thread that has taken it from the back.
  template <class Run, class RunPart>
  void step(int t, int64_t step, ThreadState& state, Run&& run, RunPart&& run_part) {
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
    // Groups of this step that have no part left to take.
    uint64_t exhausted = 0;
    for (int spins = 0; !all_done(step); ++spins) {
      if constexpr (!std::is_same_v<std::decay_t<RunPart>, NoParts>) help(step, run_part, exhausted);
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

  struct NoParts {};
  struct Taken {
    int front, back;
  };
  // A group's taken parts: the step in the top 32 bits (a word of an earlier
  // step means none taken yet), then those taken from the front, then from the back.
  static uint64_t pack(int64_t step, int front, int back) {
    return (static_cast<uint64_t>(step) << 32) | (static_cast<uint64_t>(front) << 16) | static_cast<uint64_t>(back);
  }
  // Whether the word is of this step: its runner has taken a part.
  static bool of_step(uint64_t word, int64_t step) {
    return (word >> 32) == (static_cast<uint64_t>(step) & 0xffffffffu);
  }
  static Taken unpack(uint64_t word, int64_t step) {
    if (!of_step(word, step)) return {0, 0};
    return {static_cast<int>((word >> 16) & 0xffff), static_cast<int>(word & 0xffff)};
  }

  // Takes the parts left of the groups other threads are running, from the back,
  // and runs them (the caller runs none: it is waiting for the step's end). Only
  // a group whose runner has taken its first part is helped (one not started yet
  // is the late-owner path's), and a group with nothing left is not looked at
  // again this step, so that its runner's next take finds its counter's line
  // still in its own cache.
  template <class RunPart>
  void help(int64_t step, RunPart& run_part, uint64_t& exhausted) {
    for (int g = 0; g < groups_; ++g) {
      // Its own group too: another thread may have taken it over.
      if (parts_[g] < 2 || (exhausted >> (g & 63) & 1) != 0) continue;
      if (claimed_[g].step.load(std::memory_order_relaxed) != step) continue;
      std::atomic<uint64_t>& word = taken_[g].word;
      int ran = 0;
      uint64_t old = word.load(std::memory_order_relaxed);
      for (;;) {
        if (!of_step(old, step)) break;  // not started
        const Taken k = unpack(old, step);
        if (k.front + k.back + 2 > parts_[g]) {
          exhausted |= uint64_t{1} << (g & 63);
          break;
        }
        if (!word.compare_exchange_weak(old, pack(step, k.front, k.back + 1), std::memory_order_acquire))
          continue;
        run_part(g, parts_[g] - 1 - k.back);
        ++ran;
        old = word.load(std::memory_order_relaxed);
      }
      if (ran > 0) done_[g].step.fetch_add(ran, std::memory_order_release);
    }
  }

  bool claim(int g, int64_t step) {
    int64_t expected = step - 1;
    return claimed_[g].step.compare_exchange_strong(expected, step, std::memory_order_acq_rel);
  }
  template <class Run>
  void finish(Run& run, int g, int64_t step) {
    run(g);
    // done_[g] reaches step * kScale + parts when every part of the step is done:
    // from (step - 1) * kScale + parts, the runner adds kScale - parts + its own
    // parts and each helper the parts it ran. With no part taken by a helper (no
    // helper can take one any more: the runner's own last take found none left)
    // that is a plain store.
    const Taken k = unpack(taken_[g].word.load(std::memory_order_relaxed), step);
    if (k.back == 0)
      done_[g].step.store(step * kScale + parts_[g], std::memory_order_release);
    else
      done_[g].step.fetch_add(kScale - parts_[g] + k.front, std::memory_order_release);
  }
  bool all_done(int64_t step) const {
    for (int g = 0; g < groups_; ++g)
      if (done_[g].step.load(std::memory_order_acquire) < step * kScale + parts_[g]) return false;
    return true;
  }
  static constexpr int64_t kScale = int64_t{1} << 16;
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
  // Per group, on its own line: the parts taken this step (see pack). Written by
  // its runner a few times per step (take_front), and by a helper only when the
  // runner is behind.
  struct alignas(64) TakenWord {
    std::atomic<uint64_t> word{0};
  };
  TakenWord taken_[kMaxGroups];
  int parts_[kMaxGroups] = {};
};

}  // namespace rnnkit::kernels::cpu::detail
