#include "stages/schema/schema_set.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "stages/schema/compile.h"

namespace evpipe::stages::schema {

namespace dom = simdjson::dom;
namespace fs = std::filesystem;

namespace {
// Ids of schema sets (walker::kind_memo): never 0, never reused.
std::atomic<uint64_t> next_set_id{1};
}  // namespace

schema_set::schema_set(set_options opts) : opts_(std::move(opts)), id_(next_set_id.fetch_add(1)) {
  std::string_view rest = opts_.version_path;
  while (!rest.empty()) {
    size_t dot = rest.find('.');
    version_steps_.emplace_back(rest.substr(0, dot));
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  }
}

void schema_set::add(const std::string& kind, const std::string& version, std::shared_ptr<const program> p) {
  id_ = next_set_id.fetch_add(1);  // entries may move: no walker's memo of this set holds
  auto& k = kinds_[kind];
  if (version.empty()) k.any_version = std::move(p);
  else k.by_version[version] = std::move(p);
  ++files_;
}

std::shared_ptr<const schema_set> schema_set::load(const set_options& opts) {
  auto set = std::make_shared<schema_set>(opts);
  std::error_code ec;
  if (!fs::is_directory(opts.dir, ec)) throw schema_error("schema directory \"" + opts.dir + "\" is not a directory");
  // Sorted, so that the first bad file named is the same on every run.
  auto sorted = [](const fs::path& dir) {
    std::vector<fs::directory_entry> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
    return out;
  };
  try {
    for (const auto& e : sorted(opts.dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_directory()) {
        for (const auto& v : sorted(e.path())) {
          if (!v.is_regular_file() || v.path().extension() != ".json") continue;
          const std::string version = v.path().stem().string();
          set->add(name, version, compile_schema_file(v.path().string(), name + "/" + v.path().filename().string()));
        }
      } else if (e.is_regular_file() && e.path().extension() == ".json") {
        set->add(e.path().stem().string(), "", compile_schema_file(e.path().string(), name));
      }
      // Anything else (a README) is not a schema.
    }
  } catch (const fs::filesystem_error& fe) {
    throw schema_error(std::string("reading the schema directory: ") + fe.what());
  }
  return set;
}

const program* schema_set::pick(const kind_schemas& k, dom::element event, std::string& unknown) const {
  if (k.by_version.empty()) return k.any_version.get();
  // The version, where the config says events carry it.
  dom::element v = event;
  bool found = !version_steps_.empty();
  for (const auto& step : version_steps_) {
    if (v.at_key(step).get(v) != simdjson::SUCCESS) {
      found = false;
      break;
    }
  }
  std::string_view text;
  char digits[24];
  if (found) {
    int64_t i = 0;
    uint64_t u = 0;
    if (v.get_string().get(text) == simdjson::SUCCESS) {
    } else if (v.get_int64().get(i) == simdjson::SUCCESS) {
      text = std::string_view(digits, std::to_chars(digits, digits + sizeof digits, i).ptr - digits);
    } else if (v.get_uint64().get(u) == simdjson::SUCCESS) {
      text = std::string_view(digits, std::to_chars(digits, digits + sizeof digits, u).ptr - digits);
    } else {
      unknown = "a version that is not a string or an integer (" + simdjson::minify(v) + ")";
      return nullptr;
    }
    if (auto it = k.by_version.find(absl::string_view(text.data(), text.size())); it != k.by_version.end()) return it->second.get();
  }
  if (!found && k.any_version) return k.any_version.get();  // no version: <kind>.json
  unknown = found ? "version \"" + std::string(text) + "\"" : "no version at " + opts_.version_path;
  return nullptr;
}

namespace {

// Byte equality of two kinds without a call to memcmp for up to 16 bytes
// (kinds are short): two overlapping loads from each.
bool same_kind(std::string_view a, std::string_view b) noexcept {
  const size_t n = a.size();
  if (n != b.size()) return false;
  if (n < 8 || n > 16) return a == b;
  uint64_t a0, a1, b0, b1;
  std::memcpy(&a0, a.data(), 8), std::memcpy(&a1, a.data() + n - 8, 8);
  std::memcpy(&b0, b.data(), 8), std::memcpy(&b1, b.data() + n - 8, 8);
  return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

// The message of a payload that fails: it is walked a second time, keeping
// the path. Out of line: the passing events never come here.
[[gnu::noinline]] validation describe_failure(const program& p, const dom::document& event, size_t payload, walker& w) {
  violation why;
  (void)w.check(p, event, payload, &why);
  return validation{reason::schema_violation, "/payload" + why.pointer + ": " + std::string(keyword_name(why.what)) +
                                                  ": " + why.detail + " (" + p.file + why.schema_at + ")"};
}

// The payload of `event` against `p`: the verdict alone first.
[[gnu::always_inline]] inline validation check_payload(const program& p, const dom::document& event, walker& w) {
  // The payload among the event's members, on the tape (the envelope
  // check requires it, once): usually the last member, found from the
  // event's end; else looked for from the start.
  const tape::view t = tape::of(event);
  if (tape::type_at(t, tape::root) != '{') return {};
  size_t payload = tape::last_member_object(t, tape::root, "payload");
  if (payload == 0) payload = tape::member(t, tape::root, "payload");
  if (payload == 0 || w.check(p, event, payload)) return {};
  return describe_failure(p, event, payload, w);
}

}  // namespace

validation schema_set::check(std::string_view kind, const dom::document& event, walker& w) const {
  walker::kind_memo& memo = w.last_kind;
  if (memo.set_id != id_ || !same_kind(memo.kind, kind)) {
    auto it = kinds_.find(absl::string_view(kind.data(), kind.size()));  // absl's own string_view here
    memo.set_id = id_;
    memo.kind.assign(kind);  // reuses its capacity: allocates only for a kind longer than any before
    memo.entry = it == kinds_.end() ? nullptr : &it->second;
  }
  const auto* k = static_cast<const kind_schemas*>(memo.entry);
  if (!k) return {};
  if (!k->by_version.empty()) return check_versioned(*k, kind, event, w);
  return check_payload(*k->any_version, event, w);
}

validation schema_set::check_versioned(const kind_schemas& k, std::string_view kind, const dom::document& event,
                                       walker& w) const {
  std::string unknown;
  const program* p = pick(k, event.root(), unknown);
  if (!p) {
    if (!opts_.dead_letter_unknown_version) return {};
    std::vector<std::string> known;
    for (const auto& [v, _] : k.by_version) known.push_back(v);
    std::sort(known.begin(), known.end());
    std::string list;
    for (const auto& v : known) list += (list.empty() ? "" : ", ") + v;
    return validation{reason::unknown_schema_version,
                      "kind " + std::string(kind) + " has no schema for " + unknown + " (versions: " + list + ")"};
  }
  return check_payload(*p, event, w);
}

}  // namespace evpipe::stages::schema
