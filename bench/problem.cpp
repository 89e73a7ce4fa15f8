#include "problem.h"

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <string>

#include "rnnkit/error.h"

namespace rnnkit::bench {

namespace k = rnnkit::kernels::cpu;

k::CellType cell_type(const std::string& cell) {
  if (cell == "lstm") return k::CellType::LSTM;
  if (cell == "gru") return k::CellType::GRU;
  if (cell == "rnn_tanh") return k::CellType::RNN_TANH;
  if (cell == "rnn_relu") return k::CellType::RNN_RELU;
  RNNKIT_CHECK(false, "bench: unknown cell '", cell, "' (expected lstm, gru, rnn_tanh or rnn_relu)");
  return k::CellType::LSTM;
}

namespace {

int64_t proc_status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.compare(0, prefix.size(), prefix) == 0) return std::stoll(line.substr(prefix.size()));
  return -1;
}

Floats uniform(size_t n, float bound, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-bound, bound);
  Floats v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

}  // namespace

int64_t peak_rss_growth(const std::function<void()>& fn) {
  const int64_t before = proc_status_kib("VmRSS");
  {
    std::ofstream clear("/proc/self/clear_refs");
    if (!clear) return -1;
    clear << "5";  // VmHWM := VmRSS
    clear.flush();
    if (!clear) return -1;
  }
  fn();
  const int64_t peak = proc_status_kib("VmHWM");
  if (before < 0 || peak < 0) return -1;
  return (peak - before) * 1024;
}

void use_mmap_for_large_allocations() {
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  mallopt(M_TRIM_THRESHOLD, 0);
}

void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

Problem::Problem(const SuiteRow& r, uint64_t seed) : row(r) {
  const k::CellType cell = cell_type(r.cell);
  G = k::gate_count(cell);
  const size_t H = static_cast<size_t>(r.hidden), I = H, GH = static_cast<size_t>(G) * H;
  const size_t n = static_cast<size_t>(r.steps * r.batch);
  std::mt19937_64 rng(seed);
  // PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)); inputs of unit scale.
  const float bound = 1.0f / std::sqrt(static_cast<float>(H));
  w_ih = uniform(GH * I, bound, rng);
  w_hh = uniform(GH * H, bound, rng);
  b_ih = uniform(GH, bound, rng);
  b_hh = uniform(GH, bound, rng);
  x = uniform(n * I, 1.0f, rng);
  dy = uniform(n * H, 1.0f, rng);
  batch_sizes.assign(static_cast<size_t>(r.steps), r.batch);
}

namespace {

k::RnnLayerDims dims_of(const Problem& p) {
  k::RnnLayerDims d;
  d.cell = cell_type(p.row.cell);
  d.input_size = p.row.hidden;
  d.hidden_size = p.row.hidden;
  d.batch = p.row.batch;
  d.steps = p.row.steps;
  d.batch_sizes = p.batch_sizes.data();
  return d;
}

k::RnnWeights<float> weights_of(const Problem& p) {
  k::RnnWeights<float> w;
  w.w_ih = p.w_ih.data();
  w.w_hh = p.w_hh.data();
  w.b_ih = p.b_ih.data();
  w.b_hh = p.b_hh.data();
  return w;
}

}  // namespace

namespace {

// A training step as a module should run it: the forward-only scratch apart (it
// lives only while the forward runs), and a backward that is the forward's last
// use (PyTorch's retain_graph = false) and so may overwrite its workspace.
k::RnnLayerDims training_dims(const Problem& p) {
  k::RnnLayerDims d = dims_of(p);
  d.separate_scratch = true;
  d.overwrite_forward_workspace = true;
  return d;
}

}  // namespace

RnnkitRnn::RnnkitRnn(const Problem& p, bool allocate_training)
    : p_(p), dims_(dims_of(p)), dims_train_(training_dims(p)), w_(weights_of(p)) {
  const size_t rows = static_cast<size_t>(p.rows()), H = static_cast<size_t>(p.row.hidden);
  const size_t N = static_cast<size_t>(p.row.batch);
  y_.assign(rows * H, 0.f);
  h_n_.assign(N * H, 0.f);
  c_n_.assign(N * H, 0.f);
  packs_ = k::rnn_packed_weights_size(dims_) > 0;
  packs_bf16_ = k::rnn_packed_weights_size(dims_, k::PackedPrecision::kBFloat16) > 0;
  packs_bf16_products_ = k::rnn_packed_weights_size(dims_, k::PackedPrecision::kBFloat16Products) > 0;
  if (!allocate_training) return;
  ws_training_.assign(k::rnn_forward_workspace_size(dims_train_, true), 0.f);
  scratch_.assign(k::rnn_forward_scratch_size(dims_train_), 0.f);
  allocate_backward();
}

void RnnkitRnn::allocate_backward() {
  dx_.assign(y_.size(), 0.f);
  ws_backward_.assign(k::rnn_backward_workspace_size(dims_train_), 0.f);
  dw_ih_.assign(p_.w_ih.size(), 0.f);
  dw_hh_.assign(p_.w_hh.size(), 0.f);
  db_ih_.assign(p_.b_ih.size(), 0.f);
  db_hh_.assign(p_.b_hh.size(), 0.f);
}

