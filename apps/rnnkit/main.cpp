// rnnkit command-line tool. Library errors become one line on stderr and
// exit code 2.
#include <algorithm>
#include <cstring>
#include <iostream>
#include <string>

#include "commands.h"
#include "rnnkit/rnnkit.h"

namespace rnnkit::cli {
std::vector<Command>& commands() {
  static std::vector<Command> all;
  return all;
}
}  // namespace rnnkit::cli

namespace {

void print_usage(std::ostream& os) {
  auto cmds = rnnkit::cli::commands();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return std::strcmp(a.name, b.name) < 0; });
  os << "usage: rnnkit <command> [options]   (rnnkit <command> --help for its options)\n\ncommands:\n";
  for (const auto& c : cmds) os << "  " << c.name << std::string(12 - std::min<size_t>(11, std::strlen(c.name)), ' ') << c.summary << "\n";
  os << "\n  --version   print the version\n  --help      print this help\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) {
      print_usage(std::cerr);
      return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      print_usage(std::cout);
      return 0;
    }
    if (cmd == "--version") {
      std::cout << "rnnkit " << rnnkit::version() << "\n";
      return 0;
    }
    for (const auto& c : rnnkit::cli::commands())
      if (cmd == c.name) return c.run(std::vector<std::string>(argv + 2, argv + argc));
    std::cerr << "rnnkit: unknown command '" << cmd << "' (see rnnkit --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::cerr << "rnnkit: error: " << msg << "\n";
    return 2;
  }
}
