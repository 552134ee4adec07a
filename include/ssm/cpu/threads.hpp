// How many threads a CPU op uses, and the threads themselves: parallel_for (tasks handed out in order) and
// run_threads (exactly n participants, each with its id) run on one persistent pool of parked workers, so a
// call costs a wake-up (microseconds) rather than starting and joining threads (tens of microseconds each).
// That matters when a call is small: decoding one token makes about a hundred threaded matrix-vector products.
// Every task runs with denormal floats flushed to zero (FlushDenormals), the calling thread's mode restored after.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define SSM_CPU_RELAX() _mm_pause()
#else
#define SSM_CPU_RELAX() std::this_thread::yield()
#endif

namespace ssm::cpu {

/// Work (state updates, b·d·l·n) below which one more thread is not worth starting: at about 5e9
/// updates/s per core, 2^18 updates take ~50 µs, the order of a thread's start and join.
inline constexpr std::int64_t kMinUpdatesPerThread = std::int64_t{1} << 18;

/// std::thread::hardware_concurrency(), read once (at least 1): glibc counts the online CPUs from sysfs on every
/// call, about 8 µs, which doubled the cost of a small op's call.
inline unsigned hardware_threads() {
  static const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  return hw;
}

/// requested > 0: exactly that many. requested == 0: hardware threads, at most one per
/// kMinUpdatesPerThread updates of work, at least one.
inline int cpu_threads(int requested, std::int64_t work) {
  if (requested > 0) return requested;
  const unsigned hw = hardware_threads();
  const std::int64_t by_work = std::max<std::int64_t>(1, work / kMinUpdatesPerThread);
  return static_cast<int>(std::clamp<std::int64_t>(by_work, 1, hw));
}

namespace detail {
inline std::atomic<std::int64_t> g_worker_threads_run{0};
/// Called first thing by every thread that joins a parallel_for / run_threads call besides the caller's.
inline void note_worker_thread() { g_worker_threads_run.fetch_add(1, std::memory_order_relaxed); }

/// Parked worker threads that run one job at a time for one caller. A job is f(id) for id in [0, n): the
/// caller runs id 0, workers 0 .. n-2 run ids 1 .. n-1, all at once (a job may rely on its n participants
/// running concurrently). The pool grows to the largest n asked for and its threads live until the process ends.
class WorkerPool {
 public:
  static WorkerPool& instance() {
    // Never destroyed: its parked workers end with the process (joining them from a static destructor would
    // hang in a forked child, which has the pool's memory but not its threads).
    static WorkerPool* pool = new WorkerPool;
    return *pool;
  }

  /// Runs job(0) on the calling thread and job(1 .. n-1) on pool workers, and returns when all have returned;
  /// job must not throw. Returns false, having run nothing, when the pool is busy with another call (another
  /// caller's, or this call's own caller nested inside a job), is a worker itself, or is in a child process
  /// forked after the pool started (whose workers were not copied): the caller then starts threads of its own.
  bool try_run(int n, const std::function<void(int)>& job) {
    if (in_worker() || ::getpid() != owner_pid_) return false;
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    struct Release {
      std::atomic<bool>& busy;
      ~Release() { busy.store(false, std::memory_order_release); }
    } release{busy_};
    try {
      while (static_cast<int>(workers_.size()) < n - 1) {
        const int index = static_cast<int>(workers_.size());
        workers_.emplace_back([this, index] { work_loop(index); });
      }
    } catch (...) {
      return false;  // could not start a thread: the caller's fallback reports it
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      wanted_ = n - 1;
      remaining_ = n - 1;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
    return true;
  }

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

 private:
  WorkerPool() : owner_pid_(::getpid()) {}

  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }

