// Tests of the per-step scheduler of the small-batch kernels
// (src/kernels/cpu/step_scheduler.h): every group runs exactly once per step,
// no group of a step starts before every group of the step before has finished,
// no thread leaves a step before all of its groups are done, and the group of a
// thread that is absent is run by another one. Groups split into parts: every
// part runs once per step, the runner takes them from the front and helpers the
// last ones, and a slow group's last parts are taken by a thread done with its own. Plain std::threads stand in for
// the OpenMP team; the scheduler does not depend on which runtime made them.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "kernels/cpu/step_scheduler.h"

namespace {

using rnnkit::kernels::cpu::detail::StepScheduler;

// Per step and group: how often it ran and which thread ran it, and what each
// run and each return from step() saw of the others.
struct Record {
  Record(int64_t steps, int groups)
      : groups(groups),
        runs(std::make_unique<std::atomic<int>[]>((steps + 1) * groups)),
        runner(std::make_unique<std::atomic<int>[]>((steps + 1) * groups)) {}
  std::atomic<int>& runs_of(int64_t step, int g) { return runs[step * groups + g]; }
  std::atomic<int>& runner_of(int64_t step, int g) { return runner[step * groups + g]; }
  bool step_complete(int64_t step) {
    for (int g = 0; g < groups; ++g)
      if (runs_of(step, g).load() != 1) return false;
    return true;
  }
  const int groups;
  std::unique_ptr<std::atomic<int>[]> runs, runner;
  std::atomic<int> started_early{0}, left_early{0};
};

// Starts threads 0 .. threads-1, each walking steps 1 .. steps with a fresh
// ThreadState through step_fn(t, s, state); thread `late` (if >= 0) starts
// only after late_ms.
template <class StepFn>
void walk_threads(int threads, int64_t steps, int late, int late_ms, StepFn&& step_fn) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      if (t == late) std::this_thread::sleep_for(std::chrono::milliseconds(late_ms));
      StepScheduler::ThreadState state;
      for (int64_t s = 1; s <= steps; ++s) step_fn(t, s, state);
    });
  for (std::thread& th : pool) th.join();
}

// Threads 0 .. threads-1 walk steps 1 .. steps; thread `late` (if >= 0) starts
// only after late_ms, long after the others have had to run its group.
void run_walk(int threads, int groups, int64_t steps, int late, int late_ms, Record& rec) {
  StepScheduler scheduler(groups);
  walk_threads(threads, steps, late, late_ms, [&](int t, int64_t s, StepScheduler::ThreadState& state) {
    scheduler.step(t, s, state, [&](int g) {
      if (s > 1 && !rec.step_complete(s - 1)) rec.started_early.fetch_add(1);
      rec.runs_of(s, g).fetch_add(1);
      rec.runner_of(s, g).store(t);
      // Some work, a little different per group, so that finishing order varies.
      volatile double x = 0;
      for (int i = 0; i < 50 * (g + 1); ++i) x = x + i;
    });
    if (!rec.step_complete(s)) rec.left_early.fetch_add(1);
  });
}

TEST(StepScheduler, EveryGroupOncePerStepInOrder) {
  for (int groups : {1, 2, 3, 5}) {
    SCOPED_TRACE(testing::Message() << groups << " groups");
    const int64_t steps = 3000;
    Record rec(steps, groups);
    run_walk(groups, groups, steps, -1, 0, rec);
    for (int64_t s = 1; s <= steps; ++s)
      for (int g = 0; g < groups; ++g) ASSERT_EQ(rec.runs_of(s, g).load(), 1) << "step " << s << " group " << g;
    EXPECT_EQ(rec.started_early.load(), 0) << "a group started before the step before was complete";
    EXPECT_EQ(rec.left_early.load(), 0) << "a thread left a step before all its groups were done";
  }
}

