// The tokenizer's view of SentencePiece, as an interface with a C factory.
//
// Debian's libsentencepiece carries its own copy of protobuf (3.14) and exports its symbols; in
// a process that also loads libprotobuf (3.21, every gRPC binary) the two bind to each other and
// the program aborts at start. So SentencePiece lives in a module, libarbor_spm.so, which
// tokenizer.cc loads with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): the module resolves its own
// symbols first and lends none to the process. Sanitizer builds (where ASan forbids
// RTLD_DEEPBIND) link the module's code directly instead, and must not also load gRPC.
// This header includes no Abseil: SentencePiece's headers declare their own absl::string_view.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace arbor::model::internal {

class SentencePieceShim {
 public:
  virtual ~SentencePieceShim() = default;
  virtual int size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual std::string IdToPiece(int id) const = 0;
  virtual std::vector<int> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
};

}  // namespace arbor::model::internal

// The factory the module exports: a loaded model, or nullptr with *error set.
extern "C" arbor::model::internal::SentencePieceShim* ArborSentencePieceLoad(
    const std::string* proto, std::string* error);
using ArborSentencePieceLoadFn = decltype(&ArborSentencePieceLoad);
