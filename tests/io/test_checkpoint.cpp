// Training checkpoints: every field survives exactly, every malformed
// checkpoint is a clear error, folder rotation and latest lookup, and atomic
// replacement proven by SIGKILLing a writer at random moments.
#include <gtest/gtest.h>

#include <cstdio>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include "io/io_test_util.h"
#include "rnnkit/io/checkpoint.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/nn/linear.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/nn/rnn.h"
#include "rnnkit/optim/adam.h"
#include "rnnkit/optim/lr_scheduler.h"
#include "support/oracle.h"

using namespace rnnkit;
using namespace rnnkit::iotest;
using rnnkit::io::TrainingCheckpoint;
using rnnkit::testing::fresh_seed;

namespace {

bool same_state(const Generator::State& a, const Generator::State& b) {
  return a.s == b.s && a.seed == b.seed && a.has_spare == b.has_spare &&
         std::memcmp(&a.spare_normal, &b.spare_normal, sizeof(double)) == 0;
}

::testing::AssertionResult same_checkpoint(const TrainingCheckpoint& a, const TrainingCheckpoint& b) {
  for (auto [name, x, y] : {std::make_tuple("model", &a.model, &b.model),
                            std::make_tuple("optimizer", &a.optimizer, &b.optimizer),
                            std::make_tuple("scheduler", &a.scheduler, &b.scheduler),
                            std::make_tuple("extra", &a.extra, &b.extra)}) {
    auto r = iotest::same_state(*x, *y);
    if (!r) return ::testing::AssertionFailure() << name << ": " << r.message();
  }
  if (a.epoch != b.epoch || a.step != b.step) return ::testing::AssertionFailure() << "epoch/step differ";
  if (!same_state(a.rng, b.rng)) return ::testing::AssertionFailure() << "rng differs";
  if (a.data.batch_index != b.data.batch_index || a.data.shuffle_seed != b.data.shuffle_seed ||
      !same_state(a.data.shuffle_rng, b.data.shuffle_rng))
    return ::testing::AssertionFailure() << "data position differs";
  if (a.data.permutation.defined() != b.data.permutation.defined() ||
      (a.data.permutation.defined() && !bit_equal(a.data.permutation, b.data.permutation)))
    return ::testing::AssertionFailure() << "permutation differs";
  if (a.metadata != b.metadata) return ::testing::AssertionFailure() << "metadata differs";
  return ::testing::AssertionSuccess();
}

TEST(Checkpoint, RoundTripIsExact) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  for (int trial = 0; trial < 10; ++trial) {
    TrainingCheckpoint c = random_checkpoint(g);
    if (trial == 1) c.data.permutation = Tensor();  // optional
    if (trial == 2) c.rng.spare_normal = -0.0;      // bit patterns, not values
    const std::string path = dir.file("c.safetensors");
    save_checkpoint(c, path);
    EXPECT_TRUE(same_checkpoint(load_checkpoint(path), c));
  }
}

TEST(Checkpoint, RestoredGeneratorContinuesTheSameStream) {
  Generator g(fresh_seed());
  for (int i = 0; i < 7; ++i) g.next_normal();  // odd count: a spare normal is pending
  TrainingCheckpoint c;
  c.rng = g.state();
  TempDir dir;
  save_checkpoint(c, dir.file("g.safetensors"));
  Generator resumed(1);
  resumed.set_state(load_checkpoint(dir.file("g.safetensors")).rng);
  for (int i = 0; i < 100; ++i) {
    const double a = g.next_normal(), b = resumed.next_normal();
    ASSERT_EQ(std::memcmp(&a, &b, sizeof a), 0) << "draw " << i;
    ASSERT_EQ(g.next_u64(), resumed.next_u64());
  }
}

