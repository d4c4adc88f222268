// `evpipe --version` (issue 15): the release CMake knows, the commit CMake
// read from git, and library versions that agree with what the test itself
// sees (libpq is asked at run time, so it must be the loaded one).

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cstdio>
#include <string>

namespace {

std::string run_version() {
  FILE* p = ::popen(EVPIPE_BINARY " --version 2>&1", "r");
  std::string out;
  char buf[1024];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(::pclose(p), 0) << out;
  return out;
}

TEST(Version, PrintsReleaseCommitAndLibraries) {
  std::string out = run_version();
  EXPECT_EQ(out.rfind("evpipe " EVPIPE_EXPECTED_VERSION "\n", 0), 0u) << out;
  EXPECT_NE(out.find("\ncommit " EVPIPE_EXPECTED_COMMIT "\n"), std::string::npos) << out;
  int pq = PQlibVersion();
  EXPECT_NE(out.find("\nlibpq " + std::to_string(pq / 10000) + "." + std::to_string(pq % 10000) + "\n"),
            std::string::npos) << out;
  for (const char* lib : {"\nsimdjson 3.", "(kernel ", "\nboost 1.", "\nspdlog 1.", "\ntomlplusplus 3.", "\nopenssl "}) {
    EXPECT_NE(out.find(lib), std::string::npos) << lib << " missing in:\n" << out;
  }
}

}  // namespace
