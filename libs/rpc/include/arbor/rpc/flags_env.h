// Environment overrides for absl flags, for Kubernetes: ARBOR_<FLAG_NAME> (upper case) sets
// --<flag_name>. Order of precedence: command line, then environment, then the default.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace arbor::rpc {

// Call before absl::ParseCommandLine. INVALID_ARGUMENT names the variable whose value does not
// parse for its flag.
absl::Status ApplyFlagEnvOverrides(absl::string_view prefix = "ARBOR_");

}  // namespace arbor::rpc