TEST(Checkpoint, TheReferenceImplementationReadsIt) {
  Generator g(fresh_seed());
  TrainingCheckpoint c = random_checkpoint(g);
  TempDir dir;
  const std::string path = dir.file("c.safetensors");
  save_checkpoint(c, path);
  StateDict reply = rnnkit::testing::oracle().call("io_reference_read", {{"path", path}, {"api", "torch"}}, {});
  EXPECT_TRUE(bit_equal(reply.at("t.model.encoder.weight"), c.model.at("encoder.weight")));
  EXPECT_TRUE(bit_equal(reply.at("t.optimizer.state.0.exp_avg"), c.optimizer.at("state.0.exp_avg")));
  EXPECT_TRUE(bit_equal(reply.at("t.data.permutation"), c.data.permutation));
  std::vector<int64_t> codes = reply.at("__meta__").to_vector<int64_t>();
  auto meta = nlohmann::json::parse(std::string(codes.begin(), codes.end()))["metadata"];
  EXPECT_EQ(meta["rnnkit.step"], std::to_string(c.step));
  EXPECT_EQ(meta["rnnkit.format"], io::kCheckpointFormat);
  EXPECT_EQ(meta["config"], c.metadata["config"]);
}

TEST(Checkpoint, SaveRefusesAmbiguousInput) {
  TempDir dir;
  TrainingCheckpoint c;
  c.metadata["rnnkit.epoch"] = "3";
  EXPECT_TRUE(throws_error([&] { save_checkpoint(c, dir.file("c.safetensors")); }, {"rnnkit.epoch", "reserved"}));
  c = TrainingCheckpoint();
  c.model.insert("", zeros({1}));
  EXPECT_TRUE(throws_error([&] { save_checkpoint(c, dir.file("c.safetensors")); }, {"empty key"}));
  c = TrainingCheckpoint();
  c.data.permutation = zeros({3});
  EXPECT_TRUE(throws_error([&] { save_checkpoint(c, dir.file("c.safetensors")); }, {"data.permutation", "int64"}));
  EXPECT_TRUE(list_dir(dir.path()).empty());
}

