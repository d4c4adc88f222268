# Install rules and the Debian package (issue 15): `cpack -G DEB` in the build
# directory writes evpipe_<version>_amd64.deb with
#   /usr/bin/evpipe, /usr/bin/evpipe-load
#   /etc/evpipe/evpipe.toml                (a conffile: dpkg keeps local edits)
#   /lib/systemd/system/evpipe.service     (deploy/systemd)
#   /usr/share/evpipe/deploy/              (prometheus rules, grafana dashboard)
#   /usr/share/doc/evpipe/                 (README, operations and architecture docs)
# postinst creates the evpipe system user; dependencies come from dpkg-shlibdeps.
# Tested by tests/deploy/package_test.sh (build, lintian, install, run, purge).
include(GNUInstallDirs)
install(TARGETS evpipe evpipe-load RUNTIME DESTINATION bin)
# 0644 in the package (lintian); postinst makes it 0640 root:evpipe, as it may hold the DSN's password.
install(FILES ${PROJECT_SOURCE_DIR}/config/evpipe.toml DESTINATION /etc/evpipe)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/evpipe.service DESTINATION /lib/systemd/system)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/ DESTINATION share/evpipe/deploy)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/operations.md
              ${PROJECT_SOURCE_DIR}/docs/architecture.md ${PROJECT_SOURCE_DIR}/cmake/package/copyright
        DESTINATION share/doc/evpipe)

# Debian wants a gzipped changelog in the doc folder (lintian: no-changelog).
configure_file(${PROJECT_SOURCE_DIR}/cmake/package/changelog.in ${CMAKE_CURRENT_BINARY_DIR}/package/changelog @ONLY)
execute_process(COMMAND gzip -9nf ${CMAKE_CURRENT_BINARY_DIR}/package/changelog)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/package/changelog.gz DESTINATION share/doc/evpipe)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME evpipe)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(EVPIPE_PACKAGE_MAINTAINER "evpipe maintainers <evpipe@example.org>" CACHE STRING "Maintainer field of the .deb")
set(CPACK_PACKAGE_CONTACT "${EVPIPE_PACKAGE_MAINTAINER}")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "ingest JSON events over TCP, MQTT and HTTP into PostgreSQL")
set(CPACK_PACKAGE_DESCRIPTION "evpipe validates and deduplicates JSON events and writes them to PostgreSQL
with COPY, acknowledging each event to its source only after its outcome
is committed. Ships a systemd unit, Prometheus alerts and a Grafana dashboard.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/cmake/package/conffiles
    ${PROJECT_SOURCE_DIR}/cmake/package/postinst
    ${PROJECT_SOURCE_DIR}/cmake/package/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
