// Requests that do not parse get INVALID_ARGUMENT naming what is wrong. gRPC's callback server
// answers a request message it cannot parse with UNIMPLEMENTED and no message, the same answer
// as for a method it does not have; the commonest cause from a real client is a string field
// holding bytes that are not UTF-8, which protobuf reports (naming the field) only to its log.
// Every ServerHost installs this interceptor: it learns of the failed parse, takes the field's
// name from protobuf's report, and rewrites the call's status. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "grpcpp/support/server_interceptor.h"

namespace arbor::rpc {

// The interceptor factory every Arbor server installs. Also routes protobuf's own log lines to
// spdlog (once per process).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewParseErrorInterceptorFactory();

// The message a request that did not parse gets: "string field arbor.v1.SolveRequest.problem is
// not valid UTF-8" when protobuf named the field (`utf8_field`), otherwise a generic one naming
// the method.
std::string ParseErrorMessage(const std::string& method, const std::string& utf8_field);

}  // namespace arbor::rpc
