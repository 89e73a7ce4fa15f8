#pragma once
// The fused recurrent op behind nn::RNN, nn::LSTM, nn::GRU and the cells: all
// layers, directions and steps of one call in ONE autograd node, whose backward
// runs the backward-through-time kernels layer by layer from the top. Internal;
// the modules check the user's shapes first and describe the memory here.
//
// Memory: the kernels see every batch as packed time-major rows (rows =
// sum(batch_sizes); a padded batch has batch_sizes all N). Layer l writes its
// output [rows, D*H_out], both directions into column halves of one buffer, and
// that buffer (after dropout) is layer l+1's input.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cpu/rnn.h"
#include "rnnkit/generator.h"
#include "rnnkit/tensor.h"

namespace rnnkit::nn::detail {

// W_hh of each layer and direction packed for the kernels (and W_ih where the
// forward takes it packed), kept by a module
// between inference calls (no graph recorded) and one-step training calls (a
// decoder cell in a loop) so that a call does not repack weights that have not
// changed. An entry is reused only while it was packed from the very storage
// and offset the call's weight has, at the storage's
// current version (rnnkit::Storage: every writable pointer taken, as every
// in-place change, optimizer step and load takes one, advances it), and in the
// layout the call's kernel path takes (kernels::cpu::rnn_packed_weights_fit).
// Anything else packs afresh. Each layer and direction has kSlots entries, so
// that calls alternating between batch sizes whose paths want different
// layouts (batch 1 and a training-size batch, say), or between the precisions
// (float32, bfloat16 weights, bfloat16 products), keep one of each; a new
// packing replaces an empty entry, else a stale one, else the least recently
// used. Thread-safe: concurrent calls of one module share it; an entry in use
// stays alive through its handle. It costs the packed copies' memory (about
// W_hh's size per layer, direction and layout in use, and W_ih's where packed)
// while the module lives.
class PackedWeightsCache {
 public:
  // Which weight an entry holds: W_hh (rnn_pack_weights), W_ih
  // (rnn_pack_input_weights) or W_hr (rnn_pack_projection_weights), the last
  // two where the forward takes them.
  enum Kind { kRecurrent, kInput, kProjection };
  // The weight (float32, contiguous; W_hh, W_ih or W_hr as kind says) of entry
  // `index` packed for an rnn_forward on dims from the calling context's
  // threads; undefined when the call's path takes no packed form of it
  // (kernels::cpu::rnn_forward_takes_packed, rnn_packed_input_weights_size,
  // rnn_packed_projection_weights_size) or it cannot be packed; the forward then
  // packs W_hh (and W_hr) for itself, and makes the input projection from W_ih
  // as it is. precision (W_hh and W_ih): packed in that bfloat16 precision
  // where the call's path has that form (rnn_packed_weights_size,
  // rnn_packed_input_weights_size), else as in float32 (the caller passes the
  // weights already rounded to bfloat16: rounded_bf16, so that both forms hold
  // the same values).
  Tensor get(size_t index, const Tensor& weight, const kernels::cpu::RnnLayerDims& dims, Kind kind = kRecurrent,
             kernels::cpu::PackedPrecision precision = kernels::cpu::PackedPrecision::kFloat32);
  // W_hh of entry `index` (W_ih with input) (float32 or float64, contiguous)
  // with every value rounded to bfloat16 (kernels::cpu::round_to_bfloat16; a
  // float64 value through float32 first, as PyTorch rounds), kept as the packed
  // forms are.
  Tensor rounded_bf16(size_t index, const Tensor& weight, bool input = false);
  // Times get() packed and rounded_bf16() rounded (tests).
  int64_t packs() const { return packs_.load(); }
  // Times get() packed W_hh in bfloat16 (tests).
  int64_t bf16_packs() const { return bf16_packs_.load(); }

