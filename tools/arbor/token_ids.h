// The ids file `arbor score --ids_file` reads: decimal token ids separated by whitespace or commas.
// The bytes are untrusted input.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::cli {

// The ids in `bytes`; INVALID_ARGUMENT naming `name` and the byte offset of anything that is not
// a separator or a decimal integer up to 2^31 - 1, or saying how few ids there are (scoring needs
// at least 2). Vocabulary bounds are the model's to check.
absl::StatusOr<std::vector<int>> ParseTokenIds(const std::string& bytes, const std::string& name);

}  // namespace arbor::cli