TEST(StepScheduler, AbsentThreadsGroupIsRunByAnother) {
  // Thread 1 arrives 200 ms late: thread 0 must not wait for it (a grace period
  // of microseconds), so it runs group 1 itself for the steps in between.
  const int64_t steps = 2000;
  Record rec(steps, 2);
  const auto t0 = std::chrono::steady_clock::now();
  run_walk(2, 2, steps, 1, 200, rec);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t taken_over = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    for (int g = 0; g < 2; ++g) ASSERT_EQ(rec.runs_of(s, g).load(), 1) << "step " << s << " group " << g;
    if (rec.runner_of(s, 1).load() == 0) ++taken_over;
  }
  EXPECT_EQ(rec.started_early.load(), 0);
  EXPECT_EQ(rec.left_early.load(), 0);
  // Without taking over, thread 0 would have waited for thread 1 at step 1, and
  // thread 1 would then have run all of group 1.
  EXPECT_GT(taken_over, 0) << "group 1 was never run by thread 0";
  EXPECT_LT(seconds, 60.0);
}

TEST(StepScheduler, MoreGroupsThanThreads) {
  // Groups without an owning thread are run by the others after the grace period.
  const int64_t steps = 300;
  Record rec(steps, 4);
  run_walk(2, 4, steps, -1, 0, rec);
  for (int64_t s = 1; s <= steps; ++s)
    for (int g = 0; g < 4; ++g) ASSERT_EQ(rec.runs_of(s, g).load(), 1) << "step " << s << " group " << g;
  EXPECT_EQ(rec.started_early.load(), 0);
  EXPECT_EQ(rec.left_early.load(), 0);
}

// Groups split into parts (StepScheduler::set_parts): per step and part, how
// often it ran and whether a helper (run_part) ran it, and what each run and
// each return from step() saw of the others.
struct PartRecord {
  PartRecord(int64_t steps, std::vector<int> parts) : parts(std::move(parts)) {
    for (int p : this->parts) total += p;
    runs = std::make_unique<std::atomic<int>[]>((steps + 1) * total);
    helped = std::make_unique<std::atomic<int>[]>((steps + 1) * total);
    payload.assign(static_cast<size_t>((steps + 1) * total), -1);
  }
  int64_t index(int64_t step, int g, int i) const {
    int64_t at = step * total;
    for (int h = 0; h < g; ++h) at += parts[h];
    return at + i;
  }
  bool step_complete(int64_t step) {
    for (int64_t i = step * total; i < (step + 1) * total; ++i)
      if (runs[i].load(std::memory_order_relaxed) != 1) return false;
    return true;
  }
  // Also reads, as plain memory, what every part of the step before wrote and
  // writes its own: the scheduler's hand-over must order those (checked by
  // ThreadSanitizer, scripts/tsan_tests.sh; the counters here are relaxed so
  // that they order nothing themselves).
  void ran(int64_t step, int g, int i, bool by_helper) {
    if (step > 1 && !step_complete(step - 1)) started_early.fetch_add(1);
    if (step > 1)
      for (int64_t j = (step - 1) * total; j < step * total; ++j)
        if (payload[j] != step - 1) stale_reads.fetch_add(1);
    payload[index(step, g, i)] = step;
    runs[index(step, g, i)].fetch_add(1, std::memory_order_relaxed);
    if (by_helper) helped[index(step, g, i)].store(1, std::memory_order_relaxed);
  }
  std::vector<int> parts;
  int64_t total = 0;
  std::unique_ptr<std::atomic<int>[]> runs, helped;
  std::vector<int64_t> payload;  // plain: the step that wrote each part's slot
  std::atomic<int> started_early{0}, left_early{0}, runner_took_back{0}, stale_reads{0};
};

