// safetensors files: exact round trips, the layout the format prescribes,
// clear errors for every malformed input, atomic writes, the content
// checksum, and interop both ways with the reference implementation (the
// `safetensors` Python package) and with PyTorch through tools/pt2safetensors.py.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/io_test_util.h"
#include "rnnkit/io/checkpoint.h"
#include "rnnkit/io/safetensors.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/nn/linear.h"
#include "rnnkit/nn/module.h"
#include "rnnkit/nn/rnn.h"
#include "support/oracle.h"

using namespace rnnkit;
using namespace rnnkit::iotest;
using nlohmann::json;
using rnnkit::testing::fresh_seed;
using rnnkit::testing::oracle;
using rnnkit::io::Metadata;

namespace {

// 8-byte little-endian length + header text + data, no questions asked.
std::string raw_file(const std::string& header, const std::string& data = "", uint64_t length = UINT64_MAX) {
  const uint64_t n = length == UINT64_MAX ? header.size() : length;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t header_length(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return n;
}

json meta_json(const StateDict& reply) {
  std::vector<int64_t> codes = reply.at("__meta__").to_vector<int64_t>();
  std::string text(codes.begin(), codes.end());
  return json::parse(text);
}

StateDict strip_prefix(const StateDict& reply, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : reply)
    if (k.compare(0, prefix.size(), prefix) == 0) out.insert(k.substr(prefix.size()), v);
  return out;
}

// Compares by name, in any order (the reference implementation orders its own way).
void expect_same_by_name(const StateDict& got, const StateDict& want) {
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [k, v] : want) {
    const Tensor* g = got.find(k);
    ASSERT_NE(g, nullptr) << "missing " << k;
    EXPECT_TRUE(bit_equal(*g, v)) << k;
  }
}

const Metadata kTrickyMetadata = {
    {"config", R"({"model": "lstm", "hidden_size": 32, "quote": "\"", "path": "C:\\tmp"})"},
    {"note", "multi\nline\ttext, unicode: h\xc3\xa9llo \xe2\x9c\x93"},
    {"empty", ""},
};

// ------------------------------------------------------------ round trips

TEST(Safetensors, RoundTripIsExact) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  for (int trial = 0; trial < 20; ++trial) {
    StateDict sd = random_state(g);
    const std::string path = dir.file("m.safetensors");
    io::save_safetensors(sd, path, kTrickyMetadata);
    io::SafetensorsContent back = io::load_safetensors(path, /*require_checksum=*/true);
    EXPECT_TRUE(same_state(back.tensors, sd));  // same order, dtypes, shapes and bits
    EXPECT_EQ(back.metadata, kTrickyMetadata);
    EXPECT_TRUE(same_state(rnnkit::load(path), sd));
    // The in-memory form agrees with the file.
    EXPECT_EQ(io::read_file(path), io::to_safetensors_bytes(sd, kTrickyMetadata, /*checksum=*/true));
  }
}

TEST(Safetensors, EmptyStateDictAndNoMetadata) {
  TempDir dir;
  io::save_safetensors(StateDict(), dir.file("e.safetensors"));
  io::SafetensorsContent c = io::load_safetensors(dir.file("e.safetensors"));
  EXPECT_TRUE(c.tensors.empty());
  EXPECT_TRUE(c.metadata.empty());
  // Without a checksum there is no metadata at all: the header is "{}" padded.
  const std::string bytes = io::to_safetensors_bytes(StateDict());
  EXPECT_EQ(bytes, raw_file("{}      "));
  EXPECT_TRUE(io::from_safetensors_bytes(bytes, "mem").tensors.empty());
}

