// Structured logging for every Arbor binary: spdlog, one line per event, key=value fields.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

namespace arbor {

// Sets the global level from a name ("trace", "debug", "info", "warn", "error", "off").
// INVALID_ARGUMENT names the bad level.
absl::Status InitLogging(absl::string_view level);

}  // namespace arbor
