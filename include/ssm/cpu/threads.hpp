// How many threads a CPU op uses: what the caller asked for, or by default the hardware threads capped
// by the amount of work, so a tiny problem (one decoding token, a test-sized model) does not pay for
// starting threads that have almost nothing to do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>

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

}  // namespace ssm::cpu