TEST(Safetensors, LayoutFollowsTheFormat) {
  Generator g(7);
  StateDict sd;
  sd.insert("flag", from_vector(std::vector<int64_t>{1, 0, 1}).to(kBool));  // 3 bytes first
  sd.insert("w32", randn({3, 3}, kFloat32, &g));
  sd.insert("w64", randn({5}, kFloat64, &g));
  sd.insert("n", scalar_tensor(3, kInt64));
  TempDir dir;
  const std::string path = dir.file("l.safetensors");
  io::save_safetensors(sd, path, {{"k", "v"}});
  const std::string bytes = io::read_file(path);
  const uint64_t n = header_length(bytes);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}')) << "padding is spaces";
  io::SafetensorsInfo info = io::inspect_safetensors(path);
  ASSERT_EQ(info.tensors.size(), 4u);
  // Header in state_dict order; data grouped so every tensor is aligned to its element.
  const std::vector<std::string> order = {"flag", "w32", "w64", "n"};
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(info.tensors[i].name, order[i]);
    const uint64_t size = info.tensors[i].dtype == "BOOL" ? 1 : info.tensors[i].dtype == "F32" ? 4 : 8;
    EXPECT_EQ(info.tensors[i].data_begin % size, 0u) << order[i];
  }
  EXPECT_EQ(info.metadata.count(io::kChecksumKey), 1u);
  EXPECT_EQ(info.metadata.at("k"), "v");
  EXPECT_EQ(info.file_bytes, bytes.size());
  EXPECT_TRUE(same_state(io::load_safetensors(path).tensors, sd));
}

TEST(Safetensors, SaveRefusesWhatTheFormatCannotHold) {
  TempDir dir;
  StateDict bad;
  bad.insert("__metadata__", zeros({1}));
  EXPECT_TRUE(throws_error([&] { io::save_safetensors(bad, dir.file("a.safetensors")); }, {"__metadata__"}));
  StateDict undefined;
  undefined.insert("w", Tensor());
  EXPECT_TRUE(throws_error([&] { io::save_safetensors(undefined, dir.file("a.safetensors")); }, {"'w'", "undefined"}));
  StateDict not_utf8;
  not_utf8.insert(std::string("w\xff"), zeros({1}));
  EXPECT_TRUE(throws_error([&] { io::save_safetensors(not_utf8, dir.file("a.safetensors")); }, {"UTF-8"}));
  EXPECT_TRUE(throws_error([&] { io::save_safetensors(StateDict(), dir.file("a.safetensors"), {{io::kChecksumKey, "0"}}); },
                           {"reserved"}));
  EXPECT_TRUE(throws_error([&] { io::save_safetensors(StateDict(), dir.file("missing/a.safetensors")); },
                           {"missing/a.safetensors"}));
  EXPECT_TRUE(list_dir(dir.path()).empty()) << "no temporary file left behind";
}

// -------------------------------------------------------- malformed files

struct Malformed {
  const char* what;
  std::string bytes;
  std::vector<std::string> message;  // parts the error must contain
};