TEST(Checkpoint, MalformedCheckpointsNameFileAndKey) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  // A checkpoint's metadata, to edit one field at a time.
  TrainingCheckpoint good;
  good.model.insert("w", zeros({2}));
  save_checkpoint(good, path);
  const io::Metadata base = io::inspect_safetensors(path).metadata;
  auto with = [&](const std::string& key, const std::string& value, const StateDict& tensors = {}) {
    io::Metadata md = base;
    md.erase(io::kChecksumKey);
    if (value.empty()) md.erase(key);
    else md[key] = value;
    io::save_safetensors(tensors, path, md);
  };
  auto expect = [&](std::initializer_list<std::string> parts) {
    std::vector<std::string> all = parts;
    all.push_back(path);
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "loaded without an error";
    } catch (const Error& e) {
      for (const auto& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  with("rnnkit.format", "");
  expect({"'rnnkit.format' is missing"});
  with("rnnkit.format", "rnnkit.checkpoint.v9");
  expect({"rnnkit.format", "v9"});
  with("rnnkit.step", "12x");
  expect({"'rnnkit.step'", "decimal integer"});
  with("rnnkit.epoch", "99999999999999999999");
  expect({"'rnnkit.epoch'"});
  with("rnnkit.rng", "0123");
  expect({"'rnnkit.rng'", "hex words"});
  with("rnnkit.data.shuffle_seed", "xyz");
  expect({"'rnnkit.data.shuffle_seed'"});
  with("rnnkit.data.shuffle_rng", "");
  expect({"'rnnkit.data.shuffle_rng' is missing"});
  with("rnnkit.future_field", "1");
  expect({"unexpected metadata 'rnnkit.future_field'"});
  StateDict stray;
  stray.insert("weights.w", zeros({1}));
  with("rnnkit.epoch", "1", stray);
  expect({"unexpected tensor 'weights.w'"});
  StateDict float_perm;
  float_perm.insert("data.permutation", zeros({3}));
  with("rnnkit.epoch", "1", float_perm);
  expect({"'data.permutation'", "int64"});
  // Not rnnkit's: a safetensors file without the checksum.
  io::Metadata unchecked = base;
  unchecked.erase(io::kChecksumKey);
  io::write_file_atomic(path, io::to_safetensors_bytes(StateDict(), unchecked));
  expect({"no 'rnnkit.crc32'"});
}

// ------------------------------------------------------------- rotation

TEST(Checkpoint, RotationKeepsTheLastAndFindsTheLatest) {
  TempDir dir;
  const std::string runs = dir.file("runs/lm");  // created on first save
  EXPECT_EQ(io::latest_checkpoint(runs), std::nullopt);
  EXPECT_TRUE(io::list_checkpoints(runs).empty());
  EXPECT_EQ(io::checkpoint_path("runs", 1200), "runs/checkpoint-000000001200.safetensors");
  EXPECT_EQ(io::checkpoint_path("runs/", 7, "best"), "runs/best-000000000007.safetensors");
  TrainingCheckpoint c;
  c.model.insert("w", zeros({2}));
  for (int64_t step : std::initializer_list<int64_t>{5, 1, 30, 1000000000000, 12, 7}) {  // saved out of order, one past 12 digits
    c.step = step;
    const std::string p = io::save_checkpoint_rotating(c, runs, /*keep_last=*/3);
    EXPECT_EQ(load_checkpoint(p).step, step);
  }
  // Kept by step, not by file time or name length.
  const std::vector<std::string> kept = io::list_checkpoints(runs);
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(kept[0], io::checkpoint_path(runs, 7));  // the file just written is always kept
  EXPECT_EQ(kept[1], io::checkpoint_path(runs, 30));
  EXPECT_EQ(kept[2], io::checkpoint_path(runs, 1000000000000));
  EXPECT_EQ(io::latest_checkpoint(runs), io::checkpoint_path(runs, 1000000000000));

  // Foreign files, other prefixes and temporary files are not checkpoints.
  for (const char* n : {"checkpoint-abc.safetensors", "checkpoint-.safetensors", "best-000000000099.safetensors",
                        "checkpoint-000000000099.safetensors.tmp.1.0123456789abcdef", "notes.txt"})
    std::ofstream(runs + "/" + n) << "x";
  EXPECT_EQ(io::list_checkpoints(runs), kept);
  EXPECT_EQ(io::latest_checkpoint(runs, "best"), runs + "/best-000000000099.safetensors");
  // A stale temporary file of a dead writer goes with the next rotation.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const std::string stale = runs + "/checkpoint-000000000031.safetensors.tmp." + std::to_string(child) + ".00000000deadbeef";
  std::ofstream(stale) << "half a checkpoint";
  std::vector<std::string> removed = io::rotate_checkpoints(runs, 2);
  EXPECT_EQ(removed, (std::vector<std::string>{io::checkpoint_path(runs, 7), stale}));
  EXPECT_EQ(io::list_checkpoints(runs).size(), 2u);
  EXPECT_TRUE(file_exists(runs + "/notes.txt"));
  EXPECT_TRUE(throws_error([&] { io::rotate_checkpoints(runs, 0); }, {"keep_last"}));
  EXPECT_TRUE(throws_error([&] { io::checkpoint_path(runs, 1, "a/b"); }, {"prefix"}));
}

// ------------------------------------------------- crash during a write

// Kills a child that rewrites `path` in a loop at random moments; after each
// kill `check` must accept the destination. Returns how many kills caught the
// child with a temporary file open (mid-write).
template <typename Writer, typename Check>
int kill_writer_repeatedly(const std::string& dir, const std::string& path, int rounds, double max_delay_s,
                           Generator& g, Writer&& write_forever, Check&& check) {
  int mid_write = 0;
  for (int round = 0; round < rounds; ++round) {
    const pid_t child = ::fork();
    if (child == 0) {
      write_forever(round);
      ::_exit(0);
    }
    EXPECT_GT(child, 0);
    const auto delay = std::chrono::duration<double>(max_delay_s * g.next_double());
    std::this_thread::sleep_for(delay);
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status)) << "the writer must die by the signal, not finish";
    bool temp_left = false;
    for (const std::string& n : list_dir(dir)) temp_left |= n.find(".tmp.") != std::string::npos;
    mid_write += temp_left;
    if (!check(round)) return -1;
  }
  return mid_write;
}

