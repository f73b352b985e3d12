#include "arbor/model/tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "sentencepiece_shim.h"

namespace arbor::model {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence that lead byte `c` starts (RFC 3629), 0 if it cannot start one.
int SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether byte `i` (1-based) of a sequence led by `lead` may be `c`: excludes overlong forms,
// surrogates and code points past U+10FFFF.
bool ValidContinuation(unsigned char lead, int i, unsigned char c) {
  if (i == 1) {
    if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
    if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
    if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  }
  return (c & 0xC0) == 0x80;
}

// Moves the valid UTF-8 prefix of `pending` to the result, replacing each invalid byte by
// U+FFFD; keeps back a trailing sequence that may still complete (unless `final`).
std::string TakeValidUtf8(std::string& pending, bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending.size()) {
    const auto lead = static_cast<unsigned char>(pending[i]);
    const int need = SequenceLength(lead);
    int ok = need > 0 ? 1 : 0;  // bytes of the sequence seen valid so far
    while (ok > 0 && ok < need && i + ok < pending.size() &&
           ValidContinuation(lead, ok, static_cast<unsigned char>(pending[i + ok]))) {
      ++ok;
    }
    if (ok == need && need > 0) {
      out.append(pending, i, need);
      i += need;
    } else if (i + ok == pending.size() && ok > 0 && !final) {
      break;  // a sequence that the next token may complete
    } else {
      out += kReplacement;
      i += 1;
    }
  }
  pending.erase(0, i);
  return out;
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

// The module's factory: linked in (sanitizer builds) or loaded once with its own symbol scope.
absl::StatusOr<ArborSentencePieceLoadFn> SentencePieceFactory() {
#ifdef ARBOR_SPM_LINKED
  return &ArborSentencePieceLoad;
#else
  static const absl::StatusOr<ArborSentencePieceLoadFn> factory =
      []() -> absl::StatusOr<ArborSentencePieceLoadFn> {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("ARBOR_SPM_MODULE")) candidates.push_back(env);
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "../lib/libarbor_spm.so").string());
    candidates.push_back(ARBOR_SPM_MODULE_PATH);
    std::string errors;
    for (const std::string& path : candidates) {
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        absl::StrAppend(&errors, errors.empty() ? "" : "; ", ::dlerror());
        continue;
      }
      if (void* fn = ::dlsym(handle, "ArborSentencePieceLoad")) {
        return reinterpret_cast<ArborSentencePieceLoadFn>(fn);
      }
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", path, ": no ArborSentencePieceLoad");
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the SentencePiece module libarbor_spm.so: ", errors));
  }();
  return factory;
#endif
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir,
                                                           std::optional<int> bos_id,
                                                           std::optional<int> eos_id) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const std::string path = dir + "/tokenizer.model";
  ARBOR_ASSIGN_OR_RETURN(std::string proto, ReadFileToString(path));
  ARBOR_ASSIGN_OR_RETURN(ArborSentencePieceLoadFn load, SentencePieceFactory());
  std::string error;
  t->sp_.reset(load(&proto, &error));
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
  const std::string piece = sp_->IdToPiece(id);
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
  return TakeValidUtf8(pending_, /*final=*/false);
}

std::string StreamDecoder::Flush() { return TakeValidUtf8(pending_, /*final=*/true); }

}  // namespace arbor::model
