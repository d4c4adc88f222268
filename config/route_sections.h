// Internal to evpipe::config: the [[routes]] sections (parse and print).
#pragma once

#include <toml++/toml.h>

#include <string>
#include <vector>

#include "config/config.h"

namespace evpipe::config::detail {

// Parses root["routes"] (an array of tables); throws config_error naming the
// route ("[[routes]] \"name\"") and the key.
std::vector<route> parse_routes(const toml::node& routes, const std::string& origin);

// The routes as check-config prints them; load_string reads them back.
toml::array routes_to_toml(const std::vector<route>& routes);

}  // namespace evpipe::config::detail
