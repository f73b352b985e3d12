// The router in one process: the real router and kv-store on loopback over the checked-in test
// model (token ids, experts on the CPU). KV admission (an Extend that waits for room, one that can
// never fit), KV fetched across segment boundaries by a router with an empty cache, the commit
// of new tokens with their KV, and cancellation before and during the commit. The pure parts
// (fetch-range split, commit assembly, admission order) are tested without a mesh.
#include "router_service.h"

#include <thread>

#include "gtest/gtest.h"
#include "in_process_mesh_for_test.h"

namespace arbor::router {
namespace {

using std::chrono::seconds;

// ---- without a mesh ----

v1::PathSegment Segment(uint64_t id, int start, int length) {
  v1::PathSegment s;
  s.set_segment_id(id);
  s.set_start(start);
  s.set_length(length);
  return s;
}

TEST(SplitFetchTest, RangesStartAndEndInsideSegments) {
  const std::vector<v1::PathSegment> path = {Segment(7, 0, 10), Segment(3, 10, 5),
                                             Segment(9, 15, 20)};
  std::vector<FetchRange> r = SplitFetch(path, 4, 18);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].segment_id, 7u);
  EXPECT_EQ(r[0].first, 4);
  EXPECT_EQ(r[0].length, 6);
  EXPECT_EQ(r[0].position, 4);
  EXPECT_EQ(r[1].segment_id, 3u);
  EXPECT_EQ(r[1].first, 0);
  EXPECT_EQ(r[1].length, 5);
  EXPECT_EQ(r[2].segment_id, 9u);
  EXPECT_EQ(r[2].first, 0);
  EXPECT_EQ(r[2].length, 3);
  EXPECT_EQ(r[2].position, 15);
  EXPECT_TRUE(SplitFetch(path, 12, 12).empty());
  r = SplitFetch(path, 11, 13);  // inside one segment
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].first, 1);
  EXPECT_EQ(r[0].length, 2);
}

TEST(AssembleCommitTest, TokensAndKvInTheWireLayout) {
  const kvcache::KvLayout layout{2, 2, 4, 4};  // 32 floats per token
  absl::StatusOr<v1::CommitRequest> c = AssembleCommit(5, 9, {10, 11, 12}, layout, [](float* kv) {
    for (int i = 0; i < 3 * 32; ++i) kv[i] = static_cast<float>(i);
    return absl::OkStatus();
  });
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->sequence_id(), 5u);
  EXPECT_EQ(c->expected_version(), 9u);
  EXPECT_EQ(std::vector<int>(c->token_ids().begin(), c->token_ids().end()),
            (std::vector<int>{10, 11, 12}));
  EXPECT_EQ(std::vector<int64_t>(c->kv().shape().begin(), c->kv().shape().end()),
            (std::vector<int64_t>{3, 2, 2, 2, 4}));
  ASSERT_EQ(c->kv().data().size(), 3u * 32 * sizeof(float));
  EXPECT_EQ(reinterpret_cast<const float*>(c->kv().data().data())[95], 95.0f);
  // No new tokens: no KV.
  c = AssembleCommit(5, 9, {}, layout, [](float*) { return absl::InternalError("not called"); });
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_kv());
  // A failed read fails the commit.
  EXPECT_EQ(AssembleCommit(5, 9, {1}, layout, [](float*) { return absl::InternalError("x"); })
                .status()
                .code(),
            absl::StatusCode::kInternal);
}

TEST(KvAdmissionTest, WaitsInOrderAndRefusesWhatCanNeverFit) {
  KvAdmission<int> a(10);
  ASSERT_TRUE(a.Enqueue(1, 6, "job 1", 16).ok());
  EXPECT_EQ(a.AdmitWaiting(), std::vector<int>{1});
  ASSERT_TRUE(a.Enqueue(2, 6, "job 2", 16).ok());
  ASSERT_TRUE(a.Enqueue(3, 1, "job 3", 16).ok());
  EXPECT_TRUE(a.AdmitWaiting().empty());  // 3 would fit, but does not overtake 2
  EXPECT_EQ(a.waiting(), 2);
  const absl::Status too_big = a.Enqueue(4, 11, "job 4", 16);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(too_big.message(),
            "job 4 may need 176 tokens of KV; the router's cache holds 160 (--kv_cache_tokens)");
  a.Release(6);
  EXPECT_EQ(a.AdmitWaiting(), (std::vector<int>{2, 3}));
  EXPECT_EQ(a.reserved(), 7);
  ASSERT_TRUE(a.Enqueue(5, 9, "job 5", 16).ok());
  EXPECT_EQ(a.RemoveWaiting([](int j) { return j == 5; }), std::vector<int>{5});
  EXPECT_EQ(a.waiting(), 0);
}