std::vector<Malformed> malformed_files() {
  const std::string f8(8, '\0');  // 8 data bytes
  const std::string entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string zip = "PK\x03\x04" + std::string(60, 'x');
  return {
      {"empty file", "", {"truncated"}},
      {"5 bytes", "\x10\0\0\0\0", {"truncated"}},
      {"huge header length", raw_file("{}", "", UINT64_MAX - 1), {"exceeds the limit"}},
      {"header past the end", raw_file("{}", "", 1000), {"runs past the end"}},
      {"header length 0", raw_file("", "{}", 0), {"too small"}},
      {"a zip (.pt) file", zip, {"header length"}},
      {"not an object", raw_file("[1,2]   "), {"does not start with '{'"}},
      {"invalid JSON", raw_file("{\"a\":  "), {"not valid JSON"}},
      {"invalid UTF-8", raw_file("{\"\xff\":1}"), {"not valid JSON"}},
      {"data past the end", raw_file("{" + entry + "}", "1234"), {"'a'", "outside the data section"}},
      {"shape/offsets disagree", raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f8),
       {"'a'", "needs"}},
      {"offset overflow",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]}})", f8),
       {"'a'", "outside"}},
      {"offset beyond uint64",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e30]}})", f8), {"'a'", "data_offsets"}},
      {"negative offset", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", f8),
       {"'a'", "data_offsets"}},
      {"shape overflow",
       raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", f8),
       {"'a'", "overflows"}},
      {"zero-size shape whose strides overflow",
       raw_file(R"({"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})"),
       {"'a'", "overflows"}},
      {"negative shape", raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8),
       {"'a'", "non-negative"}},
      {"fractional shape", raw_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f8),
       {"'a'", "non-negative integers"}},
      {"unknown dtype", raw_file(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", f8),
       {"'a'", "unknown dtype"}},
      {"dtype rnnkit cannot hold", raw_file(R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", f8),
       {"'a'", "not supported by rnnkit"}},
      {"overlap",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                std::string(12, '\0')),
       {"'b'", "overlaps"}},
      {"gap",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                std::string(12, '\0')),
       {"'b'", "gap"}},
      {"trailing bytes", raw_file("{" + entry + "}", f8 + "xx"), {"trailing bytes"}},
      {"metadata not an object", raw_file(R"({"__metadata__":[1]})"), {"__metadata__"}},
      {"metadata not strings", raw_file(R"({"__metadata__":{"k":1}})"), {"'k'", "must be a string"}},
      {"entry without dtype", raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f8),
       {"'a'", "dtype, shape and data_offsets"}},
      {"entry not an object", raw_file(R"({"a":7})"), {"'a'", "must be an object"}},
      {"BOOL value 2", raw_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x02", 2)),
       {"'m'", "neither 0 nor 1"}},
      {"deep nesting", raw_file(R"({"a":{"dtype":"F32","shape":[[[[2]]]],"data_offsets":[0,8]}})", f8),
       {"nests deeper"}},
      {"duplicate key", raw_file("{" + entry + "," + entry + "}", f8), {"'a' twice"}},
      {"malformed checksum", raw_file(R"({"__metadata__":{"rnnkit.crc32":"zz"}})"), {"rnnkit.crc32", "hex"}},
      {"wrong checksum", raw_file(R"({"__metadata__":{"rnnkit.crc32":"12345678"}})"), {"checksum mismatch"}},
      {"checksummed header padded with newlines",
       raw_file(R"({"__metadata__":{"rnnkit.crc32":"00000000"}})" "\n\n\n"), {"padding"}},
  };
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  TempDir dir;
  for (const Malformed& m : malformed_files()) {
    SCOPED_TRACE(m.what);
    const std::string path = dir.file("bad.safetensors");
    write_raw(path, m.bytes);
    auto check = [&](const std::string& where, auto&& load) {
      try {
        load();
        ADD_FAILURE() << m.what << ": loaded without an error";
      } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(where), std::string::npos) << "error does not name the file: " << msg;
        for (const std::string& part : m.message) EXPECT_NE(msg.find(part), std::string::npos) << msg;
      } catch (const std::exception& e) {
        ADD_FAILURE() << m.what << ": non-rnnkit exception " << e.what();
      }
    };
    check(path, [&] { io::load_safetensors(path); });
    check("crafted", [&] { io::from_safetensors_bytes(m.bytes, "crafted"); });
  }
}

TEST(Safetensors, FileErrorsNameThePath) {
  TempDir dir;
  EXPECT_TRUE(throws_error([&] { io::load_safetensors(dir.file("nope.safetensors")); },
                           {"nope.safetensors", "cannot open"}));
  EXPECT_TRUE(throws_error([&] { io::load_safetensors(dir.path()); }, {dir.path(), "folder"}));
  EXPECT_TRUE(throws_error([&] { io::read_file(dir.path()); }, {"folder"}));
  EXPECT_TRUE(throws_error([&] { io::inspect_safetensors(dir.file("nope")); }, {"nope"}));
}

// -------------------------------------------------------------- checksum

TEST(Safetensors, Crc32MatchesZlib) {
  const std::string check = "123456789";
  EXPECT_EQ(io::crc32(check.data(), check.size()), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_EQ(io::crc32("", 0), 0u);
  // Incremental over any split equals one pass; compare with a bitwise reference.
  Generator g(fresh_seed());
  std::string data(10007, '\0');
  for (auto& c : data) c = static_cast<char>(g.next_u64());
  uint32_t slow = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    slow ^= c;
    for (int k = 0; k < 8; ++k) slow = (slow & 1) ? (slow >> 1) ^ 0xEDB88320u : slow >> 1;
  }
  slow = ~slow;
  EXPECT_EQ(io::crc32(data.data(), data.size()), slow);
  for (int trial = 0; trial < 50; ++trial) {
    const size_t cut = g.next_below(data.size());
    EXPECT_EQ(io::crc32(data.data() + cut, data.size() - cut, io::crc32(data.data(), cut)), slow);
  }
}

