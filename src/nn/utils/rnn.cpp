// Packing and padding of variable-length batches (torch.nn.utils.rnn). Each
// conversion is a row gather with a precomputed index (padding rows take a
// fill value), recorded as one autograd node whose backward scatters the
// gradient rows back.
#include "rnnkit/nn/utils/rnn.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "autograd/function.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"
#include "tensor/tensor_impl.h"

namespace rnnkit::nn::utils::rnn {

namespace {

// PyTorch's legacy type names, as its packing errors print them.
const char* legacy_type_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::Float32: return "Float";
    case Dtype::Float64: return "Double";
    case Dtype::Int64: return "Long";
    case Dtype::Bool: return "Bool";
    case Dtype::BFloat16: return "BFloat16";
    case Dtype::Float16: return "Half";
  }
  return "?";
}

// out[i] = src row index[i] (a row = the product of src's dims after the first
// `lead` ones), or fill where index[i] < 0. src is viewed as [src_rows, width].
// Differentiable in src: the backward adds gradient row i into row index[i].
Tensor gather_rows(const Tensor& src, int64_t width, const std::vector<int64_t>& index, const Shape& out_shape,
                   double fill, const char* op) {
  const Tensor s = native::contiguous(src.detach());
  Tensor out = empty(out_shape, TensorOptions(src.dtype()));
  const int64_t rows = static_cast<int64_t>(index.size());
  dispatch_all(src.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* in = s.const_data_ptr<T>();
    T* o = out.data_ptr<T>();
    const T pad = static_cast<T>(fill);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t from = index[static_cast<size_t>(i)];
      if (from >= 0)
        std::memcpy(o + i * width, in + from * width, static_cast<size_t>(width) * sizeof(T));
      else
        std::fill(o + i * width, o + (i + 1) * width, pad);
    }
  });
  const Shape src_shape = src.sizes();
  return autograd::record(op, {src}, out, [index, src_shape, width, op](const autograd::tensor_list& g) {
    Tensor grad = zeros(src_shape, TensorOptions(g[0].dtype()));
    const Tensor go = native::contiguous(g[0]);
    dispatch_floating(go.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T* in = go.const_data_ptr<T>();
      T* d = grad.data_ptr<T>();
      for (size_t i = 0; i < index.size(); ++i) {
        if (index[i] < 0) continue;
        T* row = d + index[i] * width;
        const T* from = in + static_cast<int64_t>(i) * width;
        for (int64_t j = 0; j < width; ++j) row[j] += from[j];
      }
    });
    return autograd::tensor_list{grad};
  });
}

// Product of the dims after the first two ([T, N, *] -> prod(*)).
int64_t trailing_width(const Shape& shape) {
  int64_t w = 1;
  for (size_t i = 2; i < shape.size(); ++i) w *= shape[i];
  return w;
}

}  // namespace