void RnnkitRnn::forward_inference(bool prepacked) {
  const int64_t H = p_.row.hidden;
  if (ws_inference_.empty()) ws_inference_.assign(k::rnn_forward_workspace_size(dims_, false), 0.f);
  k::RnnWeights<float> w = w_;
  if (prepacked && packs_) {
    if (packed_.empty()) {
      packed_.assign(k::rnn_packed_weights_size(dims_), 0.f);
      k::rnn_pack_weights(dims_, p_.w_hh.data(), packed_.data());
    }
    w.w_hh_packed = packed_.data();
    w.w_ih_packed = packed_input();
  }
  k::rnn_forward<float>(dims_, w, p_.x.data(), H, nullptr, nullptr, y_.data(), H, h_n_.data(),
                        dims_.cell == k::CellType::LSTM ? c_n_.data() : nullptr,
                        ws_inference_.data(), false);
}

const float* RnnkitRnn::packed_input() {
  const size_t n = k::rnn_packed_input_weights_size(dims_);
  if (n == 0) return nullptr;
  if (packed_input_.size() != n) {
    packed_input_.assign(n, 0.f);
    k::rnn_pack_input_weights(dims_, p_.w_ih.data(), packed_input_.data());
  }
  return packed_input_.data();
}

void RnnkitRnn::forward_inference_bf16(k::PackedPrecision precision) {
  const int64_t H = p_.row.hidden;
  if (ws_inference_.empty()) ws_inference_.assign(k::rnn_forward_workspace_size(dims_, false), 0.f);
  Floats& packed = precision == k::PackedPrecision::kBFloat16Products ? packed_bf16_products_ : packed_bf16_;
  if (packed.empty()) {
    packed.assign(k::rnn_packed_weights_size(dims_, precision), 0.f);
    k::rnn_pack_weights(dims_, p_.w_hh.data(), packed.data(), precision);
  }
  k::RnnWeights<float> w = w_;
  w.w_hh_packed = packed.data();
  if (precision == k::PackedPrecision::kBFloat16Products) {
    if (packed_input_bf16_products_.empty()) {
      packed_input_bf16_products_.assign(k::rnn_packed_input_weights_size(dims_, precision), 0.f);
      k::rnn_pack_input_weights(dims_, p_.w_ih.data(), packed_input_bf16_products_.data(), precision);
    }
    w.w_ih_packed = packed_input_bf16_products_.data();
  } else {
    w.w_ih_packed = packed_input();
  }
  k::rnn_forward<float>(dims_, w, p_.x.data(), H, nullptr, nullptr, y_.data(), H, h_n_.data(),
                        dims_.cell == k::CellType::LSTM ? c_n_.data() : nullptr,
                        ws_inference_.data(), false);
}

void RnnkitRnn::train_forward() {
  const int64_t H = p_.row.hidden;
  const bool lstm = dims_.cell == k::CellType::LSTM;
  k::rnn_forward<float>(dims_train_, w_, p_.x.data(), H, nullptr, nullptr, y_.data(), H,
                        h_n_.data(), lstm ? c_n_.data() : nullptr, ws_training_.data(), true,
                        scratch_.data());
}

void RnnkitRnn::train_step() {
  train_forward();
  train_backward();
}

void RnnkitRnn::train_backward() {
  const int64_t H = p_.row.hidden;
  k::RnnGrads<float> dw;
  dw.dw_ih = dw_ih_.data();
  dw.dw_hh = dw_hh_.data();
  dw.db_ih = db_ih_.data();
  dw.db_hh = db_hh_.data();
  k::rnn_backward<float>(dims_train_, w_, p_.x.data(), H, nullptr, nullptr, y_.data(), H,
                         ws_training_.data(), p_.dy.data(), H, nullptr, nullptr, dx_.data(), H,
                         0.f, nullptr, nullptr, dw, ws_backward_.data());
}

int64_t RnnkitRnn::training_buffer_bytes(const Problem& p) {
  const k::RnnLayerDims d = training_dims(p);
  const int64_t rows = p.rows(), H = p.row.hidden, N = p.row.batch;
  // The scratch is gone before the backward's buffers exist: the larger phase.
  int64_t floats = static_cast<int64_t>(
      k::rnn_forward_workspace_size(d, true) +
      std::max(k::rnn_forward_scratch_size(d), k::rnn_backward_workspace_size(d)));
  floats += 2 * rows * H;  // y, dx
  floats += 2 * N * H;     // h_n, c_n
  floats += static_cast<int64_t>(p.w_ih.size() + p.w_hh.size() + p.b_ih.size() + p.b_hh.size());
  return floats * static_cast<int64_t>(sizeof(float));
}

int64_t RnnkitRnn::peak_training_bytes(const Problem& p) {
  // The buffers a module's training step allocates, zero-filled as new
  // gradients are; everything else (weights, x, dy) exists before.
  // Each buffer exists while a module's training step would hold it: the
  // scratch during the forward only, the gradients from the backward on.
  return peak_rss_growth([&] {
    RnnkitRnn r(p, false);
    r.ws_training_.assign(k::rnn_forward_workspace_size(r.dims_train_, true), 0.f);
    r.scratch_.assign(k::rnn_forward_scratch_size(r.dims_train_), 0.f);
    r.train_forward();
    Floats().swap(r.scratch_);
    r.allocate_backward();
    r.train_backward();
  });
}

}  // namespace rnnkit::bench
