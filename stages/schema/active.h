#pragma once
// The schema set of the running process, swapped whole on reload.
//
// app/ installs it at startup and on SIGHUP (from the reload thread); intake
// reads it on every I/O thread. Each thread holds its own reference to the
// set it last saw and takes the new one when the generation changes, so one
// event is checked against one complete set, never half of one, and a set is
// freed only once no thread uses it. Reading costs one atomic load per event.

#include <memory>

#include "config/schemas_section.h"
#include "stages/schema/schema_set.h"

namespace evpipe::stages::schema {

// nullptr turns payload schemas off.
void set_active_schemas(std::shared_ptr<const schema_set> set);

// Loads the set [schemas] names and makes it active (or turns schemas off
// when disabled). Throws schema_error and leaves the active set as it was
// when a file fails. Returns how many schema files are active.
size_t install_schemas(const config::schemas_section& cfg);

// This thread's snapshot of the active set; nullptr when schemas are off.
// Valid until this thread's next call.
[[nodiscard]] const schema_set* thread_schemas() noexcept;

// This thread's walker (its path buffer is reused).
[[nodiscard]] walker& thread_walker() noexcept;

}  // namespace evpipe::stages::schema