TEST(Safetensors, ChecksumCatchesDataCorruption) {
  Generator g(fresh_seed());
  StateDict sd = random_state(g);
  TempDir dir;
  const std::string path = dir.file("c.safetensors");
  io::save_safetensors(sd, path);
  std::string bytes = io::read_file(path);
  const uint64_t data_start = 8 + header_length(bytes);
  ASSERT_LT(data_start, bytes.size());
  bytes[data_start + (bytes.size() - data_start) / 2] ^= 0x10;
  write_raw(path, bytes);
  EXPECT_TRUE(throws_error([&] { io::load_safetensors(path); }, {path, "checksum mismatch", "corrupted"}));
  // Without a checksum the reader cannot know (only the structure is checked).
  std::string plain = io::to_safetensors_bytes(sd);
  const uint64_t plain_start = 8 + header_length(plain);
  plain[plain_start + 1] ^= 0x10;
  EXPECT_NO_THROW(io::from_safetensors_bytes(plain, "plain"));
  EXPECT_TRUE(throws_error([&] { io::from_safetensors_bytes(plain, "plain", /*require_checksum=*/true); },
                           {"plain", "no 'rnnkit.crc32'"}));
}

// A damaged checksum key must not switch the verification off: same-length
// damage, and a flipped byte that forms a JSON escape and shortens the key
// ("rnnkit" -> "r\nkit", found by Corruption.ByteFlips).
TEST(Safetensors, DamagedChecksumKeyIsRefused) {
  Generator g(fresh_seed());
  const StateDict sd = random_state(g);
  TempDir dir;
  const std::string path = dir.file("k.safetensors");
  io::save_safetensors(sd, path);
  const std::string bytes = io::read_file(path);
  const size_t at = bytes.find("\"rnnkit.crc32\"");
  ASSERT_NE(at, std::string::npos);
  // Offsets from the key's opening quote: 'r' or an 'n' turned into a backslash
  // reads as "\n", the first 'c' as "\r"; 'i' turned into 'X' keeps the length.
  for (const auto& [offset, value] : {std::pair<size_t, char>{1, '\\'}, {2, '\\'}, {8, '\\'}, {5, 'X'}}) {
    std::string damaged = bytes;
    damaged[at + offset] = value;
    SCOPED_TRACE(damaged.substr(at, 16));
    write_raw(path, damaged);
    EXPECT_TRUE(throws_error([&] { io::load_safetensors(path); }, {path, "corrupted"}));
  }
}

// ---------------------------------------------------------- atomic writes

TEST(AtomicWrite, ReplacesAndKeepsPermissions) {
  TempDir dir;
  const std::string path = dir.file("f.bin");
  io::write_file_atomic(path, std::string("first"));
  EXPECT_EQ(io::read_file(path), "first");
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  io::write_file_atomic(path, std::vector<io::ByteSpan>{{"sec", 3}, {"", 0}, {"ond", 3}});
  EXPECT_EQ(io::read_file(path), "second");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"f.bin"});
  EXPECT_TRUE(throws_error([&] { io::write_file_atomic(dir.path() + "/", std::string("x")); }, {"folder"}));
}

TEST(AtomicWrite, StaleTempFilesOfDeadWritersAreRemoved) {
  TempDir dir;
  // A pid that is certainly dead: a child that has exited and been reaped.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const std::string dead = "m.safetensors.tmp." + std::to_string(child) + ".0123456789abcdef";
  const std::string mine = "m.safetensors.tmp." + std::to_string(::getpid()) + ".0123456789abcdef";
  const std::string live = "m.safetensors.tmp.1.0123456789abcdef";  // init is alive
  for (const std::string& n : {dead, mine, live, std::string("m.safetensors"), std::string("x.tmp.12.short")})
    write_raw(dir.file(n), "x");
  std::vector<std::string> removed = io::remove_stale_temp_files(dir.path());
  EXPECT_EQ(removed, std::vector<std::string>{dir.file(dead)});
  EXPECT_FALSE(file_exists(dir.file(dead)));
  EXPECT_TRUE(file_exists(dir.file(mine)));
  EXPECT_TRUE(file_exists(dir.file(live)));
  EXPECT_TRUE(file_exists(dir.file("m.safetensors")));
}

