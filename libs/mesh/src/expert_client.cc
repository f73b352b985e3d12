#include "arbor/mesh/expert_client.h"

#include "absl/strings/str_cat.h"

namespace arbor::mesh {

ExpertClient::ExpertClient(const std::string& address, ClientOptions options)
    : address_(address), stub_(v1::ExpertWorker::NewStub(NewChannel(address))), policy_(options) {}

absl::StatusOr<v1::DescribeResponse> ExpertClient::Describe(Deadline deadline) {
  return policy_.Call<v1::DescribeResponse>(
      Repeat::kIdempotent, deadline, absl::StrCat("expert worker ", address_, " Describe"),
      [&](grpc::ClientContext& ctx, auto* resp) {
        return stub_->Describe(&ctx, v1::DescribeRequest(), resp);
      },
      /*wait_for_ready=*/true);
}

std::unique_ptr<AsyncCall> ExpertClient::RunExpertsAsync(const v1::RunExpertsRequest* req,
                                                         v1::RunExpertsResponse* resp,
                                                         Deadline deadline,
                                                         std::function<void(absl::Status)> done) {
  auto call = std::make_unique<AsyncCall>();
  policy_.Prepare(call->ctx_, policy_.DeadlineFor(deadline), false);
  stub_->async()->RunExperts(
      &call->ctx_, req, resp,
      // The error's context is built only on failure: this runs per worker, layer and step.
      [this, done = std::move(done), layer = req->layer()](grpc::Status s) {
        done(s.ok() ? absl::OkStatus()
                    : rpc::FromGrpcStatus(s, absl::StrCat("expert worker ", address_,
                                                          " RunExperts of layer ", layer)));
      });
  return call;
}

}  // namespace arbor::mesh
