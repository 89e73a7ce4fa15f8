// Forward and fused backward of a whole recurrent call (see rnn_function.h).
// Buffers, all allocated once per call as tensors (rows = sum(batch_sizes),
// D = directions, DH = D * H_out, L = num_layers), rightmost index fastest:
//   x        [rows, I]        layer 0's input, time-major packed
//   ys       [L, rows, DH]    every layer's output (training); inference keeps two
//   dropped  [L-1, rows, DH]  layers 1..L-1's inputs after dropout (training with dropout)
//   masks    [L-1, rows, DH]  the dropout masks, 0 or 1/(1-p) (training with dropout)
//   workspace                 the kernels' forward workspaces, one per layer and
//                             direction in training, one shared in inference
#include "nn/rnn_function.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "autograd/function.h"
#include "kernels/cpu/bfloat16.h"
#include "rnnkit/autograd/node.h"
#include "rnnkit/threading.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit::nn::detail {

namespace {

namespace k = kernels::cpu;

// The precision an inference call asks the packed-weights cache for.
k::PackedPrecision recurrent_precision(const RecurrentSpec& spec) {
  return spec.bf16_products    ? k::PackedPrecision::kBFloat16Products
         : spec.bf16_inference ? k::PackedPrecision::kBFloat16
                               : k::PackedPrecision::kFloat32;
}

// Workspace slices start on 64-byte boundaries, as the kernels prefer.
size_t align_elements(size_t n) { return (n + 15) / 16 * 16; }

// Everything the backward needs, and the geometry of the call.
struct Saved {
  RecurrentSpec spec;
  RecurrentLayout layout;
  Dtype dtype = kFloat32;
  int64_t T = 0, N = 0, rows = 0, D = 1, L = 1, Hout = 0, DH = 0, per_direction = 0;
  Shape input_shape;
  bool has_h0 = false, has_c0 = false;
  bool training = false;  // the forward kept its workspaces for a backward

  Tensor x;                     // [rows, I]
  Tensor h0, c0;                // kernel batch order [L*D, N, Hout] / [L*D, N, H], or undefined
  std::vector<Tensor> weights;  // contiguous, detached
  Tensor ys, dropped, masks, workspace;
  std::vector<size_t> workspace_offset;  // [L*D]

  k::RnnLayerDims dims(int64_t layer, int64_t direction) const {
    k::RnnLayerDims d;
    d.cell = spec.cell;
    d.input_size = layer == 0 ? spec.input_size : DH;
    d.hidden_size = spec.hidden_size;
    d.proj_size = spec.proj_size;
    d.batch = N;
    d.steps = T;
    d.batch_sizes = layout.batch_sizes.data();
    d.reverse = direction == 1;
    d.has_bias = spec.has_bias;
    // A training forward's packed W_hh lives in a scratch freed when the forward
    // ends (or comes from the module's cache: one-step calls).
    d.separate_scratch = training;
    return d;
  }

  template <class T>
  k::RnnWeights<T> layer_weights(int64_t layer, int64_t direction) const {
    const Tensor* w = &weights[static_cast<size_t>((layer * D + direction) * per_direction)];
    k::RnnWeights<T> r;
    // Read-only pointers: they leave the weights' storage versions alone, which
    // the packed-weights cache keys on.
    r.w_ih = w[0].const_data_ptr<T>();
    r.w_hh = w[1].const_data_ptr<T>();
    int next = 2;
    if (spec.has_bias) {
      r.b_ih = w[2].const_data_ptr<T>();
      r.b_hh = w[3].const_data_ptr<T>();
      next = 4;
    }
    if (spec.proj_size > 0) r.w_hr = w[next].const_data_ptr<T>();
    r.bf16_products = spec.bf16_products;
    return r;
  }
  const Tensor& w_ih(int64_t layer, int64_t direction) const {
    return weights[static_cast<size_t>((layer * D + direction) * per_direction)];
  }
  const Tensor& w_hr(int64_t layer, int64_t direction) const {  // spec.proj_size > 0
    return weights[static_cast<size_t>((layer * D + direction) * per_direction + (spec.has_bias ? 4 : 2))];
  }
  const Tensor& w_hh(int64_t layer, int64_t direction) const {
    return weights[static_cast<size_t>((layer * D + direction) * per_direction + 1)];
  }

