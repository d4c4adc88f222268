#pragma once
// The systemd notify protocol (Type=notify in deploy/systemd/evpipe.service):
// READY=1 once evpipe serves, WATCHDOG=1 pings while its I/O loop runs, and
// STOPPING=1 when it drains. Every call is a no-op when NOTIFY_SOCKET is unset
// (not started by systemd), so the daemon calls them unconditionally.

#include <boost/asio/io_context.hpp>

namespace evpipe::app::service_notify {

// Sends READY=1, to be called once the sources listen and the database has
// answered. When the service manager asked for a watchdog (WatchdogSec= sets
// WATCHDOG_USEC), also starts pinging at half that interval from a timer on
// `ioc`: a wedged I/O loop stops the pings, and systemd restarts evpipe.
void ready(boost::asio::io_context& ioc);

// Sends STOPPING=1 (the drain has begun; systemd waits up to TimeoutStopSec).
void stopping();

}  // namespace evpipe::app::service_notify
