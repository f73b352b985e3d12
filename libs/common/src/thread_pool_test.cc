#include "arbor/common/thread_pool.h"

#include <atomic>

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

}  // namespace
}  // namespace arbor
