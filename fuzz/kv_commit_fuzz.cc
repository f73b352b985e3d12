// The kv-store's Commit validation and the KV tree behind it: a CommitRequest from untrusted
// bytes is checked exactly as the service checks it (kv_wire.h: dtype, shape, byte count, finite
// values; token ids in the vocabulary), and what passes is appended to a real tree, forked and
// read back: the tree's invariants hold whatever the input.
#include <cstring>

#include "arbor/kvcache/kv_tree.h"
#include "arbor/mesh/kv_wire.h"
#include "arbor/v1/kvstore.pb.h"
#include "fuzz_helpers.h"

namespace {

const arbor::kvcache::KvLayout kLayout{2, 2, 4, 4};  // 32 floats per token, 4-token blocks

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::v1::CommitRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  const int n = req.token_ids_size();
  if (n < 1) return 0;
  for (int t : req.token_ids()) {
    if (t < 0 || t >= 1000) return 0;  // the service's vocabulary check
  }
  auto checked = arbor::mesh::CheckKv(req.kv(), kLayout, n, "kv");
  arbor::fuzz::CheckRefusal(checked.status());
  if (!checked.ok()) return 0;
  arbor::fuzz::CheckRefusal(arbor::mesh::CheckKvFinite(req.kv(), "kv"));
  if (!arbor::mesh::CheckKvFinite(req.kv(), "kv").ok()) return 0;

  auto tree =
      *arbor::kvcache::KvTree::Create(kLayout, 64, {.max_seq_tokens = 200, .random_ids = true});
  auto seq = tree->CreateSequence({}, arbor::kvcache::PrefixSalt(req.tenant()));
  if (!seq.ok()) std::abort();
  const absl::Status appended = tree->Append(
      seq->seq, absl::MakeConstSpan(req.token_ids().data(), n), arbor::mesh::KvRowBytes(req.kv()));
  arbor::fuzz::CheckRefusal(appended);
  if (!appended.ok()) return 0;
  if (tree->Length(seq->seq) != n) std::abort();
  arbor::kvcache::SeqId kids[2];
  if (!tree->Fork(seq->seq, 2, kids).ok()) std::abort();
  auto back = tree->ReadKv(kids[1]);
  if (!back.ok() || back->size() * sizeof(float) != req.kv().data().size() ||
      std::memcmp(back->data(), req.kv().data().data(), req.kv().data().size()) != 0) {
    std::abort();  // what was committed is what every fork reads
  }
  return 0;
}