// Tenants take turns: a tenant with a thousand waiting jobs does not hold another's one behind
// them; within a tenant the order holds; at most max_running run at once.
TEST(KvAdmissionTest, TenantsTakeTurns) {
  KvAdmission<int> a(1000, /*max_running=*/2);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(a.Enqueue(i, 1, "big", 16, "big").ok());
  ASSERT_TRUE(a.Enqueue(-1, 1, "small", 16, "small").ok());
  ASSERT_TRUE(a.Enqueue(-2, 1, "small", 16, "small").ok());
  EXPECT_EQ(a.AdmitWaiting(), (std::vector<int>{0, -1}));  // one each
  EXPECT_EQ(a.running(), 2);
  a.Release(1);
  EXPECT_EQ(a.AdmitWaiting(), std::vector<int>{1});  // big's turn
  a.Release(1);
  EXPECT_EQ(a.AdmitWaiting(), std::vector<int>{-2});  // small's second, not big's 998th
  a.Release(1);
  a.Release(1);
  EXPECT_EQ(a.AdmitWaiting(), (std::vector<int>{2, 3}));  // small is done: big runs on, in order
  EXPECT_EQ(a.waiting(), 996);
}

// ---- with the mesh ----

class RouterServiceTest : public ::testing::Test {
 protected:
  void TearDown() override { gate_.Open(); }  // a held Commit never outlives the test

  void StartMesh(RouterOptions options = {}, bool hold_commits = false) {
    testing::InProcessMeshOptions o{.router = options};
    if (hold_commits) {
      o.router_kv_interceptors = [this] {
        std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> v;
        v.push_back(std::make_unique<CommitGate::Factory>(&gate_));
        return v;
      };
    }
    auto mesh = testing::InProcessMesh::Start(o);
    ASSERT_TRUE(mesh.ok()) << mesh.status();
    mesh_ = std::move(*mesh);
    kv_ = v1::KvStore::NewStub(mesh_->kvstore_channel());
    router_ = v1::Router::NewStub(mesh_->router_channel());
  }

  uint64_t NewSequence() {
    grpc::ClientContext ctx;
    v1::CreateSequenceRequest req;
    v1::CreateSequenceResponse resp;
    EXPECT_TRUE(kv_->CreateSequence(&ctx, req, &resp).ok());
    return resp.sequence_id();
  }
  std::vector<uint64_t> Fork(uint64_t seq, int n) {
    grpc::ClientContext ctx;
    v1::ForkRequest req;
    req.set_sequence_id(seq);
    req.set_n(n);
    v1::ForkResponse resp;
    EXPECT_TRUE(kv_->Fork(&ctx, req, &resp).ok());
    return {resp.sequence_ids().begin(), resp.sequence_ids().end()};
  }
  v1::GetPathResponse Path(uint64_t seq) {
    grpc::ClientContext ctx;
    v1::GetPathRequest req;
    req.set_sequence_id(seq);
    req.set_include_token_ids(true);
    v1::GetPathResponse resp;
    EXPECT_TRUE(kv_->GetPath(&ctx, req, &resp).ok());
    return resp;
  }

