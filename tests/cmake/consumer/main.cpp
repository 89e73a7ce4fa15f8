#include <rnnkit/rnnkit.h>

#include <iostream>

int main() {
  rnnkit::Tensor w = rnnkit::ones({2, 2}).requires_grad_();
  rnnkit::sum(rnnkit::matmul(w, w)).backward();
  const double g = rnnkit::sum(w.grad()).item();
  std::cout << "rnnkit " << rnnkit::version() << " grad sum " << g << "\n";
  return g == 16.0 ? 0 : 1;
}
