#include "arbor/mesh/router_client.h"

#include "absl/strings/str_cat.h"

namespace arbor::mesh {

RouterClient::RouterClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : stub_(v1::Router::NewStub(std::move(channel))), policy_(options) {}

absl::Status RouterClient::Extend(const v1::ExtendRequest& req, Deadline deadline,
                                  const std::function<bool(const v1::ExtendEvent&)>& on_event) {
  return policy_.Stream<v1::ExtendEvent>(
      deadline, absl::StrCat("router Extend of sequence ", req.sequence_id()),
      [&](grpc::ClientContext& ctx) { return stub_->Extend(&ctx, req); }, on_event);
}

absl::StatusOr<std::vector<int>> RouterClient::Tokenize(const std::string& text, bool add_bos,
                                                        Deadline deadline) {
  v1::TokenizeRequest req;
  req.set_text(text);
  req.set_add_bos(add_bos);
  v1::TokenizeResponse resp;
  absl::Status st =
      policy_.Run(Repeat::kIdempotent, deadline, "router Tokenize",
                  [&](grpc::ClientContext& ctx) { return stub_->Tokenize(&ctx, req, &resp); });
  if (!st.ok()) return st;
  return std::vector<int>(resp.ids().begin(), resp.ids().end());
}

}  // namespace arbor::mesh