  struct Extended {
    std::vector<int> tokens;
    v1::ExtendResult result;
    grpc::Status status;
  };
  static v1::ExtendRequest Request(uint64_t seq, std::vector<int> input, int max_tokens) {
    v1::ExtendRequest req;
    req.set_sequence_id(seq);
    for (int t : input) req.mutable_token_ids()->add_ids(t);
    req.mutable_params()->set_max_tokens(max_tokens);
    req.mutable_params()->set_ignore_eos(true);
    return req;
  }
  static v1::ExtendRequest Score(uint64_t seq, std::vector<int> input) {
    v1::ExtendRequest req = Request(seq, std::move(input), 0);
    req.mutable_params()->set_prompt_logprobs(true);
    req.mutable_params()->set_top_logprobs(2);
    return req;
  }
  static Extended Extend(v1::Router::Stub& router, const v1::ExtendRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(60));
    auto reader = router.Extend(&ctx, req);
    Extended out;
    v1::ExtendEvent e;
    while (reader->Read(&e)) {
      if (e.has_token()) out.tokens.push_back(e.token().id());
      if (e.has_result()) out.result = e.result();
    }
    out.status = reader->Finish();
    return out;
  }

  // Holds every router Commit to the kv-store before it is sent, until opened.
  class CommitGate {
   public:
    class Hold : public grpc::experimental::Interceptor {
     public:
      explicit Hold(CommitGate* gate) : gate_(gate) {}
      void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
        if (m->QueryInterceptionHookPoint(
                grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
          gate_->Pass();
        }
        m->Proceed();
      }

     private:
      CommitGate* gate_;
    };
    class Factory : public grpc::experimental::ClientInterceptorFactoryInterface {
     public:
      explicit Factory(CommitGate* gate) : gate_(gate) {}
      grpc::experimental::Interceptor* CreateClientInterceptor(
          grpc::experimental::ClientRpcInfo* info) override {
        return std::string(info->method()) == "/arbor.v1.KvStore/Commit" ? new Hold(gate_)
                                                                         : nullptr;
      }

     private:
      CommitGate* gate_;
    };

    void Pass() {
      absl::MutexLock lock(&mu_);
      ++held_;
      mu_.Await(absl::Condition(&open_));
    }
    bool WaitHeld(absl::Duration timeout) {
      absl::MutexLock lock(&mu_);
      auto some = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_ > 0; };
      return mu_.AwaitWithTimeout(absl::Condition(&some), timeout);
    }
    void Open() {
      absl::MutexLock lock(&mu_);
      open_ = true;
    }

   private:
    absl::Mutex mu_;
    int held_ ABSL_GUARDED_BY(mu_) = 0;
    bool open_ ABSL_GUARDED_BY(mu_) = false;
  };

  CommitGate gate_;  // before mesh_: the mesh's routers may be waiting in it until it opens
  std::unique_ptr<testing::InProcessMesh> mesh_;
  std::unique_ptr<v1::KvStore::Stub> kv_;
  std::unique_ptr<v1::Router::Stub> router_;
};

// The path is three segments (a prompt, a fork's extension, a second fork's extension); a router
// with an empty cache fetches KV ranges across all of them and must continue the sequence
// exactly as the router that computed it does.
TEST_F(RouterServiceTest, FetchAcrossSegmentsContinuesLikeTheCachedRouter) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  const uint64_t root = NewSequence();
  Extended e = Extend(*router_, Request(root, {1, 17, 33, 49, 65, 81, 97, 113, 129}, 6));
  ASSERT_TRUE(e.status.ok()) << e.status.error_message();
  const uint64_t child = Fork(root, 1)[0];
  e = Extend(*router_, Request(child, {20, 30, 40}, 5));
  ASSERT_TRUE(e.status.ok()) << e.status.error_message();
  EXPECT_EQ(e.result.generated_tokens(), 5);
  const std::vector<uint64_t> twins = Fork(child, 2);
  const v1::GetPathResponse path = Path(twins[0]);
  ASSERT_GE(path.segments_size(), 2);
  const uint64_t version = path.version();
  const int length = path.length();

  auto cold_host = mesh_->StartRouter({});
  ASSERT_TRUE(cold_host.ok()) << cold_host.status();
  auto cold = v1::Router::NewStub(
      grpc::CreateChannel((*cold_host)->address(), grpc::InsecureChannelCredentials()));
  Extended warm_run = Extend(*router_, Request(twins[0], {7}, 8));
  Extended cold_run = Extend(*cold, Request(twins[1], {7}, 8));
  ASSERT_TRUE(warm_run.status.ok()) << warm_run.status.error_message();
  ASSERT_TRUE(cold_run.status.ok()) << cold_run.status.error_message();
  EXPECT_EQ(cold_run.tokens, warm_run.tokens);
  // The warm router's cache keeps whole blocks only: it fetches at most the partial last one.
  EXPECT_LT(warm_run.result.fetched_tokens(), cold_run.result.fetched_tokens());
  // The cold router computes only the last context token; everything before it was fetched.
  EXPECT_EQ(cold_run.result.fetched_tokens(), length);
  EXPECT_EQ(cold_run.result.prefilled_tokens(), 1);
  // Both committed: the twins' paths hold the input and the generated tokens, at a new version.
  for (uint64_t seq : twins) {
    const v1::GetPathResponse after = Path(seq);
    EXPECT_EQ(after.length(), length + 1 + 8);
    EXPECT_NE(after.version(), version);
    EXPECT_EQ(after.token_ids(length), 7);
  }
  (*cold_host)->Shutdown();
}