  // Layer l's input rows (after dropout) and its row stride.
  template <class T>
  const T* layer_input(int64_t layer) const {
    if (layer == 0) return x.data_ptr<T>();
    const Tensor& src = spec.dropout_active ? dropped : ys;
    return src.data_ptr<T>() + (layer - 1) * rows * DH;
  }
  int64_t layer_input_stride(int64_t layer) const { return layer == 0 ? spec.input_size : DH; }
};

// dst[k][j] = src[k][perm[j]]: K blocks of N rows of width W.
template <class T>
void gather_batch(const T* src, T* dst, int64_t K, int64_t N, int64_t W, const int64_t* perm) {
  for (int64_t kk = 0; kk < K; ++kk)
    for (int64_t j = 0; j < N; ++j)
      std::memcpy(dst + (kk * N + j) * W, src + (kk * N + perm[j]) * W, static_cast<size_t>(W) * sizeof(T));
}

// dst[k][perm[j]] = src[k][j].
template <class T>
void scatter_batch(const T* src, T* dst, int64_t K, int64_t N, int64_t W, const int64_t* perm) {
  for (int64_t kk = 0; kk < K; ++kk)
    for (int64_t j = 0; j < N; ++j)
      std::memcpy(dst + (kk * N + perm[j]) * W, src + (kk * N + j) * W, static_cast<size_t>(W) * sizeof(T));
}

// A state tensor in the user's batch order -> the kernels' order (a copy when permuted).
template <class T>
Tensor to_kernel_order(const Tensor& state, const Tensor& sorted_indices, int64_t K, int64_t N, int64_t W) {
  Tensor src = native::contiguous(state.detach());
  if (!sorted_indices.defined()) return src;
  Tensor dst = empty({K, N, W}, TensorOptions(src.dtype()));
  gather_batch(src.data_ptr<T>(), dst.data_ptr<T>(), K, N, W, sorted_indices.data_ptr<int64_t>());
  return dst;
}

// [rows, W] time-major rows <-> the user's [N, T, W] for batch_first padded
// batches. t may have any strides (an incoming gradient is often expanded).
Tensor rows_from_batch_first(const Tensor& t, int64_t T, int64_t N, int64_t W) {
  Tensor rows = empty({T, N, W}, TensorOptions(t.dtype()));
  native::copy_into(rows, t.detach().transpose(0, 1));
  return rows.view({T * N, W});
}

Tensor batch_first_from_rows(const Tensor& rows, int64_t T, int64_t N, int64_t W, const Shape& shape) {
  Tensor out = empty({N, T, W}, TensorOptions(rows.dtype()));
  native::copy_into(out.transpose(0, 1), rows.view({T, N, W}));
  return out.view(shape);
}

// One mask element: 0 with probability p, else 1/(1-p). Both paths (a saved
// mask in training, in place without a graph) draw through this, one draw per
// element in row-major order, so a seed gives the same masks either way.
template <class T>
T dropout_factor(Generator& gen, double p) {
  return gen.next_double() >= p ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
}

LayerSchedule g_layer_schedule = LayerSchedule::kAuto;
std::atomic<int64_t> g_sums_taken{0};

// Runs task(0) .. task(n - 1), each exactly once, on a team of up to `threads`
// OpenMP threads (one thread: in order, no team). Inside the team every kernel
// call sees get_num_threads() == 1. The first exception is rethrown after the
// team has ended.
template <class Task>
void run_on_team(int threads, int n, Task&& task) {
  if (threads <= 1 || n <= 1) {
    for (int i = 0; i < n; ++i) task(i);
    return;
  }
  std::exception_ptr error;
#pragma omp parallel num_threads(std::min(threads, n))
  {
    try {
      for (int i = omp_get_thread_num(); i < n; i += omp_get_num_threads()) task(i);
    } catch (...) {
#pragma omp critical(rnnkit_recurrent_team_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Bytes of one direction's W_hh in float32.
size_t recurrent_weight_bytes(const Saved& s) {
  return static_cast<size_t>(k::gate_count(s.spec.cell)) * static_cast<size_t>(s.spec.hidden_size * s.Hout) *
         sizeof(float);
}

// Whether the two directions of each layer run at once, one thread each. A
// direction's step streams its whole W_hh: one core doing that beats two cores
// sharing each direction only while W_hh stays in that core's cache (measured on
// 2 cores with bench_rnn_layers --bidirectional, T = 256 or 25; time / the
// one-after-another time). Up to 1 MiB: H = 128 at N = 1 0.72-0.79x; H = 256 at
// N = 16 0.68-0.89x, at N = 64 0.75-0.99x; Elman H = 512 (1 MiB) at N = 16-64
// 0.76-0.94x. Above: LSTM H = 512 (4 MiB) at N = 4 1.7x slower, at N = 64 1.13x
// (forward), GRU H = 1024 (12 MiB) at N = 16 1.24x, LSTM H = 1024 1.05-1.20x;
// GRU H = 512 (3 MiB) and Elman H = 1024 (4 MiB) 0.96-1.01x, level. With more
// than two threads, larger batches are better off giving each direction's GEMMs
// all of them.
constexpr size_t kConcurrentDirectionsMaxWeightBytes = size_t{1} << 20;
bool concurrent_directions(const Saved& s) {
  if (s.D != 2 || g_layer_schedule == LayerSchedule::kSequential) return false;
  const int threads = get_num_threads();
  if (threads < 2 || recurrent_weight_bytes(s) > kConcurrentDirectionsMaxWeightBytes) return false;
  return s.N <= 8 || threads == 2;
}

// The time chunks of a wavefront call (chunks == 0: no wavefront).
struct Wavefront {
  int64_t chunk_steps = 0;
  int64_t chunks = 0;
};

// Pipelining a stack pays when each layer's recurrent weights are small enough
// that one core streams them per step about as fast as two cores stream halves
// (measured with bench_rnn_layers on 2 cores, N = 1, T = 256, 2 layers: LSTM H = 64
// 0.76x the layer-by-layer time, GRU 0.66x, Elman 0.44x; LSTM H = 128 (256 KiB)
// 0.88-0.93x, 3 layers at N = 4 0.83x; GRU H = 256 (768 KiB) 1.11x, LSTM H = 256
// (1 MiB) 1.14x) and the sequence is long enough that the fill, one chunk per
// layer, is small next to it.
constexpr size_t kWavefrontMaxWeightBytes = size_t{512} << 10;
constexpr int64_t kWavefrontMinSteps = 32;
constexpr int64_t kWavefrontTargetChunks = 16;
constexpr int64_t kWavefrontMinChunkSteps = 8;

template <class T>
Wavefront plan_wavefront(const Saved& s, bool training) {
  Wavefront w;
  if (!std::is_same<T, float>::value || training || g_layer_schedule == LayerSchedule::kSequential) return w;
  if (s.D != 1 || s.L < 2 || s.spec.dropout_active || s.spec.proj_size > 0 || s.N > 8 || s.T < kWavefrontMinSteps)
    return w;
  if (recurrent_weight_bytes(s) > kWavefrontMaxWeightBytes) return w;
  w.chunk_steps = std::max(kWavefrontMinChunkSteps, (s.T + kWavefrontTargetChunks - 1) / kWavefrontTargetChunks);
  w.chunks = (s.T + w.chunk_steps - 1) / w.chunk_steps;
  return w;
}

// Waits, spinning briefly and then yielding the core, until ready() holds.
template <class Ready>
void wait_until(Ready&& ready) {
  for (int spins = 0; !ready(); ++spins) {
    if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    } else {
      sched_yield();
    }
  }
}

// Runs the tasks (layer, chunk) of a wavefront on `threads` threads. Task (l, k)
// needs (l, k - 1) and (l - 1, k) done; tasks are claimed in wave order (l + k,
// then l), so every task's prerequisites were claimed before it and the waits
// always end. Each layer runs one task at a time.
template <class Task>
void run_wavefront(int64_t layers, int64_t chunks, int threads, Task&& task) {
  std::vector<std::pair<int64_t, int64_t>> order;
  order.reserve(static_cast<size_t>(layers * chunks));
  for (int64_t wave = 0; wave < layers + chunks - 1; ++wave)
    for (int64_t l = 0; l < layers; ++l)
      if (wave - l >= 0 && wave - l < chunks) order.emplace_back(l, wave - l);
  const int team = static_cast<int>(std::min<int64_t>(threads, layers));
  if (team <= 1) {
    for (const auto& lk : order) task(lk.first, lk.second);
    return;
  }
  std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[static_cast<size_t>(layers)]);
  for (int64_t l = 0; l < layers; ++l) done[l].store(0);
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  run_on_team(team, team, [&](int) {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= order.size()) return;
      const int64_t l = order[i].first, kk = order[i].second;
      wait_until([&] {
        return failed.load(std::memory_order_relaxed) ||
               (done[l].load(std::memory_order_acquire) >= kk &&
                (l == 0 || done[l - 1].load(std::memory_order_acquire) >= kk + 1));
      });
      if (failed.load(std::memory_order_relaxed)) return;
      try {
        task(l, kk);
      } catch (...) {
        failed.store(true);
        throw;
      }
      done[l].store(kk + 1, std::memory_order_release);
    }
  });
}

