#include "sentencepiece_shim.h"

#include "sentencepiece_processor.h"

namespace arbor::model::internal {

struct SentencePieceShim::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceShim::SentencePieceShim(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceShim::~SentencePieceShim() = default;

std::unique_ptr<SentencePieceShim> SentencePieceShim::Load(const std::string& proto,
                                                           std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto st = impl->sp.LoadFromSerializedProto(proto);
  if (!st.ok()) {
    *error = st.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceShim>(new SentencePieceShim(std::move(impl)));
}

int SentencePieceShim::size() const { return impl_->sp.GetPieceSize(); }
int SentencePieceShim::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceShim::eos_id() const { return impl_->sp.eos_id(); }
bool SentencePieceShim::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceShim::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceShim::IsByte(int id) const { return impl_->sp.IsByte(id); }
const std::string& SentencePieceShim::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }

std::vector<int> SentencePieceShim::Encode(const std::string& text) const {
  std::vector<int> ids;
  impl_->sp.Encode(text, &ids).IgnoreError();  // fails only on an unloaded model
  return ids;
}

std::string SentencePieceShim::Decode(const std::vector<int>& ids) const {
  std::string text;
  impl_->sp.Decode(ids, &text).IgnoreError();
  return text;
}

}  // namespace arbor::model::internal