// prompt_logprobs scores the input given the whole sequence: an input to an empty sequence from
// its second token, a continuation from its first (the router computes the path's last token
// instead of fetching its KV); a warm router and a cold one that fetches the path give the same
// scores as scoring the whole text at once, and the input is committed as by any Extend.
TEST_F(RouterServiceTest, PromptLogprobsScoreTheInputGivenTheWholeSequence) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  const std::vector<int> head = {1,   17,  33,  49,  65,  81,  97,  113, 129,
                                 145, 161, 177, 193, 209, 225, 241, 257, 273};
  const std::vector<int> tail = {20, 30, 40, 50};
  std::vector<int> whole = head;
  whole.insert(whole.end(), tail.begin(), tail.end());

  Extended all = Extend(*router_, Score(NewSequence(), whole));
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  ASSERT_EQ(all.result.prompt_logprobs_size(), static_cast<int>(whole.size()) - 1);
  EXPECT_TRUE(all.tokens.empty());
  for (int i = 0; i < all.result.prompt_logprobs_size(); ++i) {
    const v1::GeneratedToken& t = all.result.prompt_logprobs(i);
    EXPECT_EQ(t.id(), whole[i + 1]);
    EXPECT_LT(t.logprob(), 0.0f);
    ASSERT_EQ(t.top_logprobs_size(), 2);
    EXPECT_GE(t.top_logprobs(0).logprob(), t.logprob() - 1e-6f);
  }

  const uint64_t seq = NewSequence();
  Extended first = Extend(*router_, Score(seq, head));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.result.prompt_logprobs_size(), static_cast<int>(head.size()) - 1);
  const uint64_t twin = Fork(seq, 1)[0];
  Extended warm = Extend(*router_, Score(seq, tail));

  auto cold_host = mesh_->StartRouter({});
  ASSERT_TRUE(cold_host.ok()) << cold_host.status();
  auto cold_stub = v1::Router::NewStub(
      grpc::CreateChannel((*cold_host)->address(), grpc::InsecureChannelCredentials()));
  Extended cold = Extend(*cold_stub, Score(twin, tail));
  for (const Extended* e : {&warm, &cold}) {
    ASSERT_TRUE(e->status.ok()) << e->status.error_message();
    ASSERT_EQ(e->result.prompt_logprobs_size(), static_cast<int>(tail.size()));
    for (size_t i = 0; i < tail.size(); ++i) {
      const v1::GeneratedToken& want = all.result.prompt_logprobs(head.size() - 1 + i);
      EXPECT_EQ(e->result.prompt_logprobs(i).id(), tail[i]);
      EXPECT_NEAR(e->result.prompt_logprobs(i).logprob(), want.logprob(), 1e-4) << i;
    }
  }
  EXPECT_EQ(cold.result.fetched_tokens(), static_cast<int>(head.size()) - 1);
  EXPECT_EQ(cold.result.prefilled_tokens(), 1 + static_cast<int>(tail.size()));
  EXPECT_EQ(Path(seq).length(), static_cast<int>(whole.size()));
  EXPECT_EQ(Path(twin).length(), static_cast<int>(whole.size()));
  (*cold_host)->Shutdown();
}

