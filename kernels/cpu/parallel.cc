#include "arbor/kernels/parallel.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace arbor::kernels {
namespace {

// Workers spin this long for the next loop before they sleep: a step runs its products
// microseconds apart, and waking a sleeping thread costs more than that. Longer spins only burn
// a core that the other processes of a mesh on the same machine could use (a router waiting for
// its expert workers, the workers waiting for the next layer).
constexpr auto kSpin = std::chrono::microseconds(50);

// One spin iteration: tells the core this is a wait loop (x86 PAUSE), so a sibling hyperthread
// gets the pipeline; the clock is read every kSpinChecks iterations.
constexpr int kSpinChecks = 64;
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// One loop, on its owner's stack while the owner waits for it.
struct Loop {
  absl::FunctionRef<void(int, int)> body;
  int n, pieces;
  std::atomic<int> next{0}, pending;
};

void RunPieces(Loop* loop) {
  for (;;) {
    const int p = loop->next.fetch_add(1);
    if (p >= loop->pieces) return;
    const int begin = static_cast<int>(static_cast<int64_t>(loop->n) * p / loop->pieces);
    const int end = static_cast<int>(static_cast<int64_t>(loop->n) * (p + 1) / loop->pieces);
    loop->body(begin, end);
    loop->pending.fetch_sub(1);
  }
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { Work(); });
  }

  int threads() const { return threads_; }

  void Run(int n, int grain, absl::FunctionRef<void(int, int)> body) {
    const int pieces = std::min(threads_ * 4, (n + grain - 1) / grain);
    if (threads_ == 1 || pieces <= 1) {
      body(0, n);
      return;
    }
    if (!owner_.TryLock()) {  // another thread's loop has the workers
      body(0, n);
      return;
    }
    Loop loop{body, n, pieces, {0}, {pieces}};
    loop_.store(&loop);
    {
      absl::MutexLock lock(&mu_);
      generation_.fetch_add(1);
    }
    wake_.SignalAll();
    RunPieces(&loop);
    while (loop.pending.load() > 0) std::this_thread::yield();
    // No worker may still hold &loop once this returns: it is withdrawn, then workers that
    // picked it up are waited out (a worker counts itself in before it reads loop_).
    loop_.store(nullptr);
    while (active_.load() > 0) std::this_thread::yield();
    owner_.Unlock();
  }

 private:
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
        CpuRelax();
        if (i % kSpinChecks == 0 && std::chrono::steady_clock::now() >= spin_until) break;
      }
      if (generation_.load() == seen) {
        absl::MutexLock lock(&mu_);
        while (generation_.load() == seen) wake_.Wait(&mu_);
      }
      seen = generation_.load();
      active_.fetch_add(1);
      if (Loop* loop = loop_.load()) RunPieces(loop);
      active_.fetch_sub(1);
    }
  }

  const int threads_;
  absl::Mutex owner_;  // held by the thread whose loop the workers run
  absl::Mutex mu_;     // sleeping workers wait for generation_ to move under it
  absl::CondVar wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<Loop*> loop_{nullptr};
  std::atomic<int> active_{0};
  std::vector<std::thread> workers_;  // never joined: the pool lives as long as the process
};

Pool& ThePool() {
  static Pool* pool = new Pool(std::max(1, openblas_get_num_threads()));
  return *pool;
}

}  // namespace

void ParallelFor(int n, int grain, absl::FunctionRef<void(int, int)> body) {
  if (n <= 0) return;
  ThePool().Run(n, std::max(1, grain), body);
}

int ParallelThreads() { return ThePool().threads(); }

}  // namespace arbor::kernels
