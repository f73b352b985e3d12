// The router's typed client: Extend streamed to a callback, Tokenize (retried while the router is
// UNAVAILABLE). Errors name the call and its sequence ("router Extend of sequence 4: ...").
// Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "arbor/mesh/call.h"
#include "arbor/v1/router.grpc.pb.h"

namespace arbor::mesh {

class RouterClient {
 public:
  explicit RouterClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  // Runs `req` to its end, `on_event` seeing every token and the result; `on_event` returning
  // false cancels the Extend (CANCELLED; the router commits nothing). Never retried.
  absl::Status Extend(const v1::ExtendRequest& req, Deadline deadline,
                      const std::function<bool(const v1::ExtendEvent&)>& on_event);
  absl::StatusOr<std::vector<int>> Tokenize(const std::string& text, bool add_bos,
                                            Deadline deadline);
  // Extends of this client running now (its caller's load on the router).
  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> in_flight_{0};
  std::unique_ptr<v1::Router::Stub> stub_;
  CallPolicy policy_;
};

}  // namespace arbor::mesh
