#include "arbor/model/checkpoint.h"

#include <cstring>
#include <set>

#include "arbor/model/weights.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace arbor::model {
namespace {

using testing::RawTensor;

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";
const std::string kSharded = std::string(ARBOR_SOURCE_DIR) + "/tests/data/tiny-mha-top1";

std::vector<RawTensor> ReadAll(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<RawTensor> out;
  for (const TensorInfo& t : (*f)->tensors()) {
    out.push_back({t.name, std::string(DTypeName(t.dtype)), t.shape,
                   std::string(reinterpret_cast<const char*>((*f)->Data(t)), t.nbytes)});
  }
  return out;
}

// A copy of the test model whose model.safetensors is `tensors`.
std::string ModelWith(const std::vector<RawTensor>& tensors, const std::string& name) {
  auto dir = testing::CopyModel(kModel, name);
  testing::WriteFile(dir / "model.safetensors", testing::SerializeSafetensors(tensors));
  return dir.string();
}

absl::Status LoadAll(const std::string& dir) {
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  return ModelWeights::Load(**ckpt, {}).status();
}

void ExpectMentions(const absl::Status& st, std::initializer_list<std::string> needles) {
  ASSERT_FALSE(st.ok());
  for (const std::string& n : needles) {
    EXPECT_NE(st.message().find(n), absl::string_view::npos) << st << " lacks " << n;
  }
}

constexpr char kW1[] = "model.layers.1.block_sparse_moe.experts.2.w1.weight";

TEST(CheckpointTest, LoadsTheTestModel) {
  auto ckpt = Checkpoint::Open(kModel);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = ModelWeights::Load(**ckpt, {});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE((*w)->non_expert(), nullptr);
  EXPECT_EQ((*w)->num_experts_loaded(), 2u * 4);
}

// A bf16 checkpoint's projections stay bf16, holding exactly what the f32 load holds; a
// matrix stacked from tensors of different types (here k_proj stored as f32) is loaded as f32.
TEST(CheckpointTest, SixteenBitMatricesStayAsStoredUnlessMixed) {
  auto ckpt = Checkpoint::Open(kModel);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto half = ModelWeights::Load(**ckpt, {});
  auto full = ModelWeights::Load(**ckpt, {.keep_16bit = false});
  ASSERT_TRUE(half.ok() && full.ok());
  const NonExpertWeights& h = *(*half)->non_expert();
  const NonExpertWeights& f = *(*full)->non_expert();
  for (const auto& [a, b] :
       {std::pair{&h.layers[1].wqkv, &f.layers[1].wqkv},
        std::pair{&h.layers[0].wo, &f.layers[0].wo},
        std::pair{&h.layers[0].gate, &f.layers[0].gate}, std::pair{&h.lm_head, &f.lm_head},
        std::pair{&(*half)->expert(1, 2)->w13, &(*full)->expert(1, 2)->w13},
        std::pair{&(*half)->expert(0, 3)->w2, &(*full)->expert(0, 3)->w2}}) {
    EXPECT_EQ(a->dtype, DType::kBF16);
    EXPECT_EQ(b->dtype, DType::kF32);
    EXPECT_EQ(a->half.size(), static_cast<size_t>(a->rows * a->cols));
    EXPECT_EQ(a->bytes() * 2, b->bytes());
    EXPECT_EQ(a->ToF32(), b->f32);
  }
  EXPECT_EQ(h.lm_head_view().dtype, DType::kBF16);

  auto tensors = ReadAll(kModel + "/model.safetensors");
  for (RawTensor& t : tensors) {
    if (t.name != "model.layers.0.self_attn.k_proj.weight") continue;
    std::string f32(t.bytes.size() * 2, '\0');
    for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
      uint16_t v;
      std::memcpy(&v, t.bytes.data() + 2 * i, 2);
      const float x = BF16ToF32(v);
      std::memcpy(f32.data() + 4 * i, &x, 4);
    }
    t.dtype = "F32";
    t.bytes = f32;
  }
  auto mixed_ckpt = Checkpoint::Open(ModelWith(tensors, "mixed"));
  ASSERT_TRUE(mixed_ckpt.ok()) << mixed_ckpt.status();
  auto mixed = ModelWeights::Load(**mixed_ckpt, {});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  const Matrix& wqkv = (*mixed)->non_expert()->layers[0].wqkv;
  EXPECT_EQ(wqkv.dtype, DType::kF32);
  EXPECT_EQ(wqkv.f32, f.layers[0].wqkv.f32);
  const Matrix& bf16 = (*mixed)->non_expert()->layers[1].wqkv;
  EXPECT_EQ(bf16.dtype, DType::kBF16);
  // A small matrix of any dtype also carries its elements in f32, packed in panels of
  // kernels::kPanelRows rows (for compute-bound products): w[j][l] at [j / 16][l][j % 16].
  ASSERT_LE(bf16.rows * bf16.cols, kernels::kSmallMatrixElements);
  for (const Matrix* m : {&wqkv, &bf16}) {
    const std::vector<float> elements = m->ToF32();
    ASSERT_EQ(m->packed.size(), kernels::PackedFloats(m->rows, m->cols));
    for (int64_t j = 0; j < m->rows; ++j) {
      for (int64_t l = 0; l < m->cols; ++l) {
        const size_t at = ((j / kernels::kPanelRows) * m->cols + l) * kernels::kPanelRows +
                          j % kernels::kPanelRows;
        ASSERT_EQ(m->packed[at], elements[j * m->cols + l]) << j << "," << l;
      }
    }
    EXPECT_EQ(m->view().packed, m->packed.data());
  }
  // A small 16-bit matrix also keeps them row-major in f32 (for products past the packed
  // kernel's rows).
  ASSERT_EQ(bf16.f32.size(), bf16.half.size());
  for (size_t i = 0; i < bf16.half.size(); ++i) {
    ASSERT_EQ(bf16.f32[i], BF16ToF32(bf16.half[i])) << i;
  }
  EXPECT_EQ(bf16.view().f32, bf16.f32.data());
  std::vector<uint16_t> out(64 * 64);
  const absl::Status st =
      (*mixed_ckpt)
          ->Read("model.layers.0.self_attn.k_proj.weight", {32, 64}, DType::kBF16, out.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  ExpectMentions(st, {"k_proj", "is F32, not BF16"});
}

TEST(CheckpointTest, MissingTensorNamesFileAndTensor) {
  auto tensors = ReadAll(kModel + "/model.safetensors");
  std::erase_if(tensors, [](const RawTensor& t) { return t.name == kW1; });
  const absl::Status st = LoadAll(ModelWith(tensors, "missing"));
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  ExpectMentions(st, {"model.safetensors", kW1, "missing"});
}

TEST(CheckpointTest, WrongShapeNamesFileAndTensor) {
  auto tensors = ReadAll(kModel + "/model.safetensors");
  for (RawTensor& t : tensors) {
    if (t.name == kW1) std::swap(t.shape[0], t.shape[1]);
  }
  const absl::Status st = LoadAll(ModelWith(tensors, "shape"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(st, {"model.safetensors", kW1, "has shape [64, 128], expected [128, 64]"});
}

TEST(CheckpointTest, UnknownDtypeNamesFileAndTensor) {
  auto tensors = ReadAll(kModel + "/model.safetensors");
  for (RawTensor& t : tensors) {
    if (t.name == kW1) t.dtype = "I16";
  }
  ExpectMentions(LoadAll(ModelWith(tensors, "dtype")), {"model.safetensors", kW1, "I16"});
}

TEST(CheckpointTest, TruncatedWeightsNameFileAndTensor) {
  auto dir = testing::CopyModel(kModel, "truncated");
  const auto path = dir / "model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  ExpectMentions(LoadAll(dir.string()), {"model.safetensors", "run past the end of the data"});
}

TEST(CheckpointTest, MissingOrMalformedConfig) {
  auto dir = testing::CopyModel(kModel, "noconfig");
  std::filesystem::remove(dir / "config.json");
  const absl::Status missing = LoadAll(dir.string());
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  ExpectMentions(missing, {"config.json"});
  testing::WriteFile(dir / "config.json", "{\"hidden_size\": 64,");
  ExpectMentions(LoadAll(dir.string()), {"config.json", "not valid JSON"});
}

TEST(CheckpointTest, ShardedIndexErrorsNameTheIndex) {
  auto dir = testing::CopyModel(kSharded, "index");
  ASSERT_TRUE(LoadAll(dir.string()).ok());
  // Point a tensor at the other shard, which does not hold it.
  std::ifstream in(dir / "model.safetensors.index.json");
  auto index = nlohmann::json::parse(in);
  in.close();
  auto& map = index["weight_map"];
  const std::string name = "model.norm.weight";
  const std::string shard = map[name];
  map[name] = shard.find("00001") != std::string::npos ? "model-00002-of-00002.safetensors"
                                                       : "model-00001-of-00002.safetensors";
  testing::WriteFile(dir / "model.safetensors.index.json", index.dump());
  ExpectMentions(LoadAll(dir.string()), {"model.safetensors.index.json", name, "does not hold it"});
  // A shard that does not exist.
  map[name] = "model-00009-of-00002.safetensors";
  testing::WriteFile(dir / "model.safetensors.index.json", index.dump());
  ExpectMentions(LoadAll(dir.string()), {"model-00009-of-00002.safetensors"});
  // A shard path that escapes the folder.
  map[name] = "../model.safetensors";
  testing::WriteFile(dir / "model.safetensors.index.json", index.dump());
  ExpectMentions(LoadAll(dir.string()), {"not a file in the dir"});
}

// Partial loading reads exactly the tensors asked for, nothing else.
TEST(CheckpointTest, RouterLoadReadsOnlyNonExpertTensors) {
  auto ckpt = *Checkpoint::Open(kModel);
  uint64_t non_expert_bytes = 0;
  for (const RawTensor& t : ReadAll(kModel + "/model.safetensors")) {
    if (t.name.find(".experts.") == std::string::npos) non_expert_bytes += t.bytes.size();
  }
  auto w = ModelWeights::Load(*ckpt, {.non_expert = true, .experts = std::vector<ExpertKey>{}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE((*w)->non_expert(), nullptr);
  EXPECT_EQ((*w)->num_experts_loaded(), 0u);
  EXPECT_EQ((*w)->expert(0, 0), nullptr);
  EXPECT_EQ(ckpt->bytes_read(), non_expert_bytes);
}

TEST(CheckpointTest, WorkerLoadReadsOnlyItsExperts) {
  auto ckpt = *Checkpoint::Open(kModel);
  const std::vector<ExpertKey> shard = {{0, 1}, {1, 3}};
  auto w = ModelWeights::Load(*ckpt, {.non_expert = false, .experts = shard});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->non_expert(), nullptr);
  EXPECT_EQ((*w)->num_experts_loaded(), 2u);
  EXPECT_NE((*w)->expert(1, 3), nullptr);
  EXPECT_EQ((*w)->expert(1, 2), nullptr);
  const auto& c = ckpt->config();
  const uint64_t per_expert = 3ull * c.hidden_size * c.intermediate_size * 2;  // bf16
  EXPECT_EQ(ckpt->bytes_read(), 2 * per_expert);

  auto bad = ModelWeights::Load(*ckpt, {.non_expert = false, .experts = {{{2, 0}}}});
  ExpectMentions(bad.status(), {"layer 2", "out of range"});
}

}  // namespace
}  // namespace arbor::model