// ------------------------------------------------------- loading a module

class TinyImpl : public nn::Module {
 public:
  TinyImpl() : nn::Module("Tiny") {
    weight = register_parameter("weight", zeros({3, 4}));
    bias = register_parameter("bias", zeros({3}));
    count = register_buffer("count", zeros({}, kInt64));
  }
  Tensor weight, bias, count;
};

TEST(LoadInto, LoadsAndNamesEveryProblem) {
  Generator g(fresh_seed());
  TempDir dir;
  StateDict good;
  good.insert("weight", randn({3, 4}, kFloat32, &g));
  good.insert("bias", randn({3}, kFloat32, &g));
  good.insert("count", scalar_tensor(5, kInt64));
  const std::string path = dir.file("tiny.safetensors");
  rnnkit::save(good, path);
  TinyImpl tiny;
  rnnkit::load(tiny, path);
  EXPECT_TRUE(bit_equal(tiny.weight, good.at("weight")));
  EXPECT_TRUE(bit_equal(tiny.count, good.at("count")));

  auto variant = [&](const std::function<void(StateDict&)>& edit) {
    StateDict sd = good;
    edit(sd);
    rnnkit::save(sd, path);
  };
  variant([](StateDict& sd) { sd.erase("bias"); });
  EXPECT_TRUE(throws_error([&] { rnnkit::load(tiny, path); }, {path, "Missing key(s)", "\"bias\""}));
  variant([](StateDict& sd) { sd.insert("extra", zeros({1})); });
  EXPECT_TRUE(throws_error([&] { rnnkit::load(tiny, path); }, {path, "Unexpected key(s)", "\"extra\""}));
  io::load_into(tiny, path, /*strict=*/false);  // non-strict ignores the extra key
  variant([](StateDict& sd) { sd.insert("weight", zeros({4, 3})); });
  EXPECT_TRUE(throws_error([&] { rnnkit::load(tiny, path); }, {path, "size mismatch for weight", "[4, 3]", "[3, 4]"}));
  variant([](StateDict& sd) { sd.insert("weight", zeros({3, 4}, kFloat64)); });
  EXPECT_TRUE(throws_error([&] { rnnkit::load(tiny, path); }, {path, "dtype mismatch for weight", "torch.float64"}));
}

// ------------------------------------------- the reference implementation

TEST(Interop, RnnkitWritesReferenceReads) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  for (const char* api : {"numpy", "torch", "safe_open"}) {
    SCOPED_TRACE(api);
    StateDict sd = random_state(g);
    const std::string path = dir.file(std::string(api) + ".safetensors");
    io::save_safetensors(sd, path, kTrickyMetadata);
    StateDict reply = oracle().call("io_reference_read", {{"path", path}, {"api", api}}, {});
    expect_same_by_name(strip_prefix(reply, "t."), sd);
    json meta = meta_json(reply);
    Metadata seen = meta["metadata"].get<Metadata>();
    EXPECT_EQ(seen.count(io::kChecksumKey), 1u);  // kept, and ignored, by the reference
    seen.erase(io::kChecksumKey);
    EXPECT_EQ(seen, kTrickyMetadata);
  }
}

TEST(Interop, ReferenceWritesRnnkitReads) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  for (const char* api : {"torch", "numpy"}) {
    SCOPED_TRACE(api);
    StateDict sd;
    for (const auto& [k, v] : random_state(g)) sd.insert(k, v.contiguous());
    const std::string path = dir.file(std::string(api) + ".safetensors");
    oracle().call("io_reference_write", {{"path", path}, {"api", api}, {"metadata", kTrickyMetadata}}, sd);
    io::SafetensorsContent c = io::load_safetensors(path);
    expect_same_by_name(c.tensors, sd);
    EXPECT_EQ(c.metadata, kTrickyMetadata);
    EXPECT_TRUE(throws_error([&] { io::load_safetensors(path, /*require_checksum=*/true); }, {"rnnkit.crc32"}));
  }
  // No metadata at all, and a state_dict with nothing in it.
  const std::string empty = dir.file("empty.safetensors");
  oracle().call("io_reference_write", {{"path", empty}}, {});
  EXPECT_TRUE(io::load_safetensors(empty).tensors.empty());
}

