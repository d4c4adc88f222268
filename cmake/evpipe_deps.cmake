# Every dependency is a Debian 12 package (scripts/lib.sh installs them);
# nothing is downloaded. This file finds them once for all folders.
find_package(Threads REQUIRED)
find_package(Boost 1.81 REQUIRED CONFIG)            # Asio, Beast (header-only parts)
find_package(simdjson REQUIRED CONFIG)
find_package(PostgreSQL REQUIRED)                   # libpq
find_package(OpenSSL REQUIRED)                      # mqtts:// (Asio SSL)
find_package(tomlplusplus REQUIRED CONFIG)
find_package(spdlog REQUIRED CONFIG)
find_package(CLI11 REQUIRED CONFIG)
find_package(absl REQUIRED CONFIG)
find_package(PkgConfig REQUIRED)
pkg_check_modules(libsystemd REQUIRED IMPORTED_TARGET libsystemd)  # sd_notify (app/service_notify.cc)
pkg_check_modules(re2 REQUIRED IMPORTED_TARGET re2)  # payload schemas' `pattern` (stages/schema) and the config's checks (config/; linear time, no recursion), libre2-dev
if(EVPIPE_USE_MIMALLOC)
  find_package(mimalloc REQUIRED CONFIG)
endif()

# Header-only packages without a CMake config.
find_path(CONCURRENTQUEUE_INCLUDE_DIR concurrentqueue/blockingconcurrentqueue.h REQUIRED)
add_library(evpipe_concurrentqueue INTERFACE)
target_include_directories(evpipe_concurrentqueue SYSTEM INTERFACE ${CONCURRENTQUEUE_INCLUDE_DIR})
add_library(moodycamel::concurrentqueue ALIAS evpipe_concurrentqueue)

find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_LIBRARY xxhash REQUIRED)
add_library(evpipe_xxhash INTERFACE)
target_include_directories(evpipe_xxhash SYSTEM INTERFACE ${XXHASH_INCLUDE_DIR})
target_link_libraries(evpipe_xxhash INTERFACE ${XXHASH_LIBRARY})
add_library(xxhash::xxhash ALIAS evpipe_xxhash)