PackedSequence pack_padded_sequence(const Tensor& input, const Tensor& lengths, bool batch_first, bool enforce_sorted) {
  RNNKIT_CHECK(input.defined(), "pack_padded_sequence: input is an undefined tensor");
  RNNKIT_CHECK(input.dim() >= 2, "pack_padded_sequence: input must have at least 2 dimensions, [T, N, *] (or [N, T, *] "
               "with batch_first), got a ", input.dim(), "-D tensor of shape ", shape_str(input.sizes()));
  RNNKIT_CHECK(lengths.defined(), "pack_padded_sequence: lengths is an undefined tensor");
  RNNKIT_CHECK(lengths.dim() == 1 && lengths.dtype() == kInt64 && lengths.device().is_cpu(),
               "pack_padded_sequence: 'lengths' argument should be a 1D CPU int64 tensor, but got ", lengths.dim(),
               "D cpu ", legacy_type_name(lengths.dtype()), " tensor");
  const int64_t steps = input.size(batch_first ? 1 : 0);
  const int64_t batch = input.size(batch_first ? 0 : 1);
  RNNKIT_CHECK(lengths.numel() == batch, "pack_padded_sequence: Expected `len(lengths)` to be equal to batch_size, but got ",
               lengths.numel(), " (batch_size=", batch, ")");
  RNNKIT_CHECK(batch > 0, "pack_padded_sequence: the batch is empty (input of shape ", shape_str(input.sizes()), ")");
  std::vector<int64_t> len = lengths.to_vector<int64_t>();

  // Sequence order of the packed rows: longest first.
  std::vector<int64_t> order(static_cast<size_t>(batch));
  std::iota(order.begin(), order.end(), 0);
  if (enforce_sorted) {
    for (size_t b = 1; b < len.size(); ++b)
      RNNKIT_CHECK(len[b] <= len[b - 1],
                   "pack_padded_sequence: `lengths` array must be sorted in decreasing order when `enforce_sorted` is "
                   "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep "
                   "this requirement if you do not need ONNX exportability. (lengths[",
                   b - 1, "] = ", len[b - 1], ", lengths[", b, "] = ", len[b], ")");
  } else {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return len[static_cast<size_t>(a)] > len[static_cast<size_t>(b)];
    });
  }
  for (size_t b = 0; b < len.size(); ++b) {
    RNNKIT_CHECK(len[b] > 0, "pack_padded_sequence: Length of all samples has to be greater than 0, but found an "
                 "element in 'lengths' that is <= 0 (lengths[", b, "] = ", len[b], ")");
    RNNKIT_CHECK(len[b] <= steps, "pack_padded_sequence: lengths[", b, "] = ", len[b],
                 " is longer than the input's sequence length ", steps, " (input of shape ", shape_str(input.sizes()),
                 batch_first ? ", batch_first" : "", ")");
  }

  const int64_t longest = len[static_cast<size_t>(order[0])];
  std::vector<int64_t> batch_sizes(static_cast<size_t>(longest), 0);
  for (int64_t l : len)
    for (int64_t t = 0; t < l; ++t) ++batch_sizes[static_cast<size_t>(t)];
  std::vector<int64_t> index;
  for (int64_t t = 0; t < longest; ++t)
    for (int64_t j = 0; j < batch_sizes[static_cast<size_t>(t)]; ++j) {
      const int64_t b = order[static_cast<size_t>(j)];
      index.push_back(batch_first ? b * steps + t : t * batch + b);
    }

  Shape data_shape = input.sizes();
  data_shape.erase(data_shape.begin());
  data_shape[0] = static_cast<int64_t>(index.size());
  PackedSequence out;
  out.data = gather_rows(input, trailing_width(input.sizes()), index, data_shape, 0.0, "PackPaddedSequenceBackward0");
  out.batch_sizes = from_vector(batch_sizes, {longest});
  if (!enforce_sorted) {
    std::vector<int64_t> unsorted(order.size());
    for (size_t j = 0; j < order.size(); ++j) unsorted[static_cast<size_t>(order[j])] = static_cast<int64_t>(j);
    out.sorted_indices = from_vector(order, {batch});
    out.unsorted_indices = from_vector(unsorted, {batch});
  }
  return out;
}

PackedSequence pack_padded_sequence(const Tensor& input, const std::vector<int64_t>& lengths, bool batch_first,
                                    bool enforce_sorted) {
  return pack_padded_sequence(input, from_vector(lengths, {static_cast<int64_t>(lengths.size())}), batch_first,
                              enforce_sorted);
}