class RecurrentBackward final : public autograd::Node {
 public:
  explicit RecurrentBackward(std::shared_ptr<Saved> saved) : saved_(std::move(saved)) {}
  autograd::tensor_list apply(autograd::tensor_list&& grads) override;
  std::string name() const override { return saved_ ? saved_->spec.node_name : "RecurrentBackward"; }
  void release_saved() override { saved_.reset(); }
  bool sums_into_inputs() const override { return true; }

 private:
  template <class T>
  autograd::tensor_list backward(const autograd::tensor_list& grads);
  std::shared_ptr<Saved> saved_;
};

// Inputs of the node: 0 input, 1 h0, 2 c0, 3.. the weights.
constexpr size_t kFirstWeight = 3;

// The layers of an inference call (one direction, no dropout) as a wavefront of
// time chunks: task (l, k) runs layer l over the steps of chunk k, from the state
// chunk k - 1 left, as one single-threaded kernel call (rnn_forward's calls
// compose over time). W_hh of each layer comes packed from the module's
// cache, taken by its first chunk (kept between calls while unchanged).
// Each layer's state lives in its h_n/c_n slice (entries of a packed batch that
// ended in an earlier chunk keep their final state there).
// h0/c0 (null: zeros) and h_n/c_n are [L, N, *] in the kernels' batch order.
template <class T, class LayerY>
void forward_wavefront(const Saved& s, const Wavefront& wave, LayerY&& layer_y, const T* h0, const T* c0, T* h_n,
                       T* c_n, T* ws, size_t ws_each) {
  const int64_t L = s.L, N = s.N, H = s.spec.hidden_size, Hout = s.Hout, DH = s.DH, T_ = s.T;
  const bool lstm = s.spec.cell == k::CellType::LSTM;
  const int64_t* bs = s.layout.batch_sizes.data();
  std::vector<int64_t> row_offset(static_cast<size_t>(T_) + 1, 0);
  for (int64_t t = 0; t < T_; ++t) row_offset[static_cast<size_t>(t) + 1] = row_offset[static_cast<size_t>(t)] + bs[t];

  // Per layer: packed W_hh from the module's cache (taken by the layer's first
  // chunk; without a cache every chunk call packs for itself), and the state a
  // chunk call writes before it becomes the layer's state (a call's h_n must
  // not alias its h0).
  const TensorOptions opts(s.dtype);
  std::vector<Tensor> cached(static_cast<size_t>(L)), cached_ih(static_cast<size_t>(L));
  Tensor next_h = empty({L, N, Hout}, opts);
  Tensor next_c = lstm ? empty({L, N, H}, opts) : Tensor();
  std::vector<T*> y(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) y[static_cast<size_t>(l)] = layer_y(l);

  run_wavefront(L, wave.chunks, get_num_threads(), [&](int64_t l, int64_t chunk) {
    k::RnnWeights<T> w = s.layer_weights<T>(l, 0);
    if constexpr (std::is_same<T, float>::value) {  // plan_wavefront takes float only
      // Chunk 0 of layer l runs before every other chunk of it.
      const size_t li = static_cast<size_t>(l);
      if (chunk == 0 && s.spec.packed_cache != nullptr) {
        cached[li] = s.spec.packed_cache->get(li, s.w_hh(l, 0), s.dims(l, 0), PackedWeightsCache::kRecurrent,
                                              recurrent_precision(s.spec));
        if (s.spec.pack_input_weights || s.spec.bf16_products)
          cached_ih[li] = s.spec.packed_cache->get(li, s.w_ih(l, 0), s.dims(l, 0), PackedWeightsCache::kInput,
                                                   recurrent_precision(s.spec));
      }
      if (cached[li].defined()) w.w_hh_packed = cached[li].const_data_ptr<float>();
      if (cached_ih[li].defined()) w.w_ih_packed = cached_ih[li].const_data_ptr<float>();
    }
    const int64_t t0 = chunk * wave.chunk_steps, t1 = std::min(T_, t0 + wave.chunk_steps);
    k::RnnLayerDims dims = s.dims(l, 0);
    dims.steps = t1 - t0;
    dims.batch = bs[t0];
    dims.batch_sizes = bs + t0;
    const int64_t off = row_offset[static_cast<size_t>(t0)];
    const T* x = l == 0 ? s.x.data_ptr<T>() + off * s.spec.input_size : y[static_cast<size_t>(l - 1)] + off * DH;
    const int64_t ldx = l == 0 ? s.spec.input_size : DH;
    T* h_state = h_n + l * N * Hout;
    T* c_state = lstm ? c_n + l * N * H : nullptr;
    T* h_next = next_h.data_ptr<T>() + l * N * Hout;
    T* c_next = lstm ? next_c.data_ptr<T>() + l * N * H : nullptr;
    const T* h_prev = chunk > 0 ? h_state : (h0 ? h0 + l * N * Hout : nullptr);
    const T* c_prev = chunk > 0 ? c_state : (c0 ? c0 + l * N * H : nullptr);
    k::rnn_forward<T>(dims, w, x, ldx, h_prev, c_prev,
                      y[static_cast<size_t>(l)] + off * DH, DH, h_next, c_next, ws + static_cast<size_t>(l) * ws_each,
                      false);
    std::memcpy(h_state, h_next, static_cast<size_t>(dims.batch * Hout) * sizeof(T));
    if (lstm) std::memcpy(c_state, c_next, static_cast<size_t>(dims.batch * H) * sizeof(T));
  });
}

