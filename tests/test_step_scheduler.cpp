// Tests of the per-step scheduler of the small-batch kernels
// (src/kernels/cpu/step_scheduler.h): every group runs exactly once per step,
// no group of a step starts before every group of the step before has finished,
// no thread leaves a step before all of its groups are done, and the group of a
// thread that is absent is run by another one. Plain std::threads stand in for
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

// Threads 0 .. threads-1 walk steps 1 .. steps; thread `late` (if >= 0) starts
// only after late_ms, long after the others have had to run its group.
void run_walk(int threads, int groups, int64_t steps, int late, int late_ms, Record& rec) {
  StepScheduler scheduler(groups);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      if (t == late) std::this_thread::sleep_for(std::chrono::milliseconds(late_ms));
      StepScheduler::ThreadState state;
      for (int64_t s = 1; s <= steps; ++s) {
        scheduler.step(t, s, state, [&](int g) {
          if (s > 1 && !rec.step_complete(s - 1)) rec.started_early.fetch_add(1);
          rec.runs_of(s, g).fetch_add(1);
          rec.runner_of(s, g).store(t);
          // Some work, a little different per group, so that finishing order varies.
          volatile double x = 0;
          for (int i = 0; i < 50 * (g + 1); ++i) x = x + i;
        });
        if (!rec.step_complete(s)) rec.left_early.fetch_add(1);
      }
    });
  for (std::thread& th : pool) th.join();
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

}  // namespace
