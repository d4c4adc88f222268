// [schemas] (config/schemas_section.cc): defaults, bounds, and the schema
// directory resolved against the config file's folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "config/reload.h"

namespace evpipe::config {
namespace {

const char* const source = "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\n";

TEST(schemas_section, off_by_default) {
  auto s = load_string(source);
  EXPECT_FALSE(s.schemas.enabled);
  EXPECT_EQ(s.schemas.dir, "schemas/kinds/");
  EXPECT_EQ(s.schemas.version_path, "payload.version");
  EXPECT_EQ(s.schemas.unknown_version, "accept");
}

TEST(schemas_section, relative_dir_is_taken_from_the_config_files_folder) {
  auto dir = std::filesystem::temp_directory_path() / ("evpipe-schemas-cfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "conf");
  std::ofstream(dir / "conf" / "evpipe.toml")
      << source << "[schemas]\nenabled = true\ndir = \"kinds\"\nversion_path = \"meta.v\"\nunknown_version = \"dead_letter\"\n";
  auto s = load_file((dir / "conf" / "evpipe.toml").string());
  EXPECT_TRUE(s.schemas.enabled);
  EXPECT_EQ(s.schemas.dir, (dir / "conf" / "kinds").string());
  EXPECT_EQ(s.schemas.version_path, "meta.v");
  EXPECT_EQ(s.schemas.unknown_version, "dead_letter");
  EXPECT_NE(to_toml(s).find("unknown_version = 'dead_letter'"), std::string::npos) << to_toml(s);
  std::filesystem::remove_all(dir);
}

TEST(schemas_section, bad_values_are_refused_by_key) {
  auto refused = [](const std::string& body) {
    try {
      (void)load_string(std::string(source) + "[schemas]\n" + body, "t.toml");
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refused("unknown_version = \"drop\"\n").find("[schemas] unknown_version: must be"), std::string::npos);
  EXPECT_NE(refused("version_path = \"a..b\"\n").find("[schemas] version_path"), std::string::npos);
  EXPECT_NE(refused("dir = \"\"\n").find("[schemas] dir: must not be empty"), std::string::npos);
  EXPECT_NE(refused("enable = true\n").find("unknown key \"enable\""), std::string::npos);
}

TEST(schemas_section, a_reload_applies_it_live) {
  auto a = load_string(source);
  auto b = load_string(std::string(source) + "[schemas]\nenabled = true\n");
  auto plan = plan_reload(a, b);
  EXPECT_TRUE(plan.kept.empty()) << plan.kept.front();
  EXPECT_TRUE(plan.effective.schemas.enabled);
}

}  // namespace
}  // namespace evpipe::config