template <class T>
RecurrentResult forward_impl(const std::shared_ptr<Saved>& sp, const Tensor& input, const Tensor& h0_user,
                             const Tensor& c0_user, bool training) {
  Saved& s = *sp;
  const RecurrentSpec& spec = s.spec;
  const RecurrentLayout& lay = s.layout;
  const int64_t I = spec.input_size, H = spec.hidden_size, Hout = s.Hout, DH = s.DH, rows = s.rows;
  const int64_t L = s.L, D = s.D, N = s.N, T_ = s.T;
  const bool lstm = spec.cell == k::CellType::LSTM;
  const TensorOptions opts(s.dtype);

  s.x = lay.batch_first ? rows_from_batch_first(input, T_, N, I) : native::contiguous(input.detach());
  if (s.has_h0) s.h0 = to_kernel_order<T>(h0_user, lay.sorted_indices, L * D, N, Hout);
  if (s.has_c0) s.c0 = to_kernel_order<T>(c0_user, lay.sorted_indices, L * D, N, H);

  const bool concurrent = concurrent_directions(s);
  const Wavefront wave = plan_wavefront<T>(s, training);
  const int64_t slots = wave.chunks > 0 ? L : (concurrent ? 2 : 1);  // kernel calls at once

  // Workspaces: one per layer and direction kept for backward in training;
  // otherwise one per kernel call that may run at once, reused.
  s.workspace_offset.assign(static_cast<size_t>(L * D), 0);
  size_t ws_total = 0, ws_each = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t d = 0; d < D; ++d) {
      k::RnnLayerDims dims = s.dims(l, d);
      if (wave.chunks > 0) dims.steps = wave.chunk_steps;  // the first chunk has the most rows
      const size_t n = align_elements(k::rnn_forward_workspace_size(dims, training));
      if (training) {
        s.workspace_offset[static_cast<size_t>(l * D + d)] = ws_total;
        ws_total += n;
      } else {
        ws_each = std::max(ws_each, n);
      }
    }
  if (!training) ws_total = ws_each * static_cast<size_t>(slots);
  s.workspace = empty({static_cast<int64_t>(ws_total)}, opts);
  T* ws = s.workspace.data_ptr<T>();

  // Layer outputs: all of them in training; two alternating buffers otherwise,
  // the last layer writing straight into the output when the layout allows.
  // (In a wavefront layers l and l + 2 share a buffer safely: layer l + 2 writes
  // chunk k only after layer l + 1 has read it, and layer l writes chunk k only
  // before layer l + 1 reads it.)
  const bool direct_output = !training && !lay.batch_first;
  RecurrentResult result;
  Tensor scratch;
  if (training) {
    s.ys = empty({L, rows, DH}, opts);
    if (spec.dropout_active && L > 1) {
      s.masks = empty({L - 1, rows, DH}, opts);
      s.dropped = empty({L - 1, rows, DH}, opts);
    }
  } else {
    const int64_t buffers = std::min<int64_t>(direct_output ? L - 1 : L, 2);
    if (buffers > 0) scratch = empty({buffers, rows, DH}, opts);
  }
  if (direct_output) result.output = empty(lay.output_shape, opts);
  auto layer_output = [&](int64_t l) -> Tensor {  // [rows, DH]
    if (training) return s.ys.select(0, l);
    if (l == L - 1 && direct_output) return result.output;
    return scratch.select(0, l % 2);
  };

  // Final states, in the kernels' batch order first.
  const bool permuted = lay.sorted_indices.defined();
  Tensor h_n_k, c_n_k;
  if (lay.return_h_n || wave.chunks > 0) h_n_k = empty({L * D, N, Hout}, opts);
  if (lstm) c_n_k = empty({L * D, N, H}, opts);
  auto h0_of = [&](int64_t sd) { return s.has_h0 ? s.h0.data_ptr<T>() + sd * N * Hout : nullptr; };
  auto c0_of = [&](int64_t sd) { return s.has_c0 ? s.c0.data_ptr<T>() + sd * N * H : nullptr; };
  auto h_n_of = [&](int64_t sd) { return h_n_k.defined() ? h_n_k.data_ptr<T>() + sd * N * Hout : nullptr; };
  auto c_n_of = [&](int64_t sd) { return lstm ? c_n_k.data_ptr<T>() + sd * N * H : nullptr; };

  if (wave.chunks > 0) {
    forward_wavefront<T>(s, wave, [&](int64_t l) { return layer_output(l).template data_ptr<T>(); }, h0_of(0),
                         c0_of(0), h_n_of(0), c_n_of(0), ws, ws_each);
  } else {
    Generator& gen = spec.generator ? *spec.generator : default_generator();
    const T* x_in = s.x.const_data_ptr<T>();
    int64_t ldx = I;
    for (int64_t l = 0; l < L; ++l) {
      T* y = layer_output(l).template data_ptr<T>();
      // Direction d of layer l in kernel-call slot `slot` (its workspace).
      auto run_direction = [&](int64_t d, int64_t slot) {
        const int64_t sd = l * D + d;
        const k::RnnLayerDims dims = s.dims(l, d);
        T* ws_d = training ? ws + s.workspace_offset[static_cast<size_t>(sd)] : ws + slot * ws_each;
        k::RnnWeights<T> w = s.layer_weights<T>(l, d);
        Tensor held, held_ih, held_hr;  // the cache's packed W_hh, W_ih and W_hr, alive through the call
        if constexpr (std::is_same<T, float>::value) {
          if (spec.packed_cache != nullptr) {
            held = spec.packed_cache->get(static_cast<size_t>(sd), s.w_hh(l, d), dims, PackedWeightsCache::kRecurrent,
                                          recurrent_precision(s.spec));
            if (held.defined()) w.w_hh_packed = held.const_data_ptr<float>();
            if (spec.pack_input_weights || spec.bf16_products)
              held_ih = spec.packed_cache->get(static_cast<size_t>(sd), s.w_ih(l, d), dims, PackedWeightsCache::kInput,
                                               recurrent_precision(s.spec));
            if (held_ih.defined()) w.w_ih_packed = held_ih.const_data_ptr<float>();
            if (spec.proj_size > 0)
              held_hr = spec.packed_cache->get(static_cast<size_t>(sd), s.w_hr(l, d), dims,
                                               PackedWeightsCache::kProjection);
            if (held_hr.defined()) w.w_hr_packed = held_hr.const_data_ptr<float>();
          }
        }
        // A training forward packs W_hh itself into a scratch freed when the
        // call ends, unless the cache gave it.
        Tensor pack_scratch;
        const size_t scratch_size = held.defined() ? 0 : k::rnn_forward_scratch_size(dims);
        if (scratch_size > 0) pack_scratch = empty({static_cast<int64_t>(scratch_size)}, opts);
        k::rnn_forward<T>(dims, w, x_in, ldx, h0_of(sd), c0_of(sd), y + d * Hout, DH, h_n_of(sd), c_n_of(sd), ws_d,
                          training, pack_scratch.defined() ? pack_scratch.data_ptr<T>() : nullptr);
      };
      if (concurrent)
        run_on_team(2, 2, [&](int d) { run_direction(d, d); });
      else
        for (int64_t d = 0; d < D; ++d) run_direction(d, 0);
      x_in = y;
      ldx = DH;
      if (spec.dropout_active && l + 1 < L) {
        const int64_t n = rows * DH;
        if (training) {
          T* mask = s.masks.data_ptr<T>() + l * n;
          T* dropped = s.dropped.data_ptr<T>() + l * n;
          for (int64_t i = 0; i < n; ++i) {
            mask[i] = dropout_factor<T>(gen, spec.dropout);
            dropped[i] = y[i] * mask[i];
          }
          x_in = dropped;
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] *= dropout_factor<T>(gen, spec.dropout);
        }
      }
    }
  }

  if (!direct_output) {
    // In training the output is a second handle on the saved buffer's storage,
    // so that the node holds no reference to its own output.
    Tensor last = layer_output(L - 1);
    result.output = lay.batch_first ? batch_first_from_rows(last, T_, N, DH, lay.output_shape)
                                    : last.view(lay.output_shape);
  }
  auto to_user_order = [&](const Tensor& t, const Shape& shape, int64_t W) {
    if (!permuted) return t.view(shape);
    Tensor out = empty(shape, opts);
    gather_batch(t.data_ptr<T>(), out.data_ptr<T>(), L * D, N, W, lay.unsorted_indices.data_ptr<int64_t>());
    return out;
  };
  if (lay.return_h_n) result.h_n = to_user_order(h_n_k, lay.hidden_shape, Hout);
  if (c_n_k.defined()) result.c_n = to_user_order(c_n_k, lay.cell_shape, H);
  return result;
}

