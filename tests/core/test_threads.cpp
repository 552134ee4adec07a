// ssm::cpu::parallel_for and run_threads on the persistent worker pool (cpu/threads.hpp): every task runs once,
// a call's participants run at once, exceptions come back to the caller, and the pool's fallbacks (a nested call,
// a second caller, a forked child) still run everything, and tasks run with denormals flushed.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cfenv>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ssm/cpu/threads.hpp"

namespace {

using ssm::cpu::parallel_for;
using ssm::cpu::run_threads;

// Each task index is run exactly once, for task counts around the thread count.
TEST(ThreadPool, ParallelForRunsEveryTaskOnce) {
  for (int threads : {1, 2, 3, 8})
    for (std::int64_t n : {0, 1, 2, 3, 7, 64, 1000}) {
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
      parallel_for(n, threads, [&](std::int64_t t) { runs[static_cast<std::size_t>(t)]++; });
      for (std::int64_t t = 0; t < n; ++t)
        ASSERT_EQ(runs[static_cast<std::size_t>(t)].load(), 1) << "task " << t << " of " << n << ", " << threads << " threads";
    }
}

// run_threads(n) runs its n ids at once: a barrier of n completes only if all n are running together (a pool
// that ran them in turns would hang here). Repeated, so the parked workers are reused.
TEST(ThreadPool, RunThreadsParticipantsRunConcurrently) {
  for (int n : {2, 3, 5})
    for (int rep = 0; rep < 20; ++rep) {
      std::barrier sync(n);
      std::vector<int> seen(static_cast<std::size_t>(n), 0);
      run_threads(n, [&](int tid) {
        sync.arrive_and_wait();
        seen[static_cast<std::size_t>(tid)]++;
      });
      for (int tid = 0; tid < n; ++tid) ASSERT_EQ(seen[static_cast<std::size_t>(tid)], 1) << "id " << tid;
    }
}

TEST(ThreadPool, ExceptionsReachTheCaller) {
  EXPECT_THROW(parallel_for(16, 2, [](std::int64_t t) {
                 if (t == 11) throw std::runtime_error("task 11");
               }),
               std::runtime_error);
  EXPECT_THROW(run_threads(3, [](int tid) {
                 if (tid == 2) throw std::runtime_error("id 2");
               }),
               std::runtime_error);
  // The pool is usable after a failed call.
  std::atomic<int> sum{0};
  parallel_for(10, 2, [&](std::int64_t t) { sum += static_cast<int>(t); });
  EXPECT_EQ(sum.load(), 45);
}

// A task that itself calls parallel_for (the pool is busy with the outer call): the inner call runs on threads of
// its own, and every inner task runs once.
TEST(ThreadPool, NestedCallsRunEveryTask) {
  std::atomic<int> inner{0};
  parallel_for(4, 2, [&](std::int64_t) { parallel_for(8, 2, [&](std::int64_t) { inner++; }); });
  EXPECT_EQ(inner.load(), 32);
  std::atomic<int> from_ids{0};
  run_threads(2, [&](int) { run_threads(2, [&](int) { from_ids++; }); });
  EXPECT_EQ(from_ids.load(), 4);
}

// Two callers at once: one gets the pool, the other its own threads; both complete with every task run.
TEST(ThreadPool, ConcurrentCallersBothComplete) {
  std::atomic<std::int64_t> a{0}, b{0};
  auto caller = [](std::atomic<std::int64_t>& sum) {
    for (int rep = 0; rep < 200; ++rep) parallel_for(16, 2, [&](std::int64_t t) { sum += t; });
  };
  std::thread other(caller, std::ref(b));
  caller(a);
  other.join();
  EXPECT_EQ(a.load(), 200 * 120);
  EXPECT_EQ(b.load(), 200 * 120);
}

// A child forked after the pool started has the pool's memory but none of its threads: its calls must not wait
// for workers that do not exist.
TEST(ThreadPool, ForkedChildStillRunsCalls) {
  std::atomic<int> warm{0};
  parallel_for(4, 2, [&](std::int64_t) { warm++; });  // the pool exists now
  ASSERT_EQ(warm.load(), 4);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::atomic<int> runs{0};
    parallel_for(64, 2, [&](std::int64_t) { runs++; });
    run_threads(2, [&](int) { runs++; });
    _exit(runs.load() == 66 ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// worker_threads_run counts a worker joining a call, and nothing for one thread.
TEST(ThreadPool, WorkerCountSeesJoiningThreads) {
  const std::int64_t before = ssm::cpu::worker_threads_run();
  parallel_for(64, 1, [](std::int64_t) {});
  EXPECT_EQ(ssm::cpu::worker_threads_run(), before);
  run_threads(3, [](int) {});
  EXPECT_EQ(ssm::cpu::worker_threads_run(), before + 2);
}

}  // namespace

// Tasks run with denormals flushed to zero, on the caller's thread and the workers', for parallel_for and
// run_threads, with one thread and with several; the caller's own mode is restored after, also when a task throws.
// (Denormal f32 products took a microcode assist each on Intel cores: SSD's chunk-256 forward ran 5.7× slower.)
TEST(ThreadPool, TasksFlushDenormalsAndTheCallerKeepsItsMode) {
#if !(defined(__SSE__) || defined(_M_X64))
  GTEST_SKIP() << "FlushDenormals sets x86's MXCSR only";
#endif
  volatile float tiny = 1e-39f;  // denormal (below 1.18e-38); volatile: computed at run time, not folded
  const auto flushed = [&] { return tiny * 1.0f == 0.0f; };
  ASSERT_FALSE(flushed()) << "the test's own thread must start with denormals kept";
  for (int threads : {1, 2, 4}) {
    std::atomic<int> kept{0};
    parallel_for(16, threads, [&](std::int64_t) {
      if (!flushed()) kept++;
    });
    EXPECT_EQ(kept.load(), 0) << "parallel_for, " << threads << " threads";
    run_threads(threads, [&](int) {
      if (!flushed()) kept++;
    });
    EXPECT_EQ(kept.load(), 0) << "run_threads, " << threads << " threads";
    EXPECT_FALSE(flushed()) << "the caller's mode after " << threads << " threads";
  }
  EXPECT_THROW(parallel_for(4, 1, [](std::int64_t) { throw std::runtime_error("task"); }), std::runtime_error);
  EXPECT_FALSE(flushed()) << "the caller's mode after a task threw";
  std::feclearexcept(FE_ALL_EXCEPT);  // an exception flag raised by a task on the caller's thread stays raised
  parallel_for(1, 1, [](std::int64_t) {
    volatile float big = 1e38f;
    big = big * 10.0f;
  });
  EXPECT_TRUE(std::fetestexcept(FE_OVERFLOW)) << "the overflow flag of the caller's own task";
}