TEST(Checkpoint, KilledWriterNeverLeavesACorruptFile) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  // Two big checkpoints (~8 MB) that differ everywhere; the child alternates them.
  TrainingCheckpoint versions[2];
  for (int v = 0; v < 2; ++v) {
    versions[v] = random_checkpoint(g);
    versions[v].model.insert("big", randn({2 * 1024 * 1024}, kFloat32, &g));
    versions[v].step = v;
  }
  const auto t0 = std::chrono::steady_clock::now();
  save_checkpoint(versions[0], path);  // the "old" complete file
  const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int seen[2] = {0, 0};
  const int rounds = 30;
  const int mid_write = kill_writer_repeatedly(
      dir.path(), path, rounds, 3 * write_s + 0.002, g,
      [&](int round) {
        for (int i = 1;; ++i) save_checkpoint(versions[(round + i) % 2], path);
      },
      [&](int round) {
        TrainingCheckpoint got;
        try {
          got = load_checkpoint(path);
        } catch (const Error& e) {
          ADD_FAILURE() << "round " << round << ": the destination is corrupt: " << e.what();
          return false;
        }
        const int64_t v = got.step;
        if (v != 0 && v != 1) return false;
        ++seen[v];
        EXPECT_TRUE(same_checkpoint(got, versions[v])) << "round " << round;
        return true;
      });
  ASSERT_GE(mid_write, 0);
  std::cout << "  " << rounds << " kills (one write takes " << write_s * 1e3 << " ms): " << mid_write
            << " mid-write; destination held version 0 " << seen[0] << "x, version 1 " << seen[1] << "x\n";
  EXPECT_GE(mid_write, rounds / 4) << "the kills should mostly land inside a write";
  // The killed writers' temporary files are stale; cleaning removes exactly them.
  io::remove_stale_temp_files(dir.path());
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"ckpt.safetensors"});
}

// A write that fails half-way (here: the file size limit, as a full disk
// would) is an error naming the file, and the old checkpoint stays intact.
TEST(Checkpoint, FailedWriteKeepsTheOldFile) {
  Generator g(fresh_seed());
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  const io::TrainingCheckpoint old = random_checkpoint(g);
  save_checkpoint(old, path);
  io::TrainingCheckpoint big = random_checkpoint(g);
  big.model.insert("big", randn({1 << 20}, kFloat32, &g));
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG
    const rlimit limit{1 << 20, 1 << 20};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      save_checkpoint(big, path);
    } catch (const Error& e) {
      const std::string msg = e.what();
      ::_exit(msg.find(path) != std::string::npos && msg.find("write failed") != std::string::npos ? 0 : 2);
    }
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the oversized write did not fail; 2: the error did not name the file";
  EXPECT_TRUE(same_checkpoint(load_checkpoint(path), old));
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"ckpt.safetensors"}) << "the temporary file is removed";
}

// The same harness against a writer that overwrites in place finds torn
// files: the test above can fail.
TEST(Checkpoint, HarnessCatchesANaiveInPlaceWriter) {
  Generator g(fresh_seed());
  TempDir dir;
  const std::string path = dir.file("naive.safetensors");
  TrainingCheckpoint c = random_checkpoint(g);
  c.model.insert("big", randn({2 * 1024 * 1024}, kFloat32, &g));
  save_checkpoint(c, path);
  const std::string bytes = io::read_file(path);
  int torn = 0;
  kill_writer_repeatedly(
      dir.path(), path, 10, 0.02, g,
      [&](int) {
        for (;;) {
          std::ofstream out(path, std::ios::binary | std::ios::trunc);
          for (size_t at = 0; at < bytes.size(); at += 4096)
            out.write(bytes.data() + at, static_cast<std::streamsize>(std::min<size_t>(4096, bytes.size() - at)));
        }
      },
      [&](int) {
        try {
          load_checkpoint(path);
        } catch (const Error&) {
          ++torn;
        }
        return true;
      });
  EXPECT_GE(torn, 1) << "an in-place writer killed 10 times never left a torn file?";
}