template <class T>
autograd::tensor_list RecurrentBackward::backward(const autograd::tensor_list& grads) {
  const Saved& s = *saved_;
  const RecurrentSpec& spec = s.spec;
  const RecurrentLayout& lay = s.layout;
  const int64_t I = spec.input_size, H = spec.hidden_size, Hout = s.Hout, DH = s.DH, rows = s.rows;
  const int64_t L = s.L, D = s.D, N = s.N, T_ = s.T;
  const bool lstm = spec.cell == k::CellType::LSTM;
  const bool permuted = lay.sorted_indices.defined();
  const TensorOptions opts(s.dtype);
  auto wants = [&](size_t input) { return input < next_edges.size() && next_edges[input].valid(); };

  // Incoming gradients in the kernels' layout.
  const Tensor& g_out = grads.size() > 0 ? grads[0] : Tensor();
  const Tensor& g_h_n = grads.size() > 1 ? grads[1] : Tensor();
  const Tensor& g_c_n = grads.size() > 2 ? grads[2] : Tensor();
  Tensor dy_top;
  if (g_out.defined())
    dy_top = lay.batch_first ? rows_from_batch_first(g_out, T_, N, DH) : native::contiguous(g_out);
  auto to_kernel_order_grad = [&](const Tensor& g, int64_t W) {
    if (!g.defined()) return Tensor();
    Tensor src = native::contiguous(g);
    if (!permuted) return src;
    Tensor dst = empty({L * D, N, W}, opts);
    scatter_batch(src.data_ptr<T>(), dst.data_ptr<T>(), L * D, N, W, lay.unsorted_indices.data_ptr<int64_t>());
    return dst;
  };
  Tensor dh_n = to_kernel_order_grad(g_h_n, Hout);
  Tensor dc_n = lstm ? to_kernel_order_grad(g_c_n, H) : Tensor();

  // Outgoing gradients.
  Tensor dh0 = wants(1) ? empty({L * D, N, Hout}, opts) : Tensor();
  Tensor dc0 = wants(2) && lstm ? empty({L * D, N, H}, opts) : Tensor();
  // Weight gradients: a direction whose every wanted weight has a sum the
  // engine offers (Node::accumulate_into: a weight this node shares with
  // earlier calls, as a decoder cell's) adds its gradients into those sums
  // and returns none; the others are fresh and left unfilled, and the kernel
  // call writes them whole (RnnGrads::overwrite).
  std::vector<Tensor> dweights(s.weights.size());
  std::vector<char> adds_into(static_cast<size_t>(L * D), 0);
  for (int64_t sd = 0; sd < L * D; ++sd) {
    const size_t w0 = static_cast<size_t>(sd * s.per_direction);
    bool all = true, any = false;
    for (size_t i = w0; i < w0 + static_cast<size_t>(s.per_direction); ++i) {
      if (!wants(kFirstWeight + i)) continue;
      dweights[i] = autograd::offered_sum(accumulate_into, kFirstWeight + i, s.dtype, s.weights[i].sizes());
      any = true;
      all = all && dweights[i].defined();
    }
    all = all && any;
    adds_into[static_cast<size_t>(sd)] = all;
    if (all) g_sums_taken.fetch_add(1);
    for (size_t i = w0; i < w0 + static_cast<size_t>(s.per_direction); ++i)
      if (wants(kFirstWeight + i) && !all) dweights[i] = empty(s.weights[i].sizes(), opts);
  }
  Tensor dx = wants(0) ? empty({rows, I}, opts) : Tensor();

  // The kernels may write the gradients w.r.t. the gates over the saved gates
  // when nothing reads this node's saved tensors after this backward.
  const bool consume = last_apply;
  auto dims_of = [&](int64_t l, int64_t d) {
    k::RnnLayerDims dims = s.dims(l, d);
    dims.overwrite_forward_workspace = consume;
    return dims;
  };
  const bool concurrent = concurrent_directions(s);
  size_t bws_each = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t d = 0; d < D; ++d) bws_each = std::max(bws_each, align_elements(k::rnn_backward_workspace_size(dims_of(l, d))));
  Tensor bws = empty({static_cast<int64_t>(bws_each) * (concurrent ? 2 : 1)}, opts);
  // dY of the layer below, two alternating buffers: layer l's dx is layer l-1's dy.
  Tensor dlayer = L > 1 ? empty({std::min<int64_t>(L - 1, 2), rows, DH}, opts) : Tensor();
  // The reverse direction writes its dx apart, added afterwards: concurrent
  // directions cannot add into one buffer, and doing the same when they run one
  // after the other keeps results independent of the thread count.
  Tensor dx_reverse;

  const T* dy = dy_top.defined() ? dy_top.data_ptr<T>() : nullptr;
  for (int64_t l = L - 1; l >= 0; --l) {
    T* dx_l = l > 0 ? dlayer.data_ptr<T>() + ((l - 1) % 2) * rows * DH : (dx.defined() ? dx.data_ptr<T>() : nullptr);
    const int64_t lddx = l > 0 ? DH : I;
    const T* x_l = s.layer_input<T>(l);
    const int64_t ldx = s.layer_input_stride(l);
    const T* y_l = s.ys.data_ptr<T>() + l * rows * DH;
    if (D == 2 && dx_l != nullptr && (!dx_reverse.defined() || dx_reverse.numel() < rows * lddx))
      dx_reverse = empty({rows * lddx}, opts);
    auto run_direction = [&](int64_t d, int64_t slot) {
      const int64_t sd = l * D + d;
      const size_t w0 = static_cast<size_t>(sd * s.per_direction);
      k::RnnGrads<T> dw;
      dw.overwrite = !adds_into[static_cast<size_t>(sd)];
      auto grad_ptr = [&](size_t offset) {
        const Tensor& g = dweights[w0 + offset];
        return g.defined() ? g.data_ptr<T>() : nullptr;
      };
      dw.dw_ih = grad_ptr(0);
      dw.dw_hh = grad_ptr(1);
      size_t next = 2;
      if (spec.has_bias) {
        dw.db_ih = grad_ptr(2);
        dw.db_hh = grad_ptr(3);
        next = 4;
      }
      if (spec.proj_size > 0) dw.dw_hr = grad_ptr(next);
      T* dx_d = d == 1 && dx_l != nullptr ? dx_reverse.data_ptr<T>() : dx_l;
      k::rnn_backward<T>(dims_of(l, d), s.layer_weights<T>(l, d), x_l, ldx,
                         s.has_h0 ? s.h0.data_ptr<T>() + sd * N * Hout : nullptr,
                         s.has_c0 ? s.c0.data_ptr<T>() + sd * N * H : nullptr, y_l + d * Hout, DH,
                         s.workspace.data_ptr<T>() + s.workspace_offset[static_cast<size_t>(sd)],
                         dy ? dy + d * Hout : nullptr, DH,
                         dh_n.defined() ? dh_n.data_ptr<T>() + sd * N * Hout : nullptr,
                         dc_n.defined() ? dc_n.data_ptr<T>() + sd * N * H : nullptr, dx_d, lddx, T(0),
                         dh0.defined() ? dh0.data_ptr<T>() + sd * N * Hout : nullptr,
                         dc0.defined() ? dc0.data_ptr<T>() + sd * N * H : nullptr, dw,
                         bws.data_ptr<T>() + static_cast<size_t>(slot) * bws_each);
    };
    if (concurrent)
      run_on_team(2, 2, [&](int d) { run_direction(d, d); });
    else
      for (int64_t d = 0; d < D; ++d) run_direction(d, 0);
    if (D == 2 && dx_l != nullptr) {
      const T* r = dx_reverse.const_data_ptr<T>();
      for (int64_t i = 0, n = rows * lddx; i < n; ++i) dx_l[i] += r[i];
    }
    if (l > 0) {
      if (spec.dropout_active) {
        const T* mask = s.masks.data_ptr<T>() + (l - 1) * rows * DH;
        for (int64_t i = 0, n = rows * DH; i < n; ++i) dx_l[i] *= mask[i];
      }
      dy = dx_l;
    }
  }

  autograd::tensor_list out(kFirstWeight + s.weights.size());
  if (dx.defined())
    out[0] = lay.batch_first ? batch_first_from_rows(dx, T_, N, I, s.input_shape) : dx.view(s.input_shape);
  auto to_user_order = [&](const Tensor& t, const Shape& shape, int64_t W) {
    if (!permuted) return t.view(shape);
    Tensor u = empty(shape, opts);
    scatter_batch(t.data_ptr<T>(), u.data_ptr<T>(), L * D, N, W, lay.sorted_indices.data_ptr<int64_t>());
    return u;
  };
  if (dh0.defined()) out[1] = to_user_order(dh0, lay.hidden_shape, Hout);
  if (dc0.defined()) out[2] = to_user_order(dc0, lay.cell_shape, H);
  for (size_t i = 0; i < dweights.size(); ++i)
    if (!adds_into[i / static_cast<size_t>(s.per_direction)]) out[kFirstWeight + i] = dweights[i];
  return out;
}

