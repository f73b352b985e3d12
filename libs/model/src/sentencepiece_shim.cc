// SentencePiece behind the SentencePieceShim interface: the code of libarbor_spm.so.
#include "sentencepiece_shim.h"

#include "sentencepiece_processor.h"

namespace arbor::model::internal {
namespace {

class SentencePieceImpl final : public SentencePieceShim {
 public:
  sentencepiece::SentencePieceProcessor sp;

  int size() const override { return sp.GetPieceSize(); }
  int bos_id() const override { return sp.bos_id(); }
  int eos_id() const override { return sp.eos_id(); }
  bool IsControl(int id) const override { return sp.IsControl(id); }
  bool IsUnknown(int id) const override { return sp.IsUnknown(id); }
  bool IsByte(int id) const override { return sp.IsByte(id); }
  std::string IdToPiece(int id) const override { return sp.IdToPiece(id); }
  std::vector<int> Encode(const std::string& text) const override {
    std::vector<int> ids;
    sp.Encode(text, &ids).IgnoreError();  // fails only on an unloaded model
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    sp.Decode(ids, &text).IgnoreError();
    return text;
  }
};

}  // namespace
}  // namespace arbor::model::internal

extern "C" __attribute__((visibility("default"))) arbor::model::internal::SentencePieceShim*
ArborSentencePieceLoad(const std::string* proto, std::string* error) {
  auto impl = std::make_unique<arbor::model::internal::SentencePieceImpl>();
  const auto st = impl->sp.LoadFromSerializedProto(*proto);
  if (!st.ok()) {
    *error = st.ToString();
    return nullptr;
  }
  return impl.release();
}
