// A SentencePiece tokenizer read from a model folder's `tokenizer.model`, with BOS/EOS handling
// taken from `config.json` (token ids) and `tokenizer_config.json` (add_bos_token,
// add_eos_token; BOS yes and EOS no when absent, as Mixtral does). Immutable; thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::model::internal {
class SentencePieceShim;
}

namespace arbor::model {

class Tokenizer {
 public:
  // Reads `<dir>/tokenizer.model` and, if present, `<dir>/tokenizer_config.json`. `bos_id` and
  // `eos_id` override the SentencePiece model's own when given (config.json's ids).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir,
                                                         std::optional<int> bos_id,
                                                         std::optional<int> eos_id);
  ~Tokenizer();

  // Text to ids, with BOS (and EOS) prepended/appended when `add_special` and the config says so.
  std::vector<int> Encode(absl::string_view text, bool add_special = true) const;

  // Ids to text, skipping BOS/EOS and other control pieces.
  std::string Decode(const std::vector<int>& ids) const;

  // The bytes that token `id` contributes when it follows other tokens: "▁" becomes a space,
  // byte pieces <0xNN> become that byte, control pieces nothing. Not necessarily valid UTF-8 on
  // its own (a character may span byte pieces).
  std::string PieceBytes(int id) const;

  int vocab_size() const;
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }

 private:
  Tokenizer() = default;

  std::unique_ptr<internal::SentencePieceShim> sp_;
  int bos_id_ = -1;
  int eos_id_ = -1;
  bool add_bos_ = true;
  bool add_eos_ = false;
};

// Turns a stream of token ids into text that is always valid UTF-8: bytes of a character split
// across tokens are held back until it is complete, and bytes that cannot form a character
// become U+FFFD (as SentencePiece's own decoder does). Not thread-safe.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // Returns the text that became complete with `id` (possibly empty).
  std::string Push(int id);

  // Returns what is held back at the end of a stream (an incomplete character, as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

}  // namespace arbor::model