autograd::tensor_list RecurrentBackward::apply(autograd::tensor_list&& grads) {
  RNNKIT_CHECK(saved_ != nullptr,
               "RecurrentBackward: saved tensors were already freed (use retain_graph=true to backward twice)");
  return dispatch_floating(saved_->dtype, name().c_str(),
                           [&](auto tag) { return backward<decltype(tag)>(grads); });
}

}  // namespace

int64_t recurrent_sums_taken() { return g_sums_taken.load(); }

void set_layer_schedule(LayerSchedule schedule) { g_layer_schedule = schedule; }
LayerSchedule layer_schedule() { return g_layer_schedule; }

template <class Fits, class Fill>
Tensor PackedWeightsCache::lookup(size_t group, const Tensor& weight, int precision, size_t n, Dtype dtype, Fits&& fits,
                                  Fill&& fill) {
  const std::shared_ptr<Storage>& storage = weight.storage();
  const int64_t offset = weight.storage_offset();
  // The version before packing: a change while packing makes the entry stale.
  const uint64_t version = storage->version();
  // Whether entry e was packed from these very bytes: the same storage (the
  // same control block: an address reused by a new storage is not the same
  // owner while e's weak_ptr lives), offset and version, and precision.
  const auto current = [&](const Entry& e) {
    return e.packed.defined() && !e.storage.owner_before(storage) && !storage.owner_before(e.storage) &&
           !e.storage.expired() && e.offset == offset && e.version == version && e.precision == precision;
  };
  size_t victim = 0;
  Tensor packed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() < (group + 1) * kSlots) entries_.resize((group + 1) * kSlots);
    Entry* slots = &entries_[group * kSlots];
    for (size_t i = 0; i < kSlots; ++i)
      if (current(slots[i]) && fits(slots[i].packed)) {
        slots[i].last_use = ++use_clock_;
        return slots[i].packed;
      }
    // The entry to replace: an empty one, else a stale one, else the least
    // recently used (each group by least recent use).
    const auto rank = [&](const Entry& e) { return !e.packed.defined() ? 0 : !current(e) ? 1 : 2; };
    for (size_t i = 1; i < kSlots; ++i)
      if (rank(slots[i]) < rank(slots[victim]) ||
          (rank(slots[i]) == rank(slots[victim]) && slots[i].last_use < slots[victim].last_use))
        victim = i;
    Entry& e = slots[victim];
    // Repack into its buffer when no call holds it and the size and type fit
    // (a fresh buffer costs its pages' first-touch faults, about as much as
    // packing). Taken out of the entry meanwhile, so no other call gets it.
    if (e.packed.defined() && e.packed.impl().use_count() == 1 && e.packed.numel() == static_cast<int64_t>(n) &&
        e.packed.dtype() == dtype) {
      // Pairs with the release of the last other handle: that call's reads
      // of the buffer happen before this repacking writes it.
      std::atomic_thread_fence(std::memory_order_acquire);
      packed = std::move(e.packed);
    }
  }
  if (!packed.defined()) packed = empty({static_cast<int64_t>(n)}, dtype);
  if (!fill(packed)) return Tensor();
  packs_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[group * kSlots + victim] = Entry{storage, offset, version, ++use_clock_, precision, packed};
  return packed;
}

