#include "io/postgres/pg_connection.h"

#include <gtest/gtest.h>

namespace evpipe::io {
namespace {

pg_status failed(std::string sqlstate, bool lost = false) { return pg_status{false, std::move(sqlstate), "m", lost}; }

TEST(PgFailure, ClassifiesBySqlstateClass) {
  EXPECT_EQ(classify(pg_status{}), pg_failure::none);
  EXPECT_EQ(classify(failed("23505")), pg_failure::duplicate_key);
  for (const char* data : {"22P02", "22001", "22021", "23514", "23502", "23503", "54000", "P0001"}) {
    EXPECT_EQ(classify(failed(data)), pg_failure::data) << data;
  }
  for (const char* transient : {"08006", "40001", "40P01", "53100", "55P03", "57P01", "58030", "42501", "42P01", "XX000"}) {
    EXPECT_EQ(classify(failed(transient)), pg_failure::transient) << transient;
  }
  EXPECT_EQ(classify(failed("")), pg_failure::transient);
  EXPECT_EQ(classify(failed("23514", true)), pg_failure::transient) << "a lost connection is transient whatever it said";
}

}  // namespace
}  // namespace evpipe::io