// ------------------------------------------------ resume, bit for bit

// A small language model trained on a fixed random corpus with everything
// that carries state across steps: Adam's moments, a StepLR schedule, LSTM
// dropout drawing from the default generator, and a shuffled data order.
constexpr int64_t kVocab = 16, kEmbed = 6, kHidden = 12, kSamples = 24, kSeqLen = 7, kBatch = 4;
constexpr int64_t kBatchesPerEpoch = kSamples / kBatch;
constexpr int kResumeSteps = 9;  // N: the save lands mid-epoch, and the N steps after it cross an epoch

class LanguageModelImpl : public nn::Module {
 public:
  LanguageModelImpl() : nn::Module("LanguageModel") {
    embedding = register_module("embedding", nn::Embedding(kVocab, kEmbed));
    lstm = register_module("lstm", nn::LSTM(nn::LSTMOptions(kEmbed, kHidden).num_layers(2).dropout(0.3).batch_first(true)));
    fc = register_module("fc", nn::Linear(kHidden, kVocab));
  }
  Tensor forward(const Tensor& tokens) { return fc->forward(lstm->forward(embedding->forward(tokens)).output); }
  nn::Embedding embedding;
  nn::LSTM lstm;
  nn::Linear fc;
};

class Trainer {
 public:
  // init_seed draws the initial weights; the corpus and the shuffling seed are fixed.
  explicit Trainer(uint64_t init_seed) {
    manual_seed(init_seed);
    model_ = std::make_shared<LanguageModelImpl>();
    model_->train();
    optimizer_ = std::make_unique<optim::Adam>(model_->parameters(), optim::AdamOptions(0.02));
    scheduler_ = std::make_unique<optim::StepLR>(*optimizer_, /*step_size=*/1, /*gamma=*/0.7);
    Generator corpus(2024);
    std::vector<int64_t> ids(static_cast<size_t>(kSamples * kSeqLen));
    for (auto& id : ids) id = static_cast<int64_t>(corpus.next_below(kVocab));
    data_ = from_vector(ids, {kSamples, kSeqLen});
    shuffle_.manual_seed(kShuffleSeed);
    permutation_ = randperm(kSamples, &shuffle_);
  }

  // One optimizer step; returns the loss.
  float step() {
    const Tensor rows = permutation_.narrow(0, batch_index_ * kBatch, kBatch);
    const Tensor batch = index_select(data_, 0, rows);  // [kBatch, kSeqLen]
    const Tensor inputs = batch.narrow(1, 0, kSeqLen - 1), targets = batch.narrow(1, 1, kSeqLen - 1);
    const Tensor logits = model_->forward(inputs);  // [kBatch, kSeqLen - 1, kVocab]
    Tensor loss = nn::functional::cross_entropy(logits.reshape({-1, kVocab}), targets.reshape({-1}));
    optimizer_->zero_grad();
    loss.backward();
    optimizer_->step();
    ++steps_;
    if (++batch_index_ == kBatchesPerEpoch) {
      batch_index_ = 0;
      ++epoch_;
      scheduler_->step();
      permutation_ = randperm(kSamples, &shuffle_);
    }
    return loss.item<float>();
  }

  io::TrainingCheckpoint checkpoint() const {
    io::TrainingCheckpoint c;
    c.model = model_->state_dict();
    c.optimizer = optimizer_->state_dict();
    c.scheduler = scheduler_->state_dict();
    c.epoch = epoch_;
    c.step = steps_;
    c.rng = default_generator().state();
    c.data.batch_index = batch_index_;
    c.data.shuffle_seed = kShuffleSeed;
    c.data.shuffle_rng = shuffle_.state();
    c.data.permutation = permutation_;
    c.metadata["config"] = R"({"model": "LanguageModel", "vocab": 16, "embed": 6, "hidden": 12, "layers": 2})";
    return c;
  }