  void work_loop(int index) {
    in_worker() = true;
    std::uint64_t seen = 0;
    for (;;) {
      // Spin briefly before sleeping: a caller making many small calls in a row (decoding) finds the worker awake.
      const auto spin_end = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_end)
        for (int i = 0; i < 16; ++i) SSM_CPU_RELAX();
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
      seen = generation_.load(std::memory_order_relaxed);
      if (index >= wanted_) continue;
      const std::function<void(int)>* job = job_;
      lock.unlock();
      note_worker_thread();
      (*job)(index + 1);
      lock.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  /// How long a worker that finished a job watches for the next one before it sleeps.
  static constexpr std::chrono::microseconds kSpin{300};

  std::atomic<bool> busy_{false};
  std::vector<std::thread> workers_;  // touched only by the caller holding busy_
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<std::uint64_t> generation_{0};
  const std::function<void(int)>* job_ = nullptr;
  int wanted_ = 0, remaining_ = 0;
  const pid_t owner_pid_;
};

/// job(0) on the caller, job(1 .. n-1) on threads started for this call (the pool's fallback).
inline void run_on_new_threads(int n, const std::function<void(int)>& job) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n - 1));
  for (int i = 1; i < n; ++i)
    threads.emplace_back([&job, i] {
      note_worker_thread();
      job(i);
    });
  job(0);
  for (auto& t : threads) t.join();
}

/// job(0 .. n-1) at once: on the pool when it is free, else on threads of their own; job must not throw.
inline void run_concurrently(int n, const std::function<void(int)>& job) {
  if (!WorkerPool::instance().try_run(n, job)) run_on_new_threads(n, job);
}
}  // namespace detail

/// While alive, the calling thread's SSE / AVX arithmetic reads denormal inputs as zero and writes zero for denormal
/// results (x86's MXCSR DAZ and FTZ bits); the destructor restores those two bits as it found them (the exception flags
/// raised meanwhile are kept, for a caller that reads them with fetestexcept). On other architectures it does
/// nothing. The CPU ops run their tasks under it (parallel_for, run_threads): products of decays that reach below
/// 1.2e-38 (f32) otherwise take a microcode assist per operation on Intel cores, which made SSD's chunked forward at
/// chunk 256 5.7x slower on an AVX-512 Xeon (docs/ssd.md), for values that change no result above that size.
class FlushDenormals {
 public:
#if defined(__SSE__) || defined(_M_X64)
  static constexpr unsigned kBits = 0x8040u;  // FTZ (bit 15) | DAZ (bit 6)
  FlushDenormals() : saved_(_mm_getcsr()) {
    _mm_setcsr(saved_ | kBits);
  }
  ~FlushDenormals() {  // the two bits as found; the exception flags the work raised stay raised
    _mm_setcsr((_mm_getcsr() & ~kBits) | (saved_ & kBits));
  }
#else
  FlushDenormals() {}
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if defined(__SSE__) || defined(_M_X64)
  unsigned saved_;
#endif
};

/// How many times a thread besides the calling one joined a parallel_for / run_threads call since the program
/// started: an observable for tests, since results equal to a one-thread run cannot tell whether a second thread
/// ran. It counts threads joining a call, not tasks: which thread takes which task is a race (a worker may join
/// after the caller took every task), so a count of tasks would make such a test flaky, while every worker a call
/// asks for joins it before the call returns. Costs one relaxed atomic add per joining thread; nothing when one
/// thread is used.
inline std::int64_t worker_threads_run() { return detail::g_worker_threads_run.load(std::memory_order_relaxed); }

/// Runs fn(task) for task in [0, n_tasks) on up to `threads` threads (the caller's thread included; at most one
/// per task), handing tasks out in order from an atomic counter, with denormals flushed (FlushDenormals); rethrows
/// the first exception of any task (the remaining tasks are then skipped).
template <class Fn>
void parallel_for(std::int64_t n_tasks, int threads, Fn&& fn) {
  const int workers = static_cast<int>(std::clamp<std::int64_t>(n_tasks, 1, std::max(threads, 1)));
  if (workers == 1) {
    const FlushDenormals flush;
    for (std::int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  detail::run_concurrently(workers, [&](int) {
    const FlushDenormals flush;
    try {
      for (std::int64_t t = next++; t < n_tasks; t = next++) fn(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = n_tasks;
    }
  });
  if (error) std::rethrow_exception(error);
}

/// Runs f(tid) for tid in [0, n) on n threads at once (the caller is thread 0), with denormals flushed
/// (FlushDenormals); rethrows the first exception.
template <class F>
void run_threads(int n, F&& f) {
  if (n <= 1) {
    const FlushDenormals flush;
    f(0);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  detail::run_concurrently(n, [&](int tid) {
    const FlushDenormals flush;
    try {
      f(tid);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace ssm::cpu
