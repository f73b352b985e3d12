#include "arbor/model/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "sentencepiece_shim.h"

namespace arbor::model {
namespace {

// Length of the longest prefix of `s` made of complete UTF-8 sequences; bytes that can never
// start or continue a valid sequence count as complete (they are passed through).
size_t CompleteUtf8Prefix(absl::string_view s) {
  size_t i = s.size();
  // Look back at most 3 bytes for the start of a multi-byte sequence.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (need > back) i = s.size() - back;
    break;
  }
  return i;
}

absl::StatusOr<bool> ReadBool(const nlohmann::json& j, const char* field, bool fallback,
                              const std::string& source) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, " is not a boolean"));
  }
  return it->get<bool>();
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir,
                                                           std::optional<int> bos_id,
                                                           std::optional<int> eos_id) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const std::string path = dir + "/tokenizer.model";
  ARBOR_ASSIGN_OR_RETURN(std::string proto, ReadFileToString(path));
  std::string error;
  t->sp_ = internal::SentencePieceShim::Load(proto, &error);
  if (t->sp_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a SentencePiece model: ", error));
  }
  t->bos_id_ = bos_id.value_or(t->sp_->bos_id());
  t->eos_id_ = eos_id.value_or(t->sp_->eos_id());
  for (int id : {t->bos_id_, t->eos_id_}) {
    if (id >= t->sp_->size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": special token id ", id, " outside the vocabulary of ", t->sp_->size()));
    }
  }

  const std::string cfg_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(cfg_path)) {
    ARBOR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(cfg_path));
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(cfg_path, ": not a JSON object"));
    }
    ARBOR_ASSIGN_OR_RETURN(t->add_bos_, ReadBool(j, "add_bos_token", true, cfg_path));
    ARBOR_ASSIGN_OR_RETURN(t->add_eos_, ReadBool(j, "add_eos_token", false, cfg_path));
  }
  return t;
}

std::vector<int> Tokenizer::Encode(absl::string_view text, bool add_special) const {
  std::vector<int> ids;
  if (add_special && add_bos_ && bos_id_ >= 0) ids.push_back(bos_id_);
  const std::vector<int> body = sp_->Encode(std::string(text));
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_special && add_eos_ && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> kept;
  kept.reserve(ids.size());
  for (int id : ids) {
    if (id >= 0 && id < vocab_size() && !sp_->IsControl(id)) kept.push_back(id);
  }
  return sp_->Decode(kept);
}

std::string Tokenizer::PieceBytes(int id) const {
  if (id < 0 || id >= vocab_size() || sp_->IsControl(id)) return "";
  if (sp_->IsUnknown(id)) return " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece decodes <unk>
  const std::string& piece = sp_->IdToPiece(id);
  if (sp_->IsByte(id) && piece.size() == 6) {  // "<0xAB>"
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581 "▁"
      out.push_back(' ');
      i += 2;
    } else {
      out.push_back(piece[i]);
    }
  }
  return out;
}

int Tokenizer::vocab_size() const { return sp_->size(); }

std::string StreamDecoder::Push(int id) {
  pending_ += tokenizer_->PieceBytes(id);
  const size_t n = CompleteUtf8Prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace arbor::model
