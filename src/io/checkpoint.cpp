// Training checkpoints in one safetensors file, and folder rotation.
#include "rnnkit/io/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

namespace rnnkit::io {

namespace {

// Tensor sections: the key prefix in the file for each StateDict.
struct Section {
  const char* prefix;
  StateDict TrainingCheckpoint::*member;
};
constexpr Section kSections[] = {
    {"model.", &TrainingCheckpoint::model},
    {"optimizer.", &TrainingCheckpoint::optimizer},
    {"scheduler.", &TrainingCheckpoint::scheduler},
    {"extra.", &TrainingCheckpoint::extra},
};
constexpr const char* kPermutationKey = "data.permutation";

constexpr const char* kReservedPrefix = "rnnkit.";
constexpr const char* kFormatKey = "rnnkit.format";
constexpr const char* kEpochKey = "rnnkit.epoch";
constexpr const char* kStepKey = "rnnkit.step";
constexpr const char* kRngKey = "rnnkit.rng";
constexpr const char* kBatchIndexKey = "rnnkit.data.batch_index";
constexpr const char* kShuffleSeedKey = "rnnkit.data.shuffle_seed";
constexpr const char* kShuffleRngKey = "rnnkit.data.shuffle_rng";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool parse_hex16(const std::string& s, size_t pos, uint64_t* v) {
  if (pos + 16 > s.size()) return false;
  uint64_t x = 0;
  for (size_t i = pos; i < pos + 16; ++i) {
    const char c = s[i];
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    x = (x << 4) | static_cast<uint64_t>(d);
  }
  *v = x;
  return true;
}

// A generator state as 7 comma-separated 16-digit hex words: the four
// xoshiro256** words, the seed, the bits of the spare normal, has_spare.
constexpr size_t kStateWords = 7;

std::string encode_state(const Generator::State& st) {
  uint64_t spare_bits;
  std::memcpy(&spare_bits, &st.spare_normal, sizeof spare_bits);
  const uint64_t words[kStateWords] = {st.s[0], st.s[1], st.s[2], st.s[3], st.seed, spare_bits, st.has_spare ? 1u : 0u};
  std::string out;
  for (size_t i = 0; i < kStateWords; ++i) out += (i ? "," : "") + hex16(words[i]);
  return out;
}

bool decode_state(const std::string& s, Generator::State* st) {
  if (s.size() != kStateWords * 17 - 1) return false;
  uint64_t words[kStateWords];
  for (size_t i = 0; i < kStateWords; ++i) {
    if (i > 0 && s[i * 17 - 1] != ',') return false;
    if (!parse_hex16(s, i * 17, &words[i])) return false;
  }
  if (words[6] > 1) return false;
  for (int i = 0; i < 4; ++i) st->s[i] = words[i];
  st->seed = words[4];
  std::memcpy(&st->spare_normal, &words[5], sizeof words[5]);
  st->has_spare = words[6] == 1;
  return true;
}

bool parse_i64(const std::string& s, int64_t* v) {
  size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  if (i == s.size() || s.size() - i > 19) return false;
  uint64_t x = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    x = x * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  const bool negative = s[0] == '-';
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0);
  if (x > limit) return false;
  *v = negative ? static_cast<int64_t>(0 - x) : static_cast<int64_t>(x);
  return true;
}

std::string show(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) out += (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  return s.size() > 40 ? out + "..." : out;
}

void check_permutation(const Tensor& p, const std::string& where) {
  RNNKIT_CHECK(p.dtype() == kInt64 && p.dim() == 1, where, ": '", kPermutationKey,
               "' must be a 1-D int64 tensor, got ", dtype_name(p.dtype()), " of shape ", shape_str(p.sizes()));
}

void make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
      throw Error("save_checkpoint: cannot create folder '" + part + "': " + std::strerror(errno));
  }
  struct stat st;
  RNNKIT_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "save_checkpoint: '", dir,
               "' exists and is not a folder");
}

