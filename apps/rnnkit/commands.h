#pragma once
// Subcommands of the rnnkit CLI. Each lives in its own cmd_<name>.cpp, gets
// the arguments after its name, returns the exit code, and throws
// rnnkit::Error for bad input (main prints one line and exits 2).
#include <functional>
#include <string>
#include <vector>

namespace rnnkit::cli {

struct Command {
  const char* name;
  const char* summary;
  std::function<int(const std::vector<std::string>& args)> run;
};

// Every command registers itself with a static Registration in its file.
std::vector<Command>& commands();
struct Registration {
  explicit Registration(Command c) { commands().push_back(std::move(c)); }
};

}  // namespace rnnkit::cli