TEST(Interop, ChecksumSurvivesAReferenceResave) {
  Generator g(fresh_seed());
  TempDir dir;
  StateDict sd = random_state(g);
  const std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors");
  io::save_safetensors(sd, a, kTrickyMetadata);
  oracle().call("io_reference_resave", {{"src", a}, {"dst", b}}, {});
  EXPECT_NE(io::read_file(a), io::read_file(b)) << "the reference lays the file out its own way";
  io::SafetensorsContent c = io::load_safetensors(b, /*require_checksum=*/true);  // verified
  expect_same_by_name(c.tensors, sd);
  EXPECT_EQ(c.metadata, kTrickyMetadata);
}

TEST(Interop, PythonToolAgreesOnTheChecksum) {
  Generator g(fresh_seed());
  TempDir dir;
  StateDict sd = random_state(g);
  // rnnkit writes, the tool's reader verifies the checksum in Python.
  const std::string a = dir.file("a.safetensors");
  io::save_safetensors(sd, a, kTrickyMetadata);
  StateDict reply = oracle().call("io_tool_read", {{"path", a}}, {});
  EXPECT_TRUE(same_state(strip_prefix(reply, "t."), sd));
  EXPECT_EQ(meta_json(reply)["metadata"].get<Metadata>(), kTrickyMetadata);
  // The tool writes with a checksum computed in Python; rnnkit verifies it.
  StateDict contiguous;
  for (const auto& [k, v] : sd) contiguous.insert(k, v.contiguous());
  const std::string b = dir.file("b.safetensors");
  oracle().call("io_tool_write", {{"path", b}, {"metadata", kTrickyMetadata}}, contiguous);
  io::SafetensorsContent c = io::load_safetensors(b, /*require_checksum=*/true);
  EXPECT_TRUE(same_state(c.tensors, sd));
  EXPECT_EQ(c.metadata, kTrickyMetadata);
  EXPECT_EQ(io::read_file(a), io::read_file(b)) << "both writers produce the same bytes";
}

TEST(Interop, PtToSafetensorsAndBackIsIdentical) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  StateDict sd;
  for (const auto& [k, v] : random_state(g)) sd.insert(k, v.contiguous());
  StateDict reply = oracle().call("io_pt_roundtrip", {{"dir", dir.path()}}, sd);
  EXPECT_EQ(reply.at("identical").item<int64_t>(), 1) << ".pt -> safetensors -> .pt changed something";
  // The converted file is rnnkit's, checksum included.
  EXPECT_TRUE(same_state(io::load_safetensors(dir.file("model.safetensors"), true).tensors, sd));

  // Half-precision and int32 tensors survive the tool's round trip too; rnnkit
  // lists them and refuses to load them, naming the tensor.
  reply = oracle().call("io_pt_roundtrip", {{"dir", dir.path()}, {"half", true}, {"seed", 3}}, sd);
  EXPECT_EQ(reply.at("identical").item<int64_t>(), 1);
  const std::string path = dir.file("model.safetensors");
  io::SafetensorsInfo info = io::inspect_safetensors(path);
  std::map<std::string, std::string> dtypes;
  for (const auto& t : info.tensors) dtypes[t.name] = t.dtype;
  EXPECT_EQ(dtypes["half.f16"], "F16");
  EXPECT_EQ(dtypes["half.bf16"], "BF16");
  EXPECT_EQ(dtypes["half.i32"], "I32");
  EXPECT_TRUE(throws_error([&] { io::load_safetensors(path); }, {path, "'half.", "not supported by rnnkit"}));
}

// ------------------------------------------- model state_dicts, both ways

