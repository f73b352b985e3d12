// arbor-kvstore: the KV tree and the state store over gRPC. Flags parse, the server starts,
// and SIGTERM/SIGINT shut it down (NOT_SERVING, grace, drain). Every flag can also be set from
// the environment as ARBOR_<FLAG_NAME>.
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/flags/flag.h"
#include "arbor/common/random_id.h"
#include "arbor/model/config.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/service_main.h"
#include "kvstore_service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(int, shard, 0,
          "this kv-store's shard (0-255): its position in the --kvstore list of every router and "
          "planner; every sequence id carries it");
ABSL_FLAG(std::string, model, "models/game24-moe",
          "model folder; its config.json gives the KV layout and the vocabulary");
ABSL_FLAG(int, kv_cache_tokens, 262144, "KV pool size in tokens");
ABSL_FLAG(int, kv_block_tokens, 16, "tokens per KV block");
ABSL_FLAG(int, max_fork, 64, "largest n for Fork");
ABSL_FLAG(int, max_seq_tokens, 32768, "longest sequence, in tokens");
ABSL_FLAG(bool, prefix_cache, true, "reuse cached prompt prefixes");
ABSL_FLAG(std::string, redis_url, "",
          "state store: redis://host:port[/db]; empty keeps state in memory. The password goes "
          "in --redis_password_file or $ARBOR_REDIS_PASSWORD, never on the command line");
ABSL_FLAG(std::string, redis_password_file, "",
          "a file holding the Redis password (default: $ARBOR_REDIS_PASSWORD, else none)");
ABSL_FLAG(int, threads, 4, "handler threads");
ABSL_FLAG(int, max_sequences_per_tenant, 0,
          "live sequences one tenant may hold; 0 = no limit beyond the KV pool");
ABSL_FLAG(int64_t, max_state_bytes_per_tenant, 0,
          "bytes of state-store values (task checkpoints) one tenant may hold; 0 = no limit");
ABSL_FLAG(bool, share_prefix_across_tenants, false,
          "reuse cached prompt prefixes across tenants (a single-tenant deployment only)");

namespace {

// The Redis password: from --redis_password_file or $ARBOR_REDIS_PASSWORD. A password on the
// command line (readable by every user through ps and /proc) is refused.
absl::StatusOr<std::string> RedisPassword(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.find("redis_url") != std::string::npos && arg.find('@') != std::string::npos) {
      return absl::InvalidArgumentError(
          "--redis_url carries a password on the command line; use --redis_password_file or "
          "ARBOR_REDIS_PASSWORD");
    }
  }
  if (const std::string file = absl::GetFlag(FLAGS_redis_password_file); !file.empty()) {
    std::ifstream in(file);
    std::string password;
    if (!in || !std::getline(in, password)) {
      return absl::InvalidArgumentError("--redis_password_file " + file + " cannot be read");
    }
    return password;
  }
  const char* env = std::getenv("ARBOR_REDIS_PASSWORD");
  return std::string(env != nullptr ? env : "");
}

// This process's incarnation: random, never 0.
uint16_t Epoch() {
  uint16_t e = 0;
  while (e == 0) arbor::RandomBytes(&e, sizeof(e));
  return e;
}

// The url without its credentials, for logs.
std::string Redacted(const std::string& url) {
  const size_t at = url.find('@'), scheme = url.find("://");
  if (at == std::string::npos || scheme == std::string::npos) return url;
  return url.substr(0, scheme + 3) + "***@" + url.substr(at + 1);
}

}  // namespace

int main(int argc, char** argv) {
  if (!arbor::rpc::InitServiceMain(argc, argv, "arbor-kvstore",
                                   "arbor-kvstore: the KV tree and state store service",
                                   {.address = "127.0.0.1:50051",
                                    .metrics_address = "127.0.0.1:9091",
                                    .max_message_mb = 256})) {
    return 2;
  }
  if (absl::GetFlag(FLAGS_shard) < 0 || absl::GetFlag(FLAGS_shard) > 255) {
    spdlog::error("--shard {} out of range [0, 255]", absl::GetFlag(FLAGS_shard));
    return 2;
  }
  auto config = arbor::model::ModelConfig::Load(absl::GetFlag(FLAGS_model));
  if (!config.ok()) {
    spdlog::error("{}", config.status().ToString());
    return 1;
  }
  const arbor::kvcache::KvLayout layout{config->num_hidden_layers, config->num_key_value_heads,
                                        config->head_dim, absl::GetFlag(FLAGS_kv_block_tokens)};
  auto tree =
      arbor::kvcache::KvTree::Create(layout, layout.BlocksFor(absl::GetFlag(FLAGS_kv_cache_tokens)),
                                     {.max_fork = absl::GetFlag(FLAGS_max_fork),
                                      .max_seq_tokens = absl::GetFlag(FLAGS_max_seq_tokens),
                                      .prefix_index = absl::GetFlag(FLAGS_prefix_cache),
                                      .random_ids = true,
                                      .epoch = Epoch(),
                                      .shard = static_cast<uint8_t>(absl::GetFlag(FLAGS_shard))});
  if (!tree.ok()) {
    spdlog::error("{}", tree.status().ToString());
    return 1;
  }
  std::unique_ptr<arbor::statestore::StateStore> state;
  if (absl::GetFlag(FLAGS_redis_url).empty()) {
    state = arbor::statestore::NewInMemoryStateStore();
  } else {
    absl::StatusOr<std::string> password = RedisPassword(argc, argv);
    if (!password.ok()) {
      spdlog::error("{}", std::string(password.status().message()));
      return 2;
    }
    auto redis = arbor::statestore::NewRedisStateStore(
        {.url = absl::GetFlag(FLAGS_redis_url),
         .password = *password,
         .require_connection = false});  // Redis may be restarting: state calls wait for it
    if (!redis.ok()) {
      spdlog::error("{}", redis.status().ToString());
      return 1;
    }
    state = std::move(*redis);
  }
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::kvstore::KvStoreService service(
      tree->get(), state.get(),
      {.vocab_size = config->vocab_size,
       .threads = absl::GetFlag(FLAGS_threads),
       .max_sequences_per_tenant = absl::GetFlag(FLAGS_max_sequences_per_tenant),
       .max_state_bytes_per_tenant = absl::GetFlag(FLAGS_max_state_bytes_per_tenant),
       .share_prefix_across_tenants = absl::GetFlag(FLAGS_share_prefix_across_tenants),
       .peers = arbor::rpc::PeerRolesFromFlags()},
      *registry);
  auto host =
      arbor::rpc::ServerHost::Start(arbor::rpc::ServerHostOptionsFromFlags(), {&service}, registry);
  if (!host.ok()) {
    spdlog::error("{}", host.status().ToString());
    return 1;
  }
  spdlog::info(
      "arbor-kvstore ready address={} metrics_port={} shard={} epoch={} state={}",
      (*host)->address(), (*host)->metrics_port(), (*tree)->options().shard,
      (*tree)->options().epoch,
      absl::GetFlag(FLAGS_redis_url).empty() ? "memory" : Redacted(absl::GetFlag(FLAGS_redis_url)));
  arbor::rpc::ServeUntilSignal(**host);
  return 0;
}
