#pragma once
// The systemd notify protocol (Type=notify in deploy/systemd/evpipe.service):
// READY=1 once evpipe serves, WATCHDOG=1 pings while its I/O loop runs, and
// STOPPING=1 when it drains. Every call is a no-op when NOTIFY_SOCKET is unset
// (not started by systemd), so the daemon calls them unconditionally.

#include <boost/asio/io_context.hpp>

#include <string>

namespace evpipe::app::service_notify {

// Sends READY=1, to be called once the sources listen and the database has
// answered. When the service manager asked for a watchdog (WatchdogSec= sets
// WATCHDOG_USEC), also starts pinging at half that interval from a timer on
// `ioc`: a wedged I/O loop stops the pings, and systemd restarts evpipe.
void ready(boost::asio::io_context& ioc);

// Sends STATUS=waiting for PostgreSQL: <why>, to be called instead of ready()
// once the sources listen while the database is away ([postgres] startup =
// "wait"): `systemctl status` shows why the unit is still activating, and
// READY=1 follows when the database answers.
void waiting_for_database(const std::string& why);

// Sends STOPPING=1 (the drain has begun; systemd waits up to TimeoutStopSec).
void stopping();

}  // namespace evpipe::app::service_notify