struct NetConfig {
  int64_t vocab, embed, hidden, layers, proj;
  bool bidirectional;
  json to_json(const std::string& dir, uint64_t seed) const {
    return {{"vocab", vocab}, {"embed", embed},   {"hidden", hidden},         {"layers", layers},
            {"proj", proj},   {"dir", dir},       {"bidirectional", bidirectional}, {"seed", seed % 1000000}};
  }
};

// Embedding -> LSTM (batch_first) -> Linear, with PyTorch's parameter names.
class NetImpl : public nn::Module {
 public:
  explicit NetImpl(const NetConfig& c) : nn::Module("Net") {
    const int64_t directions = c.bidirectional ? 2 : 1;
    embedding = register_module("embedding", nn::Embedding(c.vocab, c.embed));
    lstm = register_module("lstm", nn::LSTM(nn::LSTMOptions(c.embed, c.hidden)
                                                .num_layers(c.layers)
                                                .batch_first(true)
                                                .bidirectional(c.bidirectional)
                                                .proj_size(c.proj)));
    fc = register_module("fc", nn::Linear(directions * (c.proj ? c.proj : c.hidden), c.vocab));
  }
  nn::RNNOutput forward(const Tensor& tokens) {
    nn::RNNOutput r = lstm->forward(embedding->forward(tokens));
    r.output = fc->forward(r.output);
    return r;
  }
  nn::Embedding embedding;
  nn::LSTM lstm;
  nn::Linear fc;
};

void expect_outputs(const nn::RNNOutput& got, const StateDict& torch_out, const std::string& label) {
  EXPECT_CLOSE(got.output, torch_out.at("logits"), 1e-5, label + " logits");
  EXPECT_CLOSE(got.h_n, torch_out.at("h_n"), 1e-5, label + " h_n");
  EXPECT_CLOSE(got.c_n, torch_out.at("c_n"), 1e-5, label + " c_n");
}

TEST(Interop, ModelStateDictMovesBothWays) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  for (int trial = 0; trial < 4; ++trial) {
    NetConfig c{pick(g, 5, 30), pick(g, 2, 8), pick(g, 2, 10), pick(g, 1, 2), 0, g.next_below(2) == 1};
    if (trial == 3) c.proj = pick(g, 1, c.hidden - 1 > 0 ? c.hidden - 1 : 1);
    if (c.proj >= c.hidden) c.proj = 0;
    SCOPED_TRACE("trial " + std::to_string(trial));
    const int64_t batch = pick(g, 1, 4), steps = pick(g, 1, 6);
    std::vector<int64_t> ids(static_cast<size_t>(batch * steps));
    for (auto& id : ids) id = pick(g, 0, c.vocab - 1);
    StateDict inputs;
    inputs.insert("tokens", from_vector(ids, {batch, steps}));

    // PyTorch -> rnnkit: torch.save, the tool, rnnkit::load into a fresh model.
    StateDict torch_out = oracle().call("io_model_from_torch", c.to_json(dir.path(), seed + trial), inputs);
    NetImpl net(c);
    net.eval();
    rnnkit::load(net, dir.file("torch_model.safetensors"));
    expect_outputs(net.forward(inputs.at("tokens")), torch_out, "torch->rnnkit");

    // rnnkit -> PyTorch: rnnkit's own weights (re-drawn here), saved, converted, loaded strictly.
    NetImpl mine(c);
    mine.eval();
    const std::string path = dir.file("rnnkit_model.safetensors");
    rnnkit::save(mine.state_dict(), path);
    json cfg = c.to_json(dir.path(), seed + trial);
    cfg["path"] = path;
    expect_outputs(mine.forward(inputs.at("tokens")), oracle().call("io_model_to_torch", cfg, inputs),
                   "rnnkit->torch");

    // A training checkpoint's model section goes to PyTorch the same way.
    io::TrainingCheckpoint ckpt;
    ckpt.model = mine.state_dict();
    ckpt.step = 10;
    const std::string ckpt_path = dir.file("ckpt.safetensors");
    io::save_checkpoint(ckpt, ckpt_path);
    cfg["path"] = ckpt_path;
    cfg["key"] = "model";
    expect_outputs(mine.forward(inputs.at("tokens")), oracle().call("io_model_to_torch", cfg, inputs),
                   "checkpoint->torch");
  }
}

}  // namespace
