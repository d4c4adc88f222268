# evpipe_add_test(NAME <name> SOURCES <files...> LIBS <targets...> LABEL unit|integration|interop
#                 [TIMEOUT s] [RUNS_EVPIPE] [IN_PROCESS] [DEFINES <defs...>] [DEPENDS <targets...>])
# One helper registers every GoogleTest binary with a label, so `ctest -L unit`
# and `ctest -L integration` select suites. RUNS_EVPIPE: the test starts the
# evpipe binary (EVPIPE_BINARY is its path, EVPIPE_TEST_EVPIPE in the
# environment overrides it), which is built first.
#
# Black-box tests: an integration or interop test that RUNS_EVPIPE and runs no
# evpipe library code in its own process (no IN_PROCESS) only drives the
# binary from outside. Its label says so (integration/black_box,
# interop/black_box: ctest -L matches a regular expression, so
# `-L integration` and `-L black_box` both select it; gtest_discover_tests
# cannot pass a test two labels in CMake 3.25), and a tree
# configured with EVPIPE_BLACK_BOX_TESTS=OFF does not build it: scripts/test.sh
# builds these once, in the Release tree, and runs them a second time against
# the sanitizer tree's evpipe (`EVPIPE_TEST_EVPIPE=... ctest -L black_box`).
# What the sanitizers check is the daemon; compiling the test drivers a second
# time with them checked nothing but test code and cost CI minutes.
option(EVPIPE_BLACK_BOX_TESTS "Build the integration tests that only drive the evpipe binary" ON)
# The other tests (unit tests, in-process integration tests, the fuzz targets'
# corpus replay) link evpipe's libraries into the test. scripts/test.sh runs
# those in the sanitizer tree, so the Release tree it builds beside it is
# configured with EVPIPE_WHITE_BOX_TESTS=OFF: building them a second time
# with GCC at -O1 was a fifth of CI's Release build, for tests that then ran
# twice.
option(EVPIPE_WHITE_BOX_TESTS "Build the tests that link evpipe's libraries (unit, in-process)" ON)
find_package(GTest REQUIRED)
include(GoogleTest)

# GoogleTest's header is much of what a test file parses: precompiled, it
# saves about 1 s of CPU a file (GCC, readiness_integration_test.cc: 3.2 ->
# 2.2 s user + system), over a hundred test files in CI. Every test
# reuses one precompiled <gtest/gtest.h>, built once for each optimisation
# level tests compile at (below), with only the definitions every test has
# (clang refuses a precompiled header whose macros differ from the file's),
# and -pthread on all of them (clang also refuses one built without it for a
# file compiled with it, as a test that links re2 is).
# EVPIPE_TEST_PCH=OFF parses it in every file again.
option(EVPIPE_TEST_PCH "Precompile <gtest/gtest.h> once for all tests" ON)
function(evpipe_test_pch opt out)
  string(REPLACE "-" "" suffix "${opt}")
  set(pch evpipe_test_pch${suffix})
  if(NOT TARGET ${pch})
    add_library(${pch} STATIC ${PROJECT_SOURCE_DIR}/tests/support/test_pch.cc)
    target_compile_options(${pch} PRIVATE $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:${opt}> -pthread)
    target_link_libraries(${pch} PRIVATE GTest::gtest)
    target_precompile_headers(${pch} PRIVATE <gtest/gtest.h>)
  endif()
  set(${out} ${pch} PARENT_SCOPE)
endfunction()

