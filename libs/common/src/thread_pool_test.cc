#include "arbor/common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace arbor {
namespace {

TEST(ThreadPoolTest, RunsEverythingScheduledBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(3);
    for (int i = 0; i < 1000; ++i) pool.Schedule([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(ThreadPoolTest, WorkRunsOffTheSchedulingThread) {
  ThreadPool pool(1);
  absl::Notification done;
  std::thread::id worker;
  pool.Schedule([&] {
    worker = std::this_thread::get_id();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_NE(worker, std::this_thread::get_id());
}

// Groups take turns: with one worker held busy, a thousand closures of group "big" queued before
// one of group "small" do not run before it.
TEST(ThreadPoolTest, GroupsTakeTurns) {
  std::vector<std::string> order;
  absl::Mutex mu;
  absl::Notification release;
  {
    ThreadPool pool(1);
    pool.Schedule([&] { release.WaitForNotification(); }, "big");
    for (int i = 0; i < 1000; ++i) {
      pool.Schedule(
          [&] {
            absl::MutexLock lock(&mu);
            order.push_back("big");
          },
          "big");
    }
    pool.Schedule(
        [&] {
          absl::MutexLock lock(&mu);
          order.push_back("small");
        },
        "small");
    release.Notify();
  }
  ASSERT_EQ(order.size(), 1001u);
  const size_t small = std::find(order.begin(), order.end(), "small") - order.begin();
  EXPECT_LE(small, 1u);  // right after big's turn, not after all of big's
}

// A group kept to 3 of 4 threads: while its closures block, the fourth thread still runs another
// group's closure; the blocked group's other closures wait for one of its three, not for it.
TEST(ThreadPoolTest, AGroupKeptUnderTheThreadCountLeavesThreadsForOthers) {
  absl::Notification release, small_ran;
  std::atomic<int> big_running{0}, big_max{0}, big_done{0};
  {
    ThreadPool pool(4, /*max_per_group=*/3);
    for (int i = 0; i < 10; ++i) {
      pool.Schedule(
          [&] {
            const int now = ++big_running;
            int seen = big_max.load();
            while (now > seen && !big_max.compare_exchange_weak(seen, now)) {
            }
            release.WaitForNotification();
            --big_running;
            ++big_done;
          },
          "big");
    }
    for (int i = 0; i < 3000 && big_running.load() < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(big_running.load(), 3);  // (no ASSERT: the pool must be released below)
    pool.Schedule([&] { small_ran.Notify(); }, "small");
    EXPECT_TRUE(small_ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_EQ(big_running.load(), 3);
    release.Notify();
  }
  EXPECT_EQ(big_done.load(), 10);
  EXPECT_EQ(big_max.load(), 3);
}

}  // namespace
}  // namespace arbor
