// A thin wrapper over sentencepiece::SentencePieceProcessor. SentencePiece's header declares its
// own `absl::string_view`, which clashes with Abseil's, so it is included only by
// sentencepiece_shim.cc, and this header includes no Abseil either.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace arbor::model::internal {

class SentencePieceShim {
 public:
  // nullptr with *error set when `proto` is not a serialized SentencePiece model.
  static std::unique_ptr<SentencePieceShim> Load(const std::string& proto, std::string* error);
  ~SentencePieceShim();

  int size() const;
  int bos_id() const;
  int eos_id() const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  const std::string& IdToPiece(int id) const;
  std::vector<int> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;

 private:
  struct Impl;
  explicit SentencePieceShim(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace arbor::model::internal