Tensor PackedWeightsCache::get(size_t index, const Tensor& weight, const k::RnnLayerDims& dims, Kind kind,
                               k::PackedPrecision want) {
  RNNKIT_CHECK(weight.dtype() == kFloat32 && weight.is_contiguous() && weight.storage(),
               "PackedWeightsCache: internal error, the weight must be contiguous float32");
  if (kind == kRecurrent && !k::rnn_forward_takes_packed(dims)) return Tensor();
  // The precision asked for where the path has it; W_ih has none in
  // kBFloat16 (that forward takes it in float32), W_hr none but float32.
  const k::PackedPrecision precision =
      kind == kRecurrent && k::rnn_packed_weights_size(dims, want) > 0 ? want
      : kind == kInput && want == k::PackedPrecision::kBFloat16Products ? want
                                                                       : k::PackedPrecision::kFloat32;
  const size_t n = kind == kInput        ? k::rnn_packed_input_weights_size(dims, precision)
                   : kind == kProjection ? k::rnn_packed_projection_weights_size(dims)
                                         : k::rnn_packed_weights_size(dims, precision);
  if (n == 0) return Tensor();
  const auto fits = [&](const Tensor& packed) {
    const float* p = packed.const_data_ptr<float>();
    return kind == kInput        ? k::rnn_packed_input_weights_fit(dims, p, precision)
           : kind == kProjection ? k::rnn_packed_projection_weights_fit(dims, p)
                                 : k::rnn_packed_weights_fit(dims, p);
  };
  const auto fill = [&](Tensor& packed) {
    try {
      const float* w = weight.const_data_ptr<float>();
      if (kind == kInput)
        k::rnn_pack_input_weights(dims, w, packed.data_ptr<float>(), precision);
      else if (kind == kProjection)
        k::rnn_pack_projection_weights(dims, w, packed.data_ptr<float>());
      else
        k::rnn_pack_weights(dims, w, packed.data_ptr<float>(), precision);
    } catch (const Error&) {
      return false;  // oneDNN declined this layout: the forward packs for itself, as without a cache
    }
    if (kind == kRecurrent && precision != k::PackedPrecision::kFloat32) bf16_packs_.fetch_add(1);
    return true;
  };
  return lookup(kKinds * index + static_cast<size_t>(kind), weight, static_cast<int>(precision), n, kFloat32, fits,
                fill);
}

