#include "arbor/common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <string>
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

}  // namespace
}  // namespace arbor
