// An expert worker's typed client: Describe (retried; waits for a worker still starting, to the
// deadline) and RunExperts, asynchronous so that a router sends every worker its rows at once.
// The router's RemoteExpertBackend does its own failover across replicas, so RunExperts is not
// retried here. Errors name the worker ("expert worker 127.0.0.1:50061 RunExperts of layer 3:
// ..."). Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "arbor/mesh/call.h"
#include "arbor/v1/expert.grpc.pb.h"

namespace arbor::mesh {

// A RunExperts call in flight. Keep it until its `done` has run, then destroy it (the call's
// context lives here, not in the callback: gRPC must not destroy it while completing the call).
class AsyncCall {
 private:
  friend class ExpertClient;
  grpc::ClientContext ctx_;
};

class ExpertClient {
 public:
  ExpertClient(const std::string& address, ClientOptions options = {});

  const std::string& address() const { return address_; }
  absl::StatusOr<v1::DescribeResponse> Describe(Deadline deadline);
  // Sends `req`; `done` runs once (on a gRPC thread; it must not block) with the status, after
  // `resp` is filled. `req`, `resp`, the returned call and this client must live until then. The
  // status keeps its gRPC code.
  std::unique_ptr<AsyncCall> RunExpertsAsync(const v1::RunExpertsRequest* req,
                                             v1::RunExpertsResponse* resp, Deadline deadline,
                                             std::function<void(absl::Status)> done);

 private:
  std::string address_;
  std::unique_ptr<v1::ExpertWorker::Stub> stub_;
  CallPolicy policy_;
};

}  // namespace arbor::mesh
