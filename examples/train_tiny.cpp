// The hand-written i2h/i2o recurrent network, trained end to end on a
// synthetic task with nothing but tensors and autograd:
//
//   combined = cat(x_t, h)          h = tanh(i2h(combined))          y = i2o(combined)
//
// Task: read a sequence of random one-hot symbols and say which symbol came
// first (the network must carry it through the whole sequence). Prints the
// loss and accuracy falling/rising, and exits non-zero if it did not learn.
#include <cmath>
#include <cstdio>
#include <vector>

#include "rnnkit/rnnkit.h"

using namespace rnnkit;

namespace {

struct Params {
  Tensor i2h_w, i2h_b, i2o_w, i2o_b;
  std::vector<Tensor> all() const { return {i2h_w, i2h_b, i2o_w, i2o_b}; }
};

// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch.nn.Linear initialises.
Tensor linear_init(const Shape& shape, int64_t fan_in, Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  Tensor t = empty(shape);
  t.uniform_(-bound, bound, &gen);
  return t.requires_grad_();
}

}  // namespace

int main() {
  const int64_t symbols = 4, hidden = 32, steps = 6, batch = 32, iterations = 300;
  Generator gen(2024);
  Params p{linear_init({hidden, symbols + hidden}, symbols + hidden, gen),
           linear_init({hidden}, symbols + hidden, gen),
           linear_init({symbols, symbols + hidden}, symbols + hidden, gen),
           linear_init({symbols}, symbols + hidden, gen)};
  const double lr = 0.1;
  std::printf("i2h/i2o RNN: %lld symbols, hidden %lld, %lld steps, batch %lld\n",
              static_cast<long long>(symbols), static_cast<long long>(hidden), static_cast<long long>(steps),
              static_cast<long long>(batch));
  double first_loss = 0, last_loss = 0, last_acc = 0;
  for (int64_t it = 1; it <= iterations; ++it) {
    // Random symbol ids [steps, batch]; the label is the first symbol.
    Tensor ids = empty({steps, batch}, kInt64);
    int64_t* idp = ids.data_ptr<int64_t>();
    for (int64_t i = 0; i < steps * batch; ++i) idp[i] = static_cast<int64_t>(gen.next_below(symbols));
    Tensor labels = ids.select(0, 0).contiguous();
    Tensor onehot = embedding(eye(symbols), ids);  // [steps, batch, symbols]
    Tensor h = zeros({batch, hidden});
    Tensor logits;
    for (int64_t t = 0; t < steps; ++t) {
      Tensor combined = cat({onehot.select(0, t), h}, 1);
      h = tanh(linear(combined, p.i2h_w, p.i2h_b));
      logits = linear(combined, p.i2o_w, p.i2o_b);
    }
    // Cross-entropy from log_softmax and gather.
    Tensor logp = log_softmax(logits, 1);
    Tensor loss = -mean(gather(logp, 1, labels.unsqueeze(1)));
    for (Tensor& w : p.all()) w.set_grad(Tensor());
    loss.backward();
    {
      NoGradGuard guard;
      for (Tensor& w : p.all()) w.add_(w.grad(), -lr);
    }
    const double acc = eq(argmax(logits, 1), labels).to(kFloat32).mean().item();
    if (it == 1) first_loss = loss.item();
    last_loss = loss.item();
    last_acc = acc;
    if (it == 1 || it % 25 == 0)
      std::printf("iter %4lld  loss %.4f  accuracy %.3f\n", static_cast<long long>(it), loss.item(), acc);
  }
  const bool learned = last_loss < 0.5 * first_loss && last_acc > 0.9;
  std::printf("%s: loss %.4f -> %.4f, final accuracy %.3f\n", learned ? "learned" : "DID NOT LEARN", first_loss,
              last_loss, last_acc);
  return learned ? 0 : 1;
}
