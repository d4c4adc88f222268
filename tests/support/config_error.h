#pragma once
// What the config tests share: the message a configuration text is refused
// with.

#include <string>

#include "config/config.h"

namespace evpipe::testing {

// The config_error that loading `toml` (named test.toml) throws, as text;
// "" when it loads.
inline std::string config_error_of(const std::string& toml) {
  try {
    (void)config::load_string(toml, "test.toml");
  } catch (const config::config_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace evpipe::testing
