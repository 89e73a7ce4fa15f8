// rnnkit command-line tool. Library errors become one line on stderr and
// exit code 2.
#include <cstring>
#include <iostream>
#include <string>

#include "rnnkit/rnnkit.h"

namespace {

const char* kUsage =
    "usage: rnnkit <command> [options]\n"
    "\n"
    "commands:\n"
    "  --version        print the version and exit\n"
    "  --help           print this help and exit\n";

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
      std::cout << kUsage;
      return argc < 2 ? 2 : 0;
    }
    if (std::strcmp(argv[1], "--version") == 0) {
      std::cout << "rnnkit " << rnnkit::version() << "\n";
      return 0;
    }
    std::cerr << "rnnkit: unknown command '" << argv[1] << "' (see rnnkit --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "rnnkit: " << e.what() << "\n";
    return 2;
  }
}
