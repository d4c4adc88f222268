#pragma once
// JSON Schema (2020-12, the subset docs/schemas.md lists) -> program.
//
// Runs at startup and on reload, never on the hot path: it throws
// schema_error naming the file, the JSON pointer inside it and the problem.
// Every keyword is either compiled into a check, accepted as an annotation
// (title, description, ...), or refused: none is silently ignored.

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "stages/schema/program.h"

namespace evpipe::stages::schema {

class schema_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Compiles one schema document. `file` names it in messages.
[[nodiscard]] std::shared_ptr<const program> compile_schema(std::string_view json_text, const std::string& file);

// Reads and compiles a file; `name` is how messages call it.
[[nodiscard]] std::shared_ptr<const program> compile_schema_file(const std::string& path, const std::string& name);

}  // namespace evpipe::stages::schema
