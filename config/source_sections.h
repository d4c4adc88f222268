// Internal to evpipe::config: the [[sources.*]] sections other than tcp.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "config/config.h"

namespace evpipe::config::detail {

mqtt_source parse_mqtt(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir);
http_source parse_http(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir);
// [[sources.nats]] (nats_section.cc), and its check-config rendering.
nats_source parse_nats(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir);
toml::table nats_to_toml(const nats_source& n);

}  // namespace evpipe::config::detail