 private:
  static constexpr size_t kSlots = 3;
  static constexpr size_t kKinds = 5;  // kRecurrent, kInput, kProjection, the rounded W_hh and W_ih
  struct Entry {
    std::weak_ptr<Storage> storage;
    int64_t offset = 0;
    uint64_t version = 0;
    uint64_t last_use = 0;  // use_clock_ at its last hit or packing
    int precision = 0;      // kernels::cpu::PackedPrecision of the packing
    Tensor packed;
  };
  // The entry of slot group `group` made from weight in this precision, if
  // current and fits(its tensor); else fill(tensor) writes a fresh one of n
  // elements of dtype (false: no entry, returns undefined).
  template <class Fits, class Fill>
  Tensor lookup(size_t group, const Tensor& weight, int precision, size_t n, Dtype dtype, Fits&& fits, Fill&& fill);
  std::mutex mutex_;
  std::vector<Entry> entries_;  // kSlots per group, kKinds groups per index
  uint64_t use_clock_ = 0;
  std::atomic<int64_t> packs_{0};
  std::atomic<int64_t> bf16_packs_{0};
};

// Layer directions whose backward added their weight gradients into the sums
// the engine offered (Node::accumulate_into) since the program started (tests).
int64_t recurrent_sums_taken();

struct RecurrentSpec {
  kernels::cpu::CellType cell = kernels::cpu::CellType::LSTM;
  int64_t input_size = 0;   // I of layer 0
  int64_t hidden_size = 0;  // H
  int64_t proj_size = 0;    // P (LSTM), 0 = none
  int64_t num_layers = 1;
  bool bidirectional = false;
  bool has_bias = true;
  double dropout = 0.0;         // between layers, when dropout_active
  bool dropout_active = false;  // training mode, dropout > 0 and num_layers > 1
  Generator* generator = nullptr;
  const char* node_name = "RecurrentBackward";  // the autograd node's name
  PackedWeightsCache* packed_cache = nullptr;     // the module's, or null: pack at every call
                                                  // (training calls over several steps do)
  // Whether packed_cache keeps W_ih packed too, where the forward takes it: a
  // module in eval mode. Its input projection then sums in another order than
  // the train-mode forward's (results differ in the last bits), so train-mode
  // calls, with or without a graph, keep agreeing bit for bit.
  bool pack_input_weights = false;
  // Inference calls (no graph recorded) take W_hh rounded to bfloat16
  // (nn::RNNImplBase::set_bf16_inference): packed in bfloat16 where the
  // kernels' path has that form, elsewhere the rounded values in the call's
  // dtype. Training calls ignore it.
  bool bf16_inference = false;
  // Inference calls take the bfloat16 products (nn::RNNImplBase::set_bf16_products):
  // W_ih and W_hh rounded (and packed so where the path has that form), x and
  // h rounded by the kernels (RnnWeights::bf16_products). Training calls
  // ignore it.
  bool bf16_products = false;
};

// How the tensors given to recurrent_forward lay out in memory.
struct RecurrentLayout {
  std::vector<int64_t> batch_sizes;  // [T], non-increasing, batch_sizes[0] = N
  // input and output memory is [N, T, *] (padded batches only); otherwise it
  // is the packed rows [rows, *] (a padded time-major batch [T, N, *] included).
  bool batch_first = false;
  // Packed batches: h0 row j of the kernels is the user's row sorted_indices[j];
  // h_n's user row i is the kernels' row unsorted_indices[i]. Undefined = identity.
  Tensor sorted_indices;
  Tensor unsorted_indices;
  Shape output_shape;  // numel rows * D*H_out
  Shape hidden_shape;  // h0 and h_n, numel L*D*N*H_out
  Shape cell_shape;    // c0 and c_n (LSTM), numel L*D*N*H
  bool return_h_n = true;  // false for the cells, whose output is h'
};

struct RecurrentResult {
  Tensor output;
  Tensor h_n;  // undefined unless return_h_n
  Tensor c_n;  // LSTM only
};

// Runs the layers. input has numel rows * I in the layout above; h0/c0 are
// undefined (zeros) or have hidden_shape/cell_shape; weights are in PyTorch's
// _flat_weights order with their PyTorch shapes, all of input's dtype.
RecurrentResult recurrent_forward(const RecurrentSpec& spec, const RecurrentLayout& layout, const Tensor& input,
                                  const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights);

// How the layers and directions of a call share the threads (rnnkit::get_num_threads()):
//  - bidirectional layers run their two directions at once, one thread each,
//    when W_hh of a direction is at most 1 MiB (one core's cache holds it, and
//    no cross-core synchronisation per step is needed): at small batch (N <= 8)
//    whatever the thread count, at larger batches when there are exactly two
//    threads;
//  - stacked unidirectional float layers in inference (no graph, no dropout) at
//    small batch (N <= 8, no projection) with small recurrent weights (W_hh of at
//    most 512 KiB, which one core streams per step about as fast as two cores
//    stream halves) and long sequences (T >= 32) run in time chunks as a
//    wavefront: layer l works on chunk k while layer l+1 works on chunk k-1, each
//    chunk one single-threaded kernel call. Such calls are chunked whatever the
//    thread count, so results do not depend on it.
// Otherwise layers and directions run one after another, each kernel call on
// all threads.
enum class LayerSchedule {
  kAuto,        // the rules above (the default)
  kSequential,  // every layer and direction one after another, unchunked (tests, benchmarks)
};
// Internal switch for tests and benchmarks; not thread-safe.
void set_layer_schedule(LayerSchedule schedule);
LayerSchedule layer_schedule();

}  // namespace rnnkit::nn::detail