// "<prefix>-<digits>.safetensors" -> step, or -1.
int64_t checkpoint_step(const std::string& file, const std::string& prefix) {
  const std::string head = prefix + "-", tail = ".safetensors";
  if (file.size() <= head.size() + tail.size() || !starts_with(file, head) || !ends_with(file, tail)) return -1;
  const std::string digits = file.substr(head.size(), file.size() - head.size() - tail.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  int64_t step;
  return parse_i64(digits, &step) ? step : -1;
}

void check_prefix(const std::string& prefix) {
  RNNKIT_CHECK(!prefix.empty() && prefix.find('/') == std::string::npos, "checkpoint prefix must be a non-empty ",
               "file name without '/', got '", prefix, "'");
}

}  // namespace

void save_checkpoint(const TrainingCheckpoint& ckpt, const std::string& path) {
  const std::string where = "save_checkpoint '" + path + "'";
  StateDict tensors;
  for (const Section& section : kSections) {
    for (const auto& [key, value] : ckpt.*section.member) {
      RNNKIT_CHECK(!key.empty(), where, ": ", section.prefix, "* has an empty key");
      tensors.insert(section.prefix + key, value);
    }
  }
  if (ckpt.data.permutation.defined()) {
    check_permutation(ckpt.data.permutation, where);
    tensors.insert(kPermutationKey, ckpt.data.permutation);
  }
  Metadata md;
  for (const auto& [key, value] : ckpt.metadata) {
    RNNKIT_CHECK(!starts_with(key, kReservedPrefix), where, ": metadata key '", key,
                 "' starts with 'rnnkit.', which is reserved for the checkpoint's own fields");
    md[key] = value;
  }
  md[kFormatKey] = kCheckpointFormat;
  md[kEpochKey] = std::to_string(ckpt.epoch);
  md[kStepKey] = std::to_string(ckpt.step);
  md[kRngKey] = encode_state(ckpt.rng);
  md[kBatchIndexKey] = std::to_string(ckpt.data.batch_index);
  md[kShuffleSeedKey] = hex16(ckpt.data.shuffle_seed);
  md[kShuffleRngKey] = encode_state(ckpt.data.shuffle_rng);
  save_safetensors(tensors, path, md);
}

TrainingCheckpoint load_checkpoint(const std::string& path) {
  const std::string where = "load_checkpoint '" + path + "'";
  SafetensorsContent content = load_safetensors(path, /*require_checksum=*/true);
  TrainingCheckpoint ckpt;
  Metadata& md = content.metadata;
  auto field = [&](const char* key) -> const std::string& {
    auto it = md.find(key);
    RNNKIT_CHECK(it != md.end(), where, ": metadata '", key, "' is missing (not a training checkpoint?)");
    return it->second;
  };
  const std::string& format = field(kFormatKey);
  RNNKIT_CHECK(format == kCheckpointFormat, where, ": metadata '", kFormatKey, "' is '", show(format),
               "', expected '", kCheckpointFormat, "' (written by another rnnkit version?)");
  auto integer = [&](const char* key) {
    int64_t v;
    const std::string& s = field(key);
    RNNKIT_CHECK(parse_i64(s, &v), where, ": metadata '", key, "' must be a decimal integer, got '", show(s), "'");
    return v;
  };
  auto state = [&](const char* key) {
    Generator::State st;
    const std::string& s = field(key);
    RNNKIT_CHECK(decode_state(s, &st), where, ": metadata '", key,
                 "' must be 7 comma-separated 16-digit hex words (a generator state), got '", show(s), "'");
    return st;
  };
  ckpt.epoch = integer(kEpochKey);
  ckpt.step = integer(kStepKey);
  ckpt.rng = state(kRngKey);
  ckpt.data.batch_index = integer(kBatchIndexKey);
  const std::string& seed = field(kShuffleSeedKey);
  RNNKIT_CHECK(seed.size() == 16 && parse_hex16(seed, 0, &ckpt.data.shuffle_seed), where, ": metadata '",
               kShuffleSeedKey, "' must be 16 hex digits, got '", show(seed), "'");
  ckpt.data.shuffle_rng = state(kShuffleRngKey);
  const std::string known[] = {kFormatKey, kEpochKey, kStepKey, kRngKey, kBatchIndexKey, kShuffleSeedKey, kShuffleRngKey};
  for (auto& [key, value] : md) {
    if (!starts_with(key, kReservedPrefix)) {
      ckpt.metadata[key] = value;
      continue;
    }
    RNNKIT_CHECK(std::find(std::begin(known), std::end(known), key) != std::end(known), where,
                 ": unexpected metadata '", key, "' (a newer checkpoint format?)");
  }
  for (const auto& [key, value] : content.tensors) {
    if (key == kPermutationKey) {
      check_permutation(value, where);
      ckpt.data.permutation = value;
      continue;
    }
    bool placed = false;
    for (const Section& section : kSections) {
      if (starts_with(key, section.prefix) && key.size() > std::strlen(section.prefix)) {
        (ckpt.*section.member).insert(key.substr(std::strlen(section.prefix)), value);
        placed = true;
        break;
      }
    }
    RNNKIT_CHECK(placed, where, ": unexpected tensor '", key,
                 "' (a checkpoint holds model.*, optimizer.*, scheduler.*, extra.* and data.permutation)");
  }
  return ckpt;
}

