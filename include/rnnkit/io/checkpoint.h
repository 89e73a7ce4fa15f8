#pragma once
// Training checkpoints: everything a run needs to continue exactly as if it
// had never stopped, in ONE safetensors file (docs/CHECKPOINTS.md):
//
//   tensors   "model.<key>", "optimizer.<key>", "scheduler.<key>",
//             "extra.<key>", and "data.permutation" when set
//   metadata  "rnnkit.format" = "rnnkit.checkpoint.v1", "rnnkit.epoch",
//             "rnnkit.step", "rnnkit.rng", "rnnkit.data.*" (integers in
//             decimal, generator states as hex words), "rnnkit.crc32" (the
//             content checksum), and the caller's own string metadata under
//             any key that does not start with "rnnkit.".
//
// The file is an ordinary safetensors file (PyTorch users read it with the
// reference implementation), written atomically, and loading requires and
// verifies the checksum, so a damaged checkpoint is an error and never a
// silently different run.
//
//   io::TrainingCheckpoint ckpt;
//   ckpt.model = model->state_dict();
//   ckpt.optimizer = optimizer.state_dict();
//   ckpt.epoch = epoch; ckpt.step = step;
//   ckpt.rng = rnnkit::default_generator().state();
//   ckpt.metadata["config"] = config_json;
//   io::save_checkpoint_rotating(ckpt, "runs/lm", /*keep_last=*/3);
//   ...
//   if (auto path = io::latest_checkpoint("runs/lm")) {
//     io::TrainingCheckpoint c = io::load_checkpoint(*path);
//     io::check_state_dict(model->state_dict(), c.model, *path);
//     model->load_state_dict(c.model); ...
//     rnnkit::default_generator().set_state(c.rng);
//   }
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rnnkit/generator.h"
#include "rnnkit/io/safetensors.h"
#include "rnnkit/state_dict.h"

namespace rnnkit::io {

// Where the data pipeline stands, so a resumed epoch sees the same batches.
struct DataPosition {
  /// Batches of the current epoch already consumed.
  int64_t batch_index = 0;
  /// Seed the current epoch's order was drawn from.
  uint64_t shuffle_seed = 0;
  /// The shuffling generator, to draw the following epochs' orders.
  Generator::State shuffle_rng{};
  /// Optional int64 [N]: the current epoch's sample order (undefined = none).
  Tensor permutation;
};

struct TrainingCheckpoint {
  StateDict model;      // module state_dict
  StateDict optimizer;  // optimizer state_dict ("state.<i>.<name>", "param_groups.<g>.<opt>")
  StateDict scheduler;  // LR scheduler state_dict
  StateDict extra;      // anything else (EMA weights, a best score as a 0-d tensor, ...)
  /// Epoch being trained (or completed: the caller's convention, kept as is).
  int64_t epoch = 0;
  /// Optimizer steps taken.
  int64_t step = 0;
  /// The default generator (dropout, initialisation): default_generator().state().
  Generator::State rng{};
  DataPosition data;
  /// Free-form strings, e.g. "config" -> the model's configuration JSON.
  /// Keys must not start with "rnnkit." (reserved for the fields above).
  Metadata metadata;
};

inline constexpr const char* kCheckpointFormat = "rnnkit.checkpoint.v1";

// Atomic: `path` holds the previous complete file or the new complete file at
// every moment, whatever happens to the process. The folder must exist.
void save_checkpoint(const TrainingCheckpoint& checkpoint, const std::string& path);
// Validates the whole file (structure, checksum, every field) and throws an
// rnnkit::Error naming the file and the key on any problem.
TrainingCheckpoint load_checkpoint(const std::string& path);

// ---- a folder of checkpoints: "<dir>/<prefix>-<step, 12 digits>.safetensors" ----

inline constexpr const char* kDefaultCheckpointPrefix = "checkpoint";

std::string checkpoint_path(const std::string& dir, int64_t step,
                            const std::string& prefix = kDefaultCheckpointPrefix);
// The checkpoints in `dir` (names as checkpoint_path makes them; temporary
// files and anything else are ignored), oldest step first. A missing folder
// holds none.
std::vector<std::string> list_checkpoints(const std::string& dir,
                                          const std::string& prefix = kDefaultCheckpointPrefix);
// The highest-step checkpoint in `dir`, for resuming; nullopt when none.
std::optional<std::string> latest_checkpoint(const std::string& dir,
                                             const std::string& prefix = kDefaultCheckpointPrefix);
// Deletes all but the `keep_last` highest-step checkpoints and the stale
// temporary files of dead writers. Returns the paths removed.
std::vector<std::string> rotate_checkpoints(const std::string& dir, int64_t keep_last,
                                            const std::string& prefix = kDefaultCheckpointPrefix);
// Creates `dir` if needed, saves to checkpoint_path(dir, checkpoint.step),
// then rotates: the new file (complete before any old one is removed) and the
// keep_last - 1 highest-step others stay. Returns the path written.
std::string save_checkpoint_rotating(const TrainingCheckpoint& checkpoint, const std::string& dir,
                                     int64_t keep_last, const std::string& prefix = kDefaultCheckpointPrefix);

}  // namespace rnnkit::io

namespace rnnkit {
using io::load_checkpoint;
using io::save_checkpoint;
using io::TrainingCheckpoint;
}  // namespace rnnkit
