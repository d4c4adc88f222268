// The target that builds the precompiled <gtest/gtest.h> every test reuses
// (evpipe_test_pch in cmake/evpipe_test.cmake); it compiles nothing of its own.
