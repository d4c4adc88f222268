// pipeline/thread_name: a named thread has its OS name and its log fields
// while it runs, and none after; the main thread keeps the process's name.

#include "pipeline/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace evpipe::testing {
namespace {

size_t os_tid() { return static_cast<size_t>(::syscall(SYS_gettid)); }

std::string comm(size_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

TEST(ThreadName, NamesTheThreadAndGivesItsLinesFieldsWhileItRuns) {
  size_t tid = 0;
  std::string fields_inside, name_inside;
  std::thread t([&] {
    pipeline::thread_name named("shard-7", "\"shard\":7");
    tid = os_tid();
    fields_inside = pipeline::thread_log_fields(tid);
    name_inside = comm(tid);
  });
  t.join();
  EXPECT_EQ(fields_inside, R"({"thread":"shard-7","shard":7})");
  EXPECT_EQ(name_inside, "shard-7");
  EXPECT_EQ(pipeline::thread_log_fields(tid), "{}") << "the registration ends with the thread_name";
}

TEST(ThreadName, LongNamesAreCutForTheOsButNotForTheLogs) {
  std::string fields, name;
  std::thread t([&] {
    pipeline::thread_name named("a-very-long-thread-name");
    fields = pipeline::thread_log_fields(os_tid());
    name = comm(os_tid());
  });
  t.join();
  EXPECT_EQ(fields, R"({"thread":"a-very-long-thread-name"})");
  EXPECT_EQ(name, "a-very-long-thr");
}

TEST(ThreadName, TheMainThreadKeepsTheProcessName) {
  ASSERT_EQ(os_tid(), static_cast<size_t>(::getpid()));
  std::string before = comm(os_tid());
  {
    pipeline::thread_name named("main");
    EXPECT_EQ(pipeline::thread_log_fields(os_tid()), R"({"thread":"main"})");
    EXPECT_EQ(comm(os_tid()), before);
  }
  EXPECT_EQ(pipeline::thread_log_fields(os_tid()), "{}");
}

}  // namespace
}  // namespace evpipe::testing
