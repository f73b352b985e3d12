// The one place where absl::Status and grpc::Status meet.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace arbor::rpc {

// Same code, same message.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// Same code, the message prefixed with `context` and ": " (which call failed, on what).
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view context);

}  // namespace arbor::rpc