Tensor PackedWeightsCache::rounded_bf16(size_t index, const Tensor& weight, bool input) {
  RNNKIT_CHECK((weight.dtype() == kFloat32 || weight.dtype() == kFloat64) && weight.is_contiguous() &&
                   weight.storage(),
               "PackedWeightsCache: internal error, the weight must be contiguous float32 or float64");
  const auto fill = [&](Tensor& rounded) {
    dispatch_floating(weight.dtype(), "rounded_bf16", [&](auto tag) {
      using T = decltype(tag);
      const T* src = weight.const_data_ptr<T>();
      T* dst = rounded.data_ptr<T>();
      const int64_t n = weight.numel();
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(k::round_to_bfloat16(static_cast<float>(src[i])));
    });
    return true;
  };
  return lookup(kKinds * index + (input ? 4 : 3), weight, 1, static_cast<size_t>(weight.numel()), weight.dtype(),
                [](const Tensor&) { return true; }, fill);
}

RecurrentResult recurrent_forward(const RecurrentSpec& spec, const RecurrentLayout& layout, const Tensor& input,
                                  const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights) {
  auto s = std::make_shared<Saved>();
  s->spec = spec;
  s->layout = layout;
  s->dtype = input.dtype();
  s->T = static_cast<int64_t>(layout.batch_sizes.size());
  RNNKIT_CHECK(s->T > 0, spec.node_name, ": internal error, empty batch_sizes");
  s->N = layout.batch_sizes[0];
  for (int64_t b : layout.batch_sizes) s->rows += b;
  s->D = spec.bidirectional ? 2 : 1;
  s->L = spec.num_layers;
  s->Hout = spec.proj_size > 0 ? spec.proj_size : spec.hidden_size;
  s->DH = s->D * s->Hout;
  s->per_direction = 2 + (spec.has_bias ? 2 : 0) + (spec.proj_size > 0 ? 1 : 0);
  s->input_shape = input.sizes();
  s->has_h0 = h0.defined();
  s->has_c0 = c0.defined() && spec.cell == k::CellType::LSTM;
  RNNKIT_CHECK(input.numel() == s->rows * spec.input_size, spec.node_name,
               ": internal error, input numel does not match the layout");
  RNNKIT_CHECK(weights.size() == static_cast<size_t>(s->L * s->D * s->per_direction), spec.node_name,
               ": internal error, expected ", s->L * s->D * s->per_direction, " weights, got ", weights.size());
  s->weights.reserve(weights.size());
  for (const Tensor& w : weights) s->weights.push_back(native::contiguous(w.detach()));

  std::vector<Tensor> inputs;
  inputs.reserve(kFirstWeight + weights.size());
  inputs.push_back(input);
  inputs.push_back(h0);
  inputs.push_back(c0);
  for (const Tensor& w : weights) inputs.push_back(w);
  const bool training = autograd::needs_grad(inputs);

  s->training = training;
  // Training calls of one step (a decoder cell in a loop, several calls between
  // two optimizer steps) keep W_hh packed in the cache between calls, as
  // inference calls do. Longer ones, whose packing is a small part of the call,
  // pack into a scratch freed when the forward ends: a training step then holds
  // no packed copy through its backward.
  if (training && s->T > 1) s->spec.packed_cache = nullptr;
  // bfloat16 inference: every layer and direction runs on W_hh rounded to
  // bfloat16 (kept rounded in the cache between calls), whichever path it
  // takes, so that results do not depend on the batch size or the CPU beyond
  // float rounding; the paths with a bfloat16 packed form take it from there.
  // The bfloat16 products round W_ih too, and x and h in the kernels.
  if (training) s->spec.bf16_inference = s->spec.bf16_products = false;
  if (s->spec.bf16_inference || s->spec.bf16_products) {
    PackedWeightsCache scratch;  // without the module's cache: rounded for this call only
    PackedWeightsCache& cache = s->spec.packed_cache != nullptr ? *s->spec.packed_cache : scratch;
    for (int64_t sd = 0; sd < s->L * s->D; ++sd) {
      Tensor& w_hh = s->weights[static_cast<size_t>(sd * s->per_direction + 1)];
      w_hh = cache.rounded_bf16(static_cast<size_t>(sd), w_hh);
      if (s->spec.bf16_products) {
        Tensor& w_ih = s->weights[static_cast<size_t>(sd * s->per_direction)];
        w_ih = cache.rounded_bf16(static_cast<size_t>(sd), w_ih, true);
      }
    }
  }
  RecurrentResult result = dispatch_floating(s->dtype, spec.node_name, [&](auto tag) {
    return forward_impl<decltype(tag)>(s, input, h0, c0, training);
  });
  if (training) {
    s->spec.packed_cache = nullptr;  // the node may outlive the module
    auto node = std::make_shared<RecurrentBackward>(s);
    autograd::connect(node, inputs, {&result.output, &result.h_n, &result.c_n});
  }
  return result;
}

}  // namespace rnnkit::nn::detail