// The cache holds 64 tokens; each Extend may need up to 40 (+2 partial blocks), so the second
// waits for the first to finish; one that may need more than the whole cache is refused at once.
TEST_F(RouterServiceTest, KvAdmissionWaitsForRoomAndRefusesWhatCanNeverFit) {
  RouterOptions options;
  options.engine.kv_cache_tokens = 64;
  options.engine.kv_block_tokens = 4;
  ASSERT_NO_FATAL_FAILURE(StartMesh(options));
  const uint64_t a = NewSequence(), b = NewSequence();
  Extended ra, rb;
  std::thread ta([&] { ra = Extend(*router_, Request(a, {1, 5, 9, 13}, 28)); });
  std::thread tb([&] { rb = Extend(*router_, Request(b, {1, 6, 10, 14}, 28)); });
  ta.join();
  tb.join();
  ASSERT_TRUE(ra.status.ok()) << ra.status.error_message();
  ASSERT_TRUE(rb.status.ok()) << rb.status.error_message();
  EXPECT_EQ(ra.tokens.size(), 28u);
  EXPECT_EQ(rb.tokens.size(), 28u);

  const uint64_t c = NewSequence();
  Extended rc = Extend(*router_, Request(c, {1, 2, 3}, 100));
  EXPECT_EQ(rc.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(rc.status.error_message().find("(--kv_cache_tokens)"), std::string::npos)
      << rc.status.error_message();
  EXPECT_EQ(Path(c).length(), 0);  // nothing committed
}

// KV admission reserves at most the model's context (4096 tokens for this model), not the
// --max_seq_tokens flag (32768 by default): an Extend that asks for more tokens than the context
// holds is admitted into a cache just over one context and stops at the context's end.
TEST_F(RouterServiceTest, KvAdmissionIsSizedByTheModelsContext) {
  RouterOptions options;
  options.engine.kv_cache_tokens = 4096 + 64;
  options.engine.max_seq_tokens = 32768;  // the flag's default
  ASSERT_NO_FATAL_FAILURE(StartMesh(options));
  const uint64_t a = NewSequence();
  Extended ra = Extend(*router_, Request(a, {1, 5, 9, 13}, 8192));
  ASSERT_TRUE(ra.status.ok()) << ra.status.error_message();
  EXPECT_EQ(ra.result.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ra.tokens.size(), 4096u - 4u);
  EXPECT_EQ(Path(a).length(), 4096);

  // Past the context, the request is refused naming the limit the model sets.
  const uint64_t b = NewSequence();
  std::vector<int> too_long(4097, 5);
  Extended rb = Extend(*router_, Request(b, too_long, 1));
  EXPECT_EQ(rb.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(rb.status.error_message().find("max_seq_tokens 4096"), std::string::npos)
      << rb.status.error_message();
}

// Tenant "big" streams 8 long Extends; tenant "small" one short one beside them. With steps
// shared (2 tokens while small decodes: its 1 and 1 of big's), the router's steps of small's life
// carry 2 tokens each; fed every step, they carry 9. Counted by the router's own step-size
// histogram (what clients read lags behind the steps on a busy machine), and as the big
// tenant's tokens the client saw in that time when not shared.
TEST_F(RouterServiceTest, ASmallTenantsStepsAreNotFilledByAnothersBatch) {
  for (const int shared : {2, 0}) {
    RouterOptions options;
    options.shared_step_tokens = shared;
    ASSERT_NO_FATAL_FAILURE(StartMesh(options));
    auto sequence = [&](const std::string& tenant) {
      grpc::ClientContext ctx;
      v1::CreateSequenceRequest req;
      req.set_tenant(tenant);
      v1::CreateSequenceResponse resp;
      EXPECT_TRUE(kv_->CreateSequence(&ctx, req, &resp).ok());
      return resp.sequence_id();
    };
    std::atomic<int> big_tokens{0}, big_started{0};
    std::vector<std::thread> big;
    std::vector<std::unique_ptr<grpc::ClientContext>> big_ctx;
    for (int i = 0; i < 8; ++i) {
      big_ctx.push_back(std::make_unique<grpc::ClientContext>());
      v1::ExtendRequest req = Request(sequence("big"), {1, 5 + i, 9, 13}, 2000);
      req.set_tenant("big");
      big.emplace_back([&, req, ctx = big_ctx.back().get()] {
        auto reader = router_->Extend(ctx, req);
        v1::ExtendEvent e;
        bool first = true;
        while (reader->Read(&e)) {
          if (!e.has_token()) continue;
          if (first) ++big_started;
          first = false;
          ++big_tokens;
        }
        reader->Finish().IgnoreError();
      });
    }
    const auto until = std::chrono::steady_clock::now() + seconds(60);
    while (big_started.load() < 8 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(big_started.load(), 8);
    // Steps of at most 2 tokens so far (cumulative count of the histogram's le=2 bucket).
    auto small_steps = [&] {
      for (const auto& family : mesh_->router_registry().Collect()) {
        if (family.name != "arbor_router_step_tokens") continue;
        for (const auto& b : family.metric.at(0).histogram.bucket) {
          if (b.upper_bound == 2) return static_cast<int64_t>(b.cumulative_count);
        }
      }
      return int64_t{-1};
    };
    const int64_t small_steps_before = small_steps();
    v1::ExtendRequest small = Request(sequence("small"), {1, 2, 3}, 40);
    small.set_tenant("small");
    grpc::ClientContext ctx;
    auto reader = router_->Extend(&ctx, small);
    v1::ExtendEvent e;
    int small_tokens = 0, at_first = 0, at_last = 0;
    while (reader->Read(&e)) {
      if (!e.has_token()) continue;
      if (small_tokens++ == 0) at_first = big_tokens.load();
      at_last = big_tokens.load();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(small_tokens, 40);
    // Read before the big Extends are cancelled: while the router notices the cancellations
    // one by one, its last steps carry one or two of them, which says nothing about sharing.
    const int64_t two_token_steps = small_steps() - small_steps_before;
    for (auto& c : big_ctx) c->TryCancel();
    for (auto& t : big) t.join();
    const int gained = at_last - at_first;  // over small's 39 steps after its first token
    if (shared > 0) {
      EXPECT_GE(two_token_steps, 39) << "shared steps";
    } else {
      EXPECT_EQ(two_token_steps, 0) << "every Extend fed";
      EXPECT_GE(gained, 4 * 39) << "every Extend fed";
    }
    mesh_.reset();
  }
}

// A client that cancels while tokens stream gets CANCELLED, and the kv-store is unchanged.
// The operator-facing metrics count what the calls did: one time to first token and one
// end-to-end latency per Extend, one inter-token gap per token after the first, the finish
// reason, and the gauges back at rest; every family exists before the first Extend.
TEST_F(RouterServiceTest, LatencyAndQueueMetricsCountEachExtendAndToken) {
  StartMesh();
  // Histograms: sample count; counters and gauges: value; by name and (optional) one label.
  auto read = [&](const std::string& name, const std::string& label = "",
                  const std::string& value = "") -> double {
    for (const auto& family : mesh_->router_registry().Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match |= l.name == label && l.value == value;
        if (!match) continue;
        if (family.type == prometheus::MetricType::Histogram) {
          return static_cast<double>(m.histogram.sample_count);
        }
        if (family.type == prometheus::MetricType::Counter) return m.counter.value;
        return m.gauge.value;
      }
      return -2;  // the family without that series
    }
    return -1;  // no such family
  };
  EXPECT_EQ(read("arbor_router_time_to_first_token_seconds"), 0);
  EXPECT_EQ(read("arbor_router_inter_token_latency_seconds"), 0);
  EXPECT_EQ(read("arbor_router_request_duration_seconds", "method", "Extend"), 0);
  EXPECT_EQ(read("arbor_router_extends_finished_total", "reason", "length"), 0);
  EXPECT_EQ(read("arbor_router_extends_finished_total", "reason", "eos"), 0);
  EXPECT_EQ(read("arbor_router_requests_total", "method", "Extend"), 0);
  EXPECT_EQ(read("arbor_router_waiting_extends"), 0);
  EXPECT_EQ(read("arbor_router_running_extends"), 0);

  const Extended a = Extend(*router_, Request(NewSequence(), {1, 30, 31, 32}, 7));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_EQ(a.tokens.size(), 7u);
  const Extended b = Extend(*router_, Request(NewSequence(), {1, 40}, 3));
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  // An Extend that fails (a sequence that does not exist) has an end-to-end latency too.
  EXPECT_FALSE(Extend(*router_, Request(987654321, {1}, 2)).status.ok());

  EXPECT_EQ(read("arbor_router_time_to_first_token_seconds"), 2);
  EXPECT_EQ(read("arbor_router_inter_token_latency_seconds"), (7 - 1) + (3 - 1));
  EXPECT_EQ(read("arbor_router_request_duration_seconds", "method", "Extend"), 3);
  EXPECT_EQ(read("arbor_router_extends_finished_total", "reason", "length"), 2);
  EXPECT_EQ(read("arbor_router_extends_finished_total", "reason", "stop"), 0);
  // The step loop exports its gauges at least every 100 ms while idle: a moment after the last
  // Extend ended, both are back at 0.
  const auto until = std::chrono::steady_clock::now() + seconds(10);
  while ((read("arbor_router_running_extends") != 0 || read("arbor_router_waiting_extends") != 0) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(read("arbor_router_running_extends"), 0);
  EXPECT_EQ(read("arbor_router_waiting_extends"), 0);
}

TEST_F(RouterServiceTest, CancelBeforeTheCommitCommitsNothing) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  const uint64_t seq = NewSequence();
  Extended first = Extend(*router_, Request(seq, {1, 17, 33}, 2));
  ASSERT_TRUE(first.status.ok());
  const v1::GetPathResponse before = Path(seq);

  grpc::ClientContext ctx;
  auto reader = router_->Extend(&ctx, Request(seq, {40, 41}, 4000));
  v1::ExtendEvent e;
  ASSERT_TRUE(reader->Read(&e));  // generating
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The router has let the job go once a new Extend of the same sequence commits on top of the
  // old version: the cancelled one left nothing behind.
  Extended after = Extend(*router_, Request(seq, {50}, 1));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  const v1::GetPathResponse now = Path(seq);
  EXPECT_EQ(now.length(), before.length() + 2);
  EXPECT_EQ(now.token_ids(before.length()), 50);
}

// A client that cancels while the router's Commit is on its way to the kv-store gets CANCELLED
// at once; the commit itself is all or nothing and may still land (the client cannot be held
// back from its own cancel), so the sequence holds all of the job's tokens or none of them, and
// the next Extend continues from whichever it is.
TEST_F(RouterServiceTest, CancelDuringTheCommitLeavesAllOrNothing) {
  ASSERT_NO_FATAL_FAILURE(StartMesh({}, /*hold_commits=*/true));
  const uint64_t seq = NewSequence();
  grpc::ClientContext ctx;
  auto reader = router_->Extend(&ctx, Request(seq, {1, 17, 33}, 3));
  ASSERT_TRUE(gate_.WaitHeld(absl::Seconds(60)));  // every token generated; Commit in flight
  ctx.TryCancel();
  v1::ExtendEvent e;
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  gate_.Open();

  // The next Extend's Commit is version-checked: had it read the sequence before the held
  // Commit landed it would be ABORTED, and the client would read the path and try again.
  Extended after = Extend(*router_, Request(seq, {50}, 1));
  if (after.status.error_code() == grpc::StatusCode::ABORTED) {
    after = Extend(*router_, Request(seq, {50}, 1));
  }
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  const v1::GetPathResponse now = Path(seq);
  ASSERT_TRUE(now.length() == 2 || now.length() == 3 + 3 + 2) << now.length();
  EXPECT_EQ(now.token_ids(now.length() - 2), 50);
  if (now.length() == 8) {
    EXPECT_EQ(std::vector<int>(now.token_ids().begin(), now.token_ids().begin() + 3),
              (std::vector<int>{1, 17, 33}));
  }
}

}  // namespace
}  // namespace arbor::router