// Threads 0 .. threads-1 walk steps 1 .. steps with group g in parts[g] parts,
// each part a few microseconds of work; but the first part of group `slow` (if
// >= 0) holds its runner until a helper has taken that group's last part (at
// most 2 s once, so that a broken scheduler fails the test instead of hanging it).
// Thread `late` (if >= 0) starts after late_ms.
void run_parts_walk(int threads, int64_t steps, int slow, int late, int late_ms, PartRecord& rec) {
  const int groups = static_cast<int>(rec.parts.size());
  StepScheduler scheduler(groups);
  for (int g = 0; g < groups; ++g) scheduler.set_parts(g, rec.parts[g]);
  std::atomic<bool> gave_up{false};  // a hold timed out: hold no more
  const auto work = [&](int64_t step, int g, int i) {
    using clock = std::chrono::steady_clock;
    const bool hold = g == slow && i == 0 && !gave_up.load();
    const auto until = clock::now() + (hold ? std::chrono::microseconds(2000000) : std::chrono::microseconds(1));
    for (;;) {
      if (hold && rec.helped[rec.index(step, g, rec.parts[g] - 1)].load() != 0) break;
      if (clock::now() >= until) {
        if (hold) gave_up.store(true);
        break;
      }
    }
  };
  walk_threads(threads, steps, late, late_ms, [&](int t, int64_t s, StepScheduler::ThreadState& state) {
    scheduler.step(
        t, s, state,
        [&](int g) {
          // The runner's parts come from the front, one run of them after another.
          int next = 0;
          for (int first, count; (count = scheduler.take_front(g, s, &first)) > 0; next = first + count) {
            if (first != next) rec.runner_took_back.fetch_add(1);
            for (int i = first; i < first + count; ++i) {
              rec.ran(s, g, i, false);
              work(s, g, i);
            }
          }
        },
        [&](int g, int i) {
          rec.ran(s, g, i, true);
          work(s, g, i);
        });
    if (!rec.step_complete(s)) rec.left_early.fetch_add(1);
  });
}

TEST(StepScheduler, EveryPartOncePerStepAndHelpersTakeTheLast) {
  for (const std::vector<int>& parts : std::vector<std::vector<int>>{{8, 8}, {5, 1, 7}, {4, 3}}) {
    SCOPED_TRACE(testing::Message() << parts.size() << " groups, " << parts[0] << " parts in the slow one");
    const int64_t steps = 200;
    PartRecord rec(steps, parts);
    // Group 0's runner stays in its first part until a peer, done with its own
    // group, has taken group 0's last part.
    run_parts_walk(static_cast<int>(parts.size()), steps, 0, -1, 0, rec);
    int64_t helped_steps = 0;
    for (int64_t s = 1; s <= steps; ++s) {
      for (int g = 0; g < static_cast<int>(parts.size()); ++g) {
        bool helped_before = false;
        for (int i = 0; i < parts[g]; ++i) {
          ASSERT_EQ(rec.runs[rec.index(s, g, i)].load(), 1) << "step " << s << " group " << g << " part " << i;
          const bool helped = rec.helped[rec.index(s, g, i)].load() != 0;
          // Helpers take a suffix of the parts, and never the first or a part
          // of a group whose runner had fewer than two left.
          ASSERT_TRUE(helped || !helped_before) << "step " << s << " group " << g << " part " << i;
          if (helped) ASSERT_GE(parts[g], 2);
          if (i == 0) ASSERT_FALSE(helped);
          helped_before = helped;
        }
      }
      if (rec.helped[rec.index(s, 0, parts[0] - 1)].load() != 0) ++helped_steps;
    }
    EXPECT_EQ(rec.started_early.load(), 0) << "a part started before the step before was complete";
    EXPECT_EQ(rec.left_early.load(), 0) << "a thread left a step before all its parts were done";
    EXPECT_EQ(rec.runner_took_back.load(), 0) << "the runner's parts were not one run from the front";
    EXPECT_EQ(rec.stale_reads.load(), 0) << "a part read another's result of the step before before it was written";
    EXPECT_EQ(helped_steps, steps) << "the held group's last part was taken by a helper in only " << helped_steps
                                   << " of " << steps << " steps";
  }
}

TEST(StepScheduler, AbsentThreadsPartsAreRunByAnother) {
  // Thread 1 arrives 100 ms late: thread 0 runs group 1 (all of its parts, as
  // its runner) in the steps in between, and every part still runs once.
  const int64_t steps = 1000;
  PartRecord rec(steps, {4, 6});
  run_parts_walk(2, steps, -1, 1, 100, rec);
  for (int64_t s = 1; s <= steps; ++s)
    for (int64_t i = s * rec.total; i < (s + 1) * rec.total; ++i) ASSERT_EQ(rec.runs[i].load(), 1) << "step " << s;
  EXPECT_EQ(rec.started_early.load(), 0);
  EXPECT_EQ(rec.left_early.load(), 0);
  EXPECT_EQ(rec.runner_took_back.load(), 0);
  EXPECT_EQ(rec.stale_reads.load(), 0);
}

}  // namespace