function(evpipe_add_test)
  cmake_parse_arguments(T "RUNS_EVPIPE;IN_PROCESS" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS;DEFINES;DEPENDS" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL unit)
  endif()
  set(labels ${T_LABEL})
  set(black_box FALSE)
  if(T_RUNS_EVPIPE AND NOT T_IN_PROCESS AND T_LABEL MATCHES "^(integration|interop)$")
    if(NOT EVPIPE_BLACK_BOX_TESTS)
      return()
    endif()
    string(APPEND labels "/black_box")
    set(black_box TRUE)
  elseif(NOT EVPIPE_WHITE_BOX_TESTS)
    return()
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  # The code under test is built as configured (-O3 in Release); the test's own
  # sources need no more than -O1, which compiles them about a third faster
  # (GoogleTest assertions and Asio templates at -O3 are most of the suite's
  # build time). A black-box test only drives the binary: -O0, another third
  # faster again (tcp_pipeline_integration_test 7.5 -> 4.8 s of CPU).
  set(test_opt -O1)
  if(black_box)
    set(test_opt -O0)
  endif()
  target_compile_options(${T_NAME} PRIVATE $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:${test_opt}>)
  if(EVPIPE_TEST_PCH)
    evpipe_test_pch(${test_opt} pch)
    target_compile_options(${T_NAME} PRIVATE -pthread)
    target_precompile_headers(${T_NAME} REUSE_FROM ${pch})
  endif()
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_RUNS_EVPIPE)
    target_compile_definitions(${T_NAME} PRIVATE EVPIPE_BINARY="$<TARGET_FILE:evpipe>")
    add_dependencies(${T_NAME} evpipe)
  endif()
  if(T_DEFINES)
    target_compile_definitions(${T_NAME} PRIVATE ${T_DEFINES})
  endif()
  if(T_DEPENDS)
    add_dependencies(${T_NAME} ${T_DEPENDS})
  endif()
  gtest_discover_tests(${T_NAME}
    PROPERTIES LABELS ${labels} TIMEOUT ${T_TIMEOUT}
    DISCOVERY_TIMEOUT 30)
endfunction()

# evpipe_add_fuzz(NAME <name> SOURCES <files...> LIBS <targets...> CORPUS <dir>)
# A libFuzzer target (tests/<folder>/<name>.cc) and its seed corpus.
#  - every build: linked with a replay driver; ctest runs the corpus through
#    it as a unit test (`<name>_replay`, label unit);
#  - EVPIPE_FUZZ build (clang, the sanitizer tree of scripts/test.sh): also
#    linked with libFuzzer as `<name>_fuzzer`; ctest fuzzes for
#    EVPIPE_FUZZ_SECONDS, starting from the corpus (`<name>`, label fuzz). Its
#    own sources, and the libraries named to evpipe_fuzz_coverage() below, get
#    libFuzzer's coverage instrumentation. New inputs go to the build tree,
#    never into the repository.
function(evpipe_add_fuzz)
  cmake_parse_arguments(F "" "NAME;CORPUS" "SOURCES;LIBS" ${ARGN})
  if(NOT EVPIPE_WHITE_BOX_TESTS)
    return()
  endif()
  add_executable(${F_NAME} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/support/fuzz_replay_main.cc)
  add_test(NAME ${F_NAME}_replay COMMAND ${F_NAME} ${F_CORPUS})
  set_tests_properties(${F_NAME}_replay PROPERTIES LABELS unit TIMEOUT 120)
  target_include_directories(${F_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${F_NAME} PRIVATE ${F_LIBS})
  if(EVPIPE_FUZZ)
    set(fuzzer ${F_NAME}_fuzzer)
    add_executable(${fuzzer} ${F_SOURCES})
    target_compile_options(${fuzzer} PRIVATE -fsanitize=fuzzer-no-link)
    target_link_options(${fuzzer} PRIVATE -fsanitize=fuzzer)
    target_include_directories(${fuzzer} PRIVATE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${fuzzer} PRIVATE ${F_LIBS})
    set(work ${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}_work)
    file(MAKE_DIRECTORY ${work})
    add_test(NAME ${F_NAME}
      COMMAND ${fuzzer} -max_total_time=${EVPIPE_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048
              -print_final_stats=1 ${work} ${F_CORPUS})
    set_tests_properties(${F_NAME} PROPERTIES LABELS fuzz TIMEOUT 900)
  endif()
endfunction()

# evpipe_fuzz_coverage(<targets...>): in an EVPIPE_FUZZ build, the libraries
# the fuzz targets exercise are compiled with libFuzzer's coverage
# instrumentation, so the fuzzer sees new paths inside them and not only in
# its own file. Elsewhere in that tree the instrumentation is inert (the
# sanitizer runtime defines its hooks).
function(evpipe_fuzz_coverage)
  if(EVPIPE_FUZZ)
    foreach(t ${ARGN})
      target_compile_options(${t} PRIVATE -fsanitize=fuzzer-no-link)
    endforeach()
  endif()
endfunction()
