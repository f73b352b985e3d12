#include "arbor/mesh/router_client.h"

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::mesh {

RouterClient::RouterClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : stub_(v1::Router::NewStub(std::move(channel))), policy_(options) {}

absl::Status RouterClient::Extend(const v1::ExtendRequest& req, Deadline deadline,
                                  const std::function<bool(const v1::ExtendEvent&)>& on_event) {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  struct Done {
    std::atomic<int>& n;
    ~Done() { n.fetch_sub(1, std::memory_order_relaxed); }
  } done{in_flight_};
  return policy_.Stream<v1::ExtendEvent>(
      deadline, absl::StrCat("router Extend of sequence ", req.sequence_id()),
      [&](grpc::ClientContext& ctx) { return stub_->Extend(&ctx, req); }, on_event);
}

absl::StatusOr<std::vector<int>> RouterClient::Tokenize(const std::string& text, bool add_bos,
                                                        Deadline deadline) {
  v1::TokenizeRequest req;
  req.set_text(text);
  req.set_add_bos(add_bos);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::TokenizeResponse resp,
      policy_.Call<v1::TokenizeResponse>(
          Repeat::kIdempotent, deadline, "router Tokenize",
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->Tokenize(&ctx, req, resp); }));
  return std::vector<int>(resp.ids().begin(), resp.ids().end());
}

}  // namespace arbor::mesh
