// Incremental detokenization for streaming generation (ssm-generate, MambaLM::generate_stream): token ids in one at a
// time, the text each one completes out, as tokenizers' DecodeStream and transformers' TextStreamer produce it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ssm/core/check.hpp"
#include "ssm/models/tokenizer.hpp"

namespace ssm::models {

/// Text of a token stream, piece by piece. Each step decodes a window of the ids (from the start of the previously
/// printed piece to the newest id) and returns what lies past the window's already printed prefix. Text ending in
/// U+FFFD is held back: it may be an incomplete UTF-8 sequence that the next tokens complete (a character split
/// over byte tokens); finish() returns whatever is still held when the stream ends. The pieces concatenate to
/// Tokenizer::decode of all the ids (for decoders that decode a sequence piecewise, as ByteLevel does), and each
/// step costs the window's length, not the stream's. Holds a reference to the tokenizer.
class DecodeStream {
 public:
  explicit DecodeStream(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tok_(&tokenizer), skip_special_(skip_special_tokens) {}

  /// The text `id` completes: empty while it is held back (or the id decodes to nothing).
  std::string step(std::int64_t id) {
    ids_.push_back(id);
    std::string text = tok_->decode(ids_, skip_special_);
    if (text.size() <= prefix_.size() || ends_with_replacement(text)) return {};
    SSM_CHECK(std::string_view(text).substr(0, prefix_.size()) == prefix_,
              "DecodeStream: the tokenizer's decoder changed text it had already produced (decoding is not piecewise)");
    std::string piece = text.substr(prefix_.size());
    // The next window starts at this step's printed piece, which stays as context for the decoder.
    const std::size_t next_prefix_index = ids_.size() - prefix_index_;
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
    prefix_ = tok_->decode(ids_, skip_special_);
    prefix_index_ = next_prefix_index;
    return piece;
  }

  /// The text held back at the end of the stream (an incomplete UTF-8 sequence, as U+FFFD), or empty. Resets the
  /// stream.
  std::string finish() {
    std::string text = tok_->decode(ids_, skip_special_);
    std::string piece = text.size() > prefix_.size() ? text.substr(prefix_.size()) : std::string();
    ids_.clear();
    prefix_.clear();
    prefix_index_ = 0;
    return piece;
  }

 private:
  static bool ends_with_replacement(std::string_view s) {
    constexpr std::string_view fffd = "\xEF\xBF\xBD";  // U+FFFD in UTF-8
    return s.size() >= fffd.size() && s.substr(s.size() - fffd.size()) == fffd;
  }

  const Tokenizer* tok_;
  bool skip_special_;
  std::vector<std::int64_t> ids_;  // the window: from the start of the last printed piece to the newest id
  std::string prefix_;             // decode of ids_[0, prefix_index_): already printed
  std::size_t prefix_index_ = 0;
};

}  // namespace ssm::models
