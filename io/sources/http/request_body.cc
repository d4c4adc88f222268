#include "io/sources/http/request_body.h"

#include <cctype>

#include "stages/big_numbers.h"

namespace evpipe::io {

body_form form_of(std::string_view content_type) {
  auto semi = content_type.find(';');
  std::string type(content_type.substr(0, semi));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (type.empty() || type == "application/json") return body_form::json;
  if (type == "application/x-ndjson" || type == "application/ndjson" || type == "application/jsonl" ||
      type == "application/x-jsonlines") {
    return body_form::ndjson;
  }
  if (type == "text/plain") return body_form::text;
  return body_form::unsupported;
}

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}
}  // namespace

// Splits a body into its events (views into `body`); false with `error` set
// when it is in none of the accepted forms.
bool split_events(const simdjson::padded_string& body, body_form form, std::vector<std::string_view>& out,
                  std::string& error) {
  std::string_view all(body.data(), body.size());
  if (form == body_form::ndjson) {
    size_t start = 0;
    while (start <= all.size()) {
      size_t nl = all.find('\n', start);
      std::string_view line = all.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!trim(line).empty()) out.push_back(line);
      if (nl == std::string_view::npos) break;
      start = nl + 1;
    }
    return true;
  }
  // JSON: one event object, or an array of events. The whole body must parse.
  simdjson::dom::parser dom;
  simdjson::dom::element root;
  auto err = dom.parse(body).get(root);
  std::string marked;
  if (err == simdjson::NUMBER_ERROR && stages::mark_big_numbers(all, marked, true)) {
    // Numbers beyond 64-bit integers or a double: the body's structure is
    // checked on a copy with them marked, and each event meets its own rules
    // (an envelope refuses them; a route may store them).
    err = dom.parse(simdjson::padded_string(marked)).get(root);
  }
  if (err) {
    error = std::string("the body is not JSON (") + simdjson::error_message(err) +
            "); send one event, an array of events, or NDJSON with Content-Type: application/x-ndjson";
    return false;
  }
  if (root.is_object()) {
    out.push_back(trim(all));
    return true;
  }
  if (!root.is_array()) {
    error = "a JSON body must be one event object or an array of events";
    return false;
  }
  // The elements' own bytes, so that each is stored exactly as sent.
  simdjson::ondemand::parser od;
  simdjson::ondemand::document doc;
  simdjson::ondemand::array arr;
  if (od.iterate(body).get(doc) || doc.get_array().get(arr)) {
    error = "cannot read the JSON array";
    return false;
  }
  for (auto el : arr) {
    simdjson::ondemand::value v;
    simdjson::ondemand::json_type type;
    std::string_view raw;
    bool failed = el.get(v) || v.type().get(type);
    if (!failed) {
      if (type == simdjson::ondemand::json_type::object) {
        simdjson::ondemand::object o;
        failed = v.get_object().get(o) || o.raw_json().get(raw);
      } else if (type == simdjson::ondemand::json_type::array) {
        simdjson::ondemand::array a;
        failed = v.get_array().get(a) || a.raw_json().get(raw);
      } else {
        // A scalar (not an event; dead-lettered as invalid_json): its token.
        raw = v.raw_json_token();
      }
    }
    if (failed) {
      error = "cannot read an element of the JSON array";
      return false;
    }
    out.push_back(trim(raw));
  }
  return true;
}

}  // namespace evpipe::io
