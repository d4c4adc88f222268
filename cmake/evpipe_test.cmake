# evpipe_add_test(NAME <name> SOURCES <files...> LIBS <targets...> LABEL unit|integration
#                 [TIMEOUT s] [RUNS_EVPIPE])
# One helper registers every GoogleTest binary with a label, so `ctest -L unit`
# and `ctest -L integration` select suites. RUNS_EVPIPE: the test starts the
# evpipe binary (EVPIPE_BINARY is its path), which is built first.
find_package(GTest REQUIRED)
include(GoogleTest)

function(evpipe_add_test)
  cmake_parse_arguments(T "RUNS_EVPIPE" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  # The code under test is built as configured (-O3 in Release); the test's own
  # sources need no more than -O1, which compiles them about a third faster
  # (GoogleTest assertions and Asio templates at -O3 are most of the suite's
  # build time, and CI builds the suite twice).
  target_compile_options(${T_NAME} PRIVATE $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-O1>)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_RUNS_EVPIPE)
    target_compile_definitions(${T_NAME} PRIVATE EVPIPE_BINARY="$<TARGET_FILE:evpipe>")
    add_dependencies(${T_NAME} evpipe)
  endif()
  gtest_discover_tests(${T_NAME}
    PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT}
    DISCOVERY_TIMEOUT 30)
endfunction()

# evpipe_add_fuzz(NAME <name> SOURCES <files...> LIBS <targets...> CORPUS <dir>)
# A libFuzzer target (tests/<folder>/<name>.cc) and its seed corpus.
#  - normal build: linked with a replay driver; ctest runs the corpus through
#    it as a unit test (`<name>_replay`, label unit);
#  - EVPIPE_FUZZ build (clang): linked with libFuzzer; ctest fuzzes for
#    EVPIPE_FUZZ_SECONDS, starting from the corpus (`<name>`, label fuzz).
#    New inputs go to the build tree, never into the repository.
function(evpipe_add_fuzz)
  cmake_parse_arguments(F "" "NAME;CORPUS" "SOURCES;LIBS" ${ARGN})
  if(EVPIPE_FUZZ)
    add_executable(${F_NAME} ${F_SOURCES})
    target_link_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    set(work ${CMAKE_CURRENT_BINARY_DIR}/${F_NAME}_work)
    file(MAKE_DIRECTORY ${work})
    add_test(NAME ${F_NAME}
      COMMAND ${F_NAME} -max_total_time=${EVPIPE_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048
              -print_final_stats=1 ${work} ${F_CORPUS})
    set_tests_properties(${F_NAME} PROPERTIES LABELS fuzz TIMEOUT 900)
  else()
    add_executable(${F_NAME} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/support/fuzz_replay_main.cc)
    add_test(NAME ${F_NAME}_replay COMMAND ${F_NAME} ${F_CORPUS})
    set_tests_properties(${F_NAME}_replay PROPERTIES LABELS unit TIMEOUT 120)
  endif()
  target_include_directories(${F_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${F_NAME} PRIVATE ${F_LIBS})
endfunction()