  void restore(const io::TrainingCheckpoint& c, const std::string& source) {
    io::check_state_dict(model_->state_dict(), c.model, source);
    model_->load_state_dict(c.model);
    optimizer_->load_state_dict(c.optimizer);
    scheduler_->load_state_dict(c.scheduler);
    epoch_ = c.epoch;
    steps_ = c.step;
    default_generator().set_state(c.rng);
    batch_index_ = c.data.batch_index;
    shuffle_.set_state(c.data.shuffle_rng);
    permutation_ = c.data.permutation;
  }

 private:
  static constexpr uint64_t kShuffleSeed = 77;
  std::shared_ptr<LanguageModelImpl> model_;
  std::unique_ptr<optim::Adam> optimizer_;
  std::unique_ptr<optim::StepLR> scheduler_;
  Tensor data_;         // [kSamples, kSeqLen] int64 tokens
  Generator shuffle_;
  Tensor permutation_;  // this epoch's order of the samples
  int64_t epoch_ = 0, batch_index_ = 0, steps_ = 0;
};

std::vector<float> losses_of(const Tensor& t) { return t.to_vector<float>(); }

// When ResumeInANewProcessIsBitForBit re-executes this binary with
// RNNKIT_RESUME_FROM set, the new process is the resumed trainer: it loads the
// checkpoint, trains kResumeSteps more, saves the losses and exits before any
// test runs (this initialiser runs ahead of main).
const bool kIsResumedProcess = [] {
  const char* from = std::getenv("RNNKIT_RESUME_FROM");
  const char* to = std::getenv("RNNKIT_RESUME_LOSSES");
  if (!from || !to) return false;
  try {
    Trainer trainer(/*init_seed=*/4321);  // different initial weights: the checkpoint must replace them
    trainer.restore(load_checkpoint(from), from);
    std::vector<float> losses;
    for (int i = 0; i < kResumeSteps; ++i) losses.push_back(trainer.step());
    StateDict out;
    out.insert("losses", from_vector(losses));
    rnnkit::save(out, to);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resumed process failed: %s\n", e.what());
    std::_Exit(1);
  }
  std::_Exit(0);
}();

TEST(CheckpointResume, ResumeInANewProcessIsBitForBit) {
  TempDir dir;
  std::vector<float> straight;
  {
    Trainer trainer(/*init_seed=*/1234);
    for (int i = 0; i < 2 * kResumeSteps; ++i) straight.push_back(trainer.step());
  }
  std::vector<float> first_half;
  const std::string path = dir.file("resume.safetensors");
  {
    Trainer trainer(/*init_seed=*/1234);
    for (int i = 0; i < kResumeSteps; ++i) first_half.push_back(trainer.step());
    save_checkpoint(trainer.checkpoint(), path);
  }
  ASSERT_EQ(std::memcmp(first_half.data(), straight.data(), sizeof(float) * kResumeSteps), 0);

  // A new process: this test binary again, running only the child test.
  const std::string losses_path = dir.file("losses.safetensors");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("RNNKIT_RESUME_FROM", path.c_str(), 1);
    ::setenv("RNNKIT_RESUME_LOSSES", losses_path.c_str(), 1);
    const char* argv[] = {"test_checkpoint", nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the resumed process failed (status " << status << ")";
  const std::vector<float> resumed = losses_of(rnnkit::load(losses_path).at("losses"));
  ASSERT_EQ(resumed.size(), static_cast<size_t>(kResumeSteps));
  for (int i = 0; i < kResumeSteps; ++i)
    EXPECT_EQ(std::memcmp(&resumed[i], &straight[kResumeSteps + i], sizeof(float)), 0)
        << "step " << kResumeSteps + i << ": resumed loss " << resumed[i] << " vs uninterrupted "
        << straight[kResumeSteps + i];
  std::cout << "  losses, uninterrupted vs resumed in a new process after step " << kResumeSteps << ":\n   ";
  for (int i = 0; i < kResumeSteps; ++i) std::cout << " " << straight[kResumeSteps + i] << "/" << resumed[i];
  std::cout << "\n";
}

}  // namespace
