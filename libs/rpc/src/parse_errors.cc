#include "arbor/rpc/parse_errors.h"

#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "spdlog/spdlog.h"

namespace arbor::rpc {
namespace {

// The string field protobuf last reported as invalid UTF-8 while parsing on this thread. gRPC
// creates a call's interceptors, parses its request and runs the first interception batch on one
// thread, in that order, so the interceptor clears this before the parse and reads it after.
thread_local std::string utf8_field;

// protobuf 3.21: "String field 'arbor.v1.X.y' contains invalid UTF-8 data when parsing a
// protocol buffer. ..." (also "when serializing", on the client side, which is not recorded).
void OnProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                   const std::string& message) {
  constexpr absl::string_view kHead = "String field '";
  if (absl::StartsWith(message, kHead) && absl::StrContains(message, "when parsing")) {
    const size_t end = message.find('\'', kHead.size());
    if (end != std::string::npos) {
      utf8_field = message.substr(kHead.size(), end - kHead.size());
      return;
    }
  }
  const auto spd = level >= google::protobuf::LOGLEVEL_ERROR     ? spdlog::level::err
                   : level == google::protobuf::LOGLEVEL_WARNING ? spdlog::level::warn
                                                                 : spdlog::level::info;
  spdlog::log(spd, "protobuf {}:{}: {}", filename, line, message);
}

class ParseErrorInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(std::string method) : method_(std::move(method)) {
    utf8_field.clear();  // before this call's request is parsed
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    using grpc::experimental::InterceptionHookPoints;
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        m->GetRecvMessage() == nullptr) {
      failed_ = true;
      field_ = utf8_field;
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) && failed_ &&
        m->GetSendStatus().error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      m->ModifySendStatus(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, ParseErrorMessage(method_, field_)));
    }
    m->Proceed();
  }

 private:
  const std::string method_;
  bool failed_ = false;
  std::string field_;
};

class ParseErrorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ParseErrorInterceptor(info->method() != nullptr ? info->method() : "");
  }
};

}  // namespace

std::string ParseErrorMessage(const std::string& method, const std::string& utf8_field) {
  if (!utf8_field.empty()) {
    return absl::StrCat("string field ", utf8_field, " is not valid UTF-8");
  }
  return absl::StrCat("the request to ", method, " is not a valid message of its type");
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewParseErrorInterceptorFactory() {
  static std::once_flag once;
  std::call_once(once, [] { google::protobuf::SetLogHandler(&OnProtobufLog); });
  return std::make_unique<ParseErrorFactory>();
}

}  // namespace arbor::rpc
