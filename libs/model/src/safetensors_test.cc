#include "arbor/model/safetensors.h"

#include <random>

#include "gtest/gtest.h"
#include "test_util.h"

namespace arbor::model {
namespace {

using testing::RawTensor;
using testing::SerializeSafetensors;

std::string Bytes(size_t n, char fill = 1) { return std::string(n, fill); }

std::vector<RawTensor> TwoTensors() {
  return {{"a.weight", "BF16", {2, 3}, Bytes(12)}, {"b.weight", "F32", {4}, Bytes(16, 2)}};
}

absl::Status ParseStatus(const std::string& bytes) {
  return ParseSafetensors(bytes, "shard.safetensors").status();
}

void ExpectInvalid(const std::string& bytes, const std::string& needle) {
  const absl::Status st = ParseStatus(bytes);
  ASSERT_FALSE(st.ok()) << needle;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("shard.safetensors"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find(needle), absl::string_view::npos) << st;
}

// Replaces the first `from` in the header with `to`, fixing up the header length.
std::string EditHeader(const std::string& file, const std::string& from, const std::string& to) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  std::string header = file.substr(8, n);
  const size_t at = header.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  header.replace(at, from.size(), to);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + file.substr(8 + n);
}

TEST(SafetensorsTest, ParsesNamesDtypesShapesAndOffsets) {
  const std::string file = SerializeSafetensors(TwoTensors());
  auto tensors = ParseSafetensors(file, "x");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 2u);
  const TensorInfo& a = (*tensors)[0].name == "a.weight" ? (*tensors)[0] : (*tensors)[1];
  EXPECT_EQ(a.dtype, DType::kBF16);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.nbytes, 12u);
  EXPECT_EQ(a.numel(), 6);
}

TEST(SafetensorsTest, MetadataIsIgnoredAndEmptyTensorsAreAllowed) {
  std::string file = SerializeSafetensors({{"e", "F32", {0, 4}, ""}, {"a", "F32", {1}, Bytes(4)}});
  file = EditHeader(file, "{", R"({"__metadata__":{"format":"pt"},)");
  auto tensors = ParseSafetensors(file, "x");
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  EXPECT_EQ(tensors->size(), 2u);
}

TEST(SafetensorsTest, TooShortFile) { ExpectInvalid("abc", "too short"); }

TEST(SafetensorsTest, HeaderLengthPastTheEndOfTheFile) {
  std::string file = SerializeSafetensors(TwoTensors());
  file[0] = static_cast<char>(0xff);
  file[1] = static_cast<char>(0xff);
  ExpectInvalid(file, "runs past the end of the file");
  std::string huge(8, static_cast<char>(0xff));
  ExpectInvalid(huge + "{}", "header length");
}

TEST(SafetensorsTest, MalformedHeaderJson) {
  ExpectInvalid(EditHeader(SerializeSafetensors(TwoTensors()), "{", "["), "not valid JSON");
}

TEST(SafetensorsTest, UnknownDtypeNamesTheTensor) {
  auto t = TwoTensors();
  t[1].dtype = "Q4_K";
  ExpectInvalid(SerializeSafetensors(t), "tensor \"b.weight\" unsupported dtype \"Q4_K\"");
}

TEST(SafetensorsTest, ShapeThatDisagreesWithTheByteRange) {
  auto t = TwoTensors();
  t[0].shape = {3, 3};
  ExpectInvalid(SerializeSafetensors(t), "tensor \"a.weight\" has shape [3, 3] of BF16");
}

TEST(SafetensorsTest, TruncatedFileNamesTheTensorThatRunsPastTheEnd) {
  const std::string file = SerializeSafetensors(TwoTensors());
  ExpectInvalid(file.substr(0, file.size() - 5), "tensor \"b.weight\" data_offsets [12, 28]");
}

TEST(SafetensorsTest, OutOfRangeAndReversedOffsets) {
  const std::string file = SerializeSafetensors(TwoTensors());
  ExpectInvalid(EditHeader(file, "[12,28]", "[12,2800]"), "run past the end of the data");
  ExpectInvalid(EditHeader(file, "[0,12]", "[12,0]"), "end before they begin");
  ExpectInvalid(EditHeader(file, "[0,12]", "[-4,8]"), "data_offsets");
}

TEST(SafetensorsTest, OverlappingTensors) {
  auto t = TwoTensors();
  t[1].shape = {3};
  t[1].bytes = Bytes(12);  // b: [12, 24), moved to overlap a: [0, 12) -> [6, 18)
  ExpectInvalid(EditHeader(SerializeSafetensors(t), "[12,24]", "[6,18]"), "overlaps tensor");
}

TEST(SafetensorsTest, BadEntries) {
  const std::string file = SerializeSafetensors(TwoTensors());
  ExpectInvalid(EditHeader(file, "[2,3]", "[2,-3]"), "shape entry");
  ExpectInvalid(EditHeader(file, R"("dtype":"BF16")", R"("dtype":7)"), "no dtype");
  ExpectInvalid(EditHeader(file, R"("shape":[2,3])", R"("shape":"2x3")"), "no shape");
  ExpectInvalid(EditHeader(file, R"("data_offsets":[0,12])", R"("data_offsets":[0])"),
                "data_offsets");
}

TEST(SafetensorsTest, OpenReportsMissingFiles) {
  auto f = SafetensorsFile::Open("/nonexistent/model.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

// Deterministic mutation fuzzing: byte flips, truncations and header-length edits of a valid
// file must give a status (OK or an error), never a crash; CI runs this under ASan + UBSan.
TEST(SafetensorsTest, MutatedFilesNeverCrash) {
  const std::string valid = SerializeSafetensors(TwoTensors());
  std::mt19937 rng(2024);
  int rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string f = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0:
          if (!f.empty()) f[rng() % f.size()] = static_cast<char>(rng());
          break;
        case 1:
          f.resize(rng() % (f.size() + 1));
          break;
        case 2:
          if (f.size() >= 8) f[rng() % 8] = static_cast<char>(rng());
          break;
        case 3:
          f.insert(rng() % (f.size() + 1), 1, "{}[]\",:0-9e"[rng() % 11]);
          break;
      }
    }
    auto parsed = ParseSafetensors(f, "fuzz");
    if (!parsed.ok()) {
      ++rejected;
      continue;
    }
    // Whatever is accepted must lie inside the file and not overlap.
    for (const TensorInfo& t : *parsed) EXPECT_LE(t.offset + t.nbytes, f.size());
  }
  EXPECT_GT(rejected, 10000);
}

}  // namespace
}  // namespace arbor::model