std::string checkpoint_path(const std::string& dir, int64_t step, const std::string& prefix) {
  check_prefix(prefix);
  RNNKIT_CHECK(step >= 0, "checkpoint_path: step must be non-negative, got ", step);
  char digits[32];
  std::snprintf(digits, sizeof digits, "%012lld", static_cast<long long>(step));
  const std::string sep = (dir.empty() || dir.back() == '/') ? "" : "/";
  return dir + sep + prefix + "-" + digits + ".safetensors";
}

std::vector<std::string> list_checkpoints(const std::string& dir, const std::string& prefix) {
  check_prefix(prefix);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr && errno == ENOENT) return {};
  RNNKIT_CHECK(d != nullptr, "list_checkpoints: cannot open folder '", dir, "': ", std::strerror(errno));
  std::vector<std::pair<int64_t, std::string>> found;
  while (const dirent* e = ::readdir(d)) {
    const int64_t step = checkpoint_step(e->d_name, prefix);
    if (step >= 0) found.emplace_back(step, e->d_name);
  }
  ::closedir(d);
  std::sort(found.begin(), found.end());
  const std::string sep = (dir.empty() || dir.back() == '/') ? "" : "/";
  std::vector<std::string> paths;
  for (const auto& f : found) paths.push_back(dir + sep + f.second);
  return paths;
}

std::optional<std::string> latest_checkpoint(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> all = list_checkpoints(dir, prefix);
  if (all.empty()) return std::nullopt;
  return all.back();
}

namespace {

// Deletes all but the keep_last highest-step checkpoints; `newest` (just
// written) is always one of those kept, whatever its step.
std::vector<std::string> rotate(const std::string& dir, int64_t keep_last, const std::string& prefix,
                                const std::string& newest) {
  RNNKIT_CHECK(keep_last >= 1, "rotate_checkpoints: keep_last must be at least 1, got ", keep_last);
  std::vector<std::string> others;
  for (std::string& p : list_checkpoints(dir, prefix))
    if (p != newest) others.push_back(std::move(p));
  const size_t keep = static_cast<size_t>(keep_last) - (newest.empty() ? 0 : 1);
  std::vector<std::string> removed;
  for (size_t i = 0; i + keep < others.size(); ++i) {
    if (::unlink(others[i].c_str()) == 0) removed.push_back(others[i]);
    else RNNKIT_CHECK(errno == ENOENT, "rotate_checkpoints: cannot remove '", others[i], "': ", std::strerror(errno));
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0)
    for (std::string& p : remove_stale_temp_files(dir)) removed.push_back(std::move(p));
  return removed;
}

}  // namespace

std::vector<std::string> rotate_checkpoints(const std::string& dir, int64_t keep_last, const std::string& prefix) {
  return rotate(dir, keep_last, prefix, "");
}

std::string save_checkpoint_rotating(const TrainingCheckpoint& ckpt, const std::string& dir, int64_t keep_last,
                                     const std::string& prefix) {
  RNNKIT_CHECK(keep_last >= 1, "save_checkpoint_rotating: keep_last must be at least 1, got ", keep_last);
  make_dirs(dir);
  const std::string path = checkpoint_path(dir, ckpt.step, prefix);
  save_checkpoint(ckpt, path);
  rotate(dir, keep_last, prefix, path);
  return path;
}

}  // namespace rnnkit::io
