// How many threads a CPU op uses: what the caller asked for, or by default the hardware threads capped
// by the amount of work, so a tiny problem (one decoding token, a test-sized model) does not pay for
// starting threads that have almost nothing to do.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ssm::cpu {

/// Work (state updates, b·d·l·n) below which one more thread is not worth starting: at about 5e9
/// updates/s per core, 2^18 updates take ~50 µs, the order of a thread's start and join.
inline constexpr std::int64_t kMinUpdatesPerThread = std::int64_t{1} << 18;

/// requested > 0: exactly that many. requested == 0: hardware threads, at most one per
/// kMinUpdatesPerThread updates of work, at least one.
inline int cpu_threads(int requested, std::int64_t work) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  const std::int64_t by_work = std::max<std::int64_t>(1, work / kMinUpdatesPerThread);
  return static_cast<int>(std::clamp<std::int64_t>(by_work, 1, hw == 0 ? 1 : hw));
}

namespace detail {
inline std::atomic<std::int64_t> g_worker_threads_run{0};
/// Called first thing by every thread parallel_for / run_threads starts besides the caller's.
inline void note_worker_thread() { g_worker_threads_run.fetch_add(1, std::memory_order_relaxed); }
}  // namespace detail

/// How many threads besides the calling one parallel_for (and the scans' run_threads) have run since the program
/// started: an observable for tests, since results equal to a one-thread run cannot tell whether a second thread
/// ran. It counts threads, not tasks: which thread takes which task is a race (a worker may start after the caller
/// took every task), so a count of tasks would make such a test flaky. Costs one relaxed atomic add per started
/// thread, which the thread's own start (tens of microseconds) dwarfs; nothing when one thread is used.
inline std::int64_t worker_threads_run() { return detail::g_worker_threads_run.load(std::memory_order_relaxed); }

/// Runs fn(task) for task in [0, n_tasks) on up to `threads` threads (the caller's thread included; at most one
/// per task), handing tasks out in order from an atomic counter; rethrows the first exception of any task
/// (the remaining tasks are then skipped).
template <class Fn>
void parallel_for(std::int64_t n_tasks, int threads, Fn&& fn) {
  const int workers = static_cast<int>(std::clamp<std::int64_t>(n_tasks, 1, std::max(threads, 1)));
  if (workers == 1) {
    for (std::int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      for (std::int64_t t = next++; t < n_tasks; t = next++) fn(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = n_tasks;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(workers - 1));
  for (int w = 1; w < workers; ++w)
    pool.emplace_back([&] {
      detail::note_worker_thread();
      work();
    });
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ssm::cpu