PaddedSequence pad_packed_sequence(const PackedSequence& sequence, bool batch_first, double padding_value,
                                   int64_t total_length) {
  const Tensor& data = sequence.data;
  RNNKIT_CHECK(data.defined() && sequence.batch_sizes.defined(),
               "pad_packed_sequence: the PackedSequence has an undefined data or batch_sizes tensor");
  RNNKIT_CHECK(data.dim() >= 1, "pad_packed_sequence: PackedSequence.data must have at least 1 dimension");
  RNNKIT_CHECK(sequence.batch_sizes.dim() == 1 && sequence.batch_sizes.dtype() == kInt64 &&
                   sequence.batch_sizes.numel() > 0,
               "pad_packed_sequence: PackedSequence.batch_sizes must be a non-empty 1-D int64 tensor, got ",
               dtype_name(sequence.batch_sizes.dtype()), " ", shape_str(sequence.batch_sizes.sizes()));
  const std::vector<int64_t> batch_sizes = sequence.batch_sizes.to_vector<int64_t>();
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  const int64_t batch = batch_sizes[0];
  int64_t rows = 0;
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    RNNKIT_CHECK(batch_sizes[t] > 0 && (t == 0 || batch_sizes[t] <= batch_sizes[t - 1]),
                 "pad_packed_sequence: PackedSequence.batch_sizes must be positive and non-increasing, got ",
                 batch_sizes[t], " at step ", t);
    rows += batch_sizes[t];
  }
  RNNKIT_CHECK(rows == data.size(0), "pad_packed_sequence: PackedSequence.data has ", data.size(0),
               " rows but sum(batch_sizes) is ", rows);
  int64_t out_steps = steps;
  if (total_length >= 0) {
    RNNKIT_CHECK(total_length >= steps,
                 "pad_packed_sequence: Expected total_length to be at least the length of the longest sequence in "
                 "input, but got total_length=",
                 total_length, " and max sequence length being ", steps);
    out_steps = total_length;
  }
  std::vector<int64_t> unsorted(static_cast<size_t>(batch));
  std::iota(unsorted.begin(), unsorted.end(), 0);
  if (sequence.unsorted_indices.defined()) {
    RNNKIT_CHECK(sequence.unsorted_indices.numel() == batch && sequence.unsorted_indices.dtype() == kInt64,
                 "pad_packed_sequence: PackedSequence.unsorted_indices must be int64 with batch_sizes[0] = ", batch,
                 " entries, got ", dtype_name(sequence.unsorted_indices.dtype()), " ",
                 shape_str(sequence.unsorted_indices.sizes()));
    unsorted = sequence.unsorted_indices.to_vector<int64_t>();
    for (int64_t j : unsorted)
      RNNKIT_CHECK(j >= 0 && j < batch, "pad_packed_sequence: PackedSequence.unsorted_indices has the value ", j,
                   ", outside [0, ", batch, ")");
  }
  // Length of the j-th packed sequence, and the first row of each step.
  std::vector<int64_t> sorted_len(static_cast<size_t>(batch), 0), offset(static_cast<size_t>(steps), 0);
  for (int64_t t = 0; t < steps; ++t) {
    if (t > 0) offset[static_cast<size_t>(t)] = offset[static_cast<size_t>(t - 1)] + batch_sizes[static_cast<size_t>(t - 1)];
    for (int64_t j = 0; j < batch_sizes[static_cast<size_t>(t)]; ++j) ++sorted_len[static_cast<size_t>(j)];
  }
  std::vector<int64_t> index(static_cast<size_t>(out_steps * batch), -1);
  std::vector<int64_t> lengths(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t j = unsorted[static_cast<size_t>(i)];
    lengths[static_cast<size_t>(i)] = sorted_len[static_cast<size_t>(j)];
    for (int64_t t = 0; t < sorted_len[static_cast<size_t>(j)]; ++t) {
      const int64_t out_row = batch_first ? i * out_steps + t : t * batch + i;
      index[static_cast<size_t>(out_row)] = offset[static_cast<size_t>(t)] + j;
    }
  }
  Shape shape = data.sizes();
  shape.erase(shape.begin());
  shape.insert(shape.begin(), batch_first ? out_steps : batch);
  shape.insert(shape.begin(), batch_first ? batch : out_steps);
  int64_t width = 1;
  for (int64_t d = 1; d < data.dim(); ++d) width *= data.size(d);
  PaddedSequence out;
  out.padded = gather_rows(data, width, index, shape, padding_value, "PadPackedSequenceBackward0");
  out.lengths = from_vector(lengths, {batch});
  return out;
}

Tensor pad_sequence(const std::vector<Tensor>& sequences, bool batch_first, double padding_value) {
  RNNKIT_CHECK(!sequences.empty(), "pad_sequence: received an empty list of sequences");
  const Tensor& first = sequences[0];
  RNNKIT_CHECK(first.defined() && first.dim() >= 1, "pad_sequence: sequence 0 must be a tensor of at least 1 dimension");
  const Shape trailing(first.sizes().begin() + 1, first.sizes().end());
  int64_t longest = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const Tensor& s = sequences[i];
    RNNKIT_CHECK(s.defined() && s.dim() == first.dim() && Shape(s.sizes().begin() + 1, s.sizes().end()) == trailing,
                 "pad_sequence: every sequence must have the shape [L, *] of sequence 0 (", shape_str(first.sizes()),
                 ") apart from L, but sequence ", i, " has shape ", s.defined() ? shape_str(s.sizes()) : "undefined");
    RNNKIT_CHECK(s.dtype() == first.dtype(), "pad_sequence: sequence ", i, " has dtype ", dtype_name(s.dtype()),
                 " but sequence 0 has ", dtype_name(first.dtype()));
    longest = std::max(longest, s.size(0));
  }
  const int64_t batch = static_cast<int64_t>(sequences.size());
  std::vector<int64_t> index(static_cast<size_t>(longest * batch), -1);
  int64_t start = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t len = sequences[static_cast<size_t>(i)].size(0);
    for (int64_t t = 0; t < len; ++t) index[static_cast<size_t>(batch_first ? i * longest + t : t * batch + i)] = start + t;
    start += len;
  }
  int64_t width = 1;
  for (int64_t d : trailing) width *= d;
  Shape shape = trailing;
  shape.insert(shape.begin(), batch_first ? longest : batch);
  shape.insert(shape.begin(), batch_first ? batch : longest);
  const Tensor all = sequences.size() == 1 ? first : cat(sequences, 0);
  return gather_rows(all, width, index, shape, padding_value, "PadSequenceBackward0");
}

PackedSequence pack_sequence(const std::vector<Tensor>& sequences, bool enforce_sorted) {
  std::vector<int64_t> lengths;
  lengths.reserve(sequences.size());
  for (const Tensor& s : sequences) lengths.push_back(s.defined() && s.dim() >= 1 ? s.size(0) : 0);
  return pack_padded_sequence(pad_sequence(sequences, false, 0.0), lengths, false, enforce_sorted);
}

}  // namespace rnnkit::nn::utils::rnn
