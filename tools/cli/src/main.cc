// atp: the command-line tool. Everything happens in RunCli (cli.h).
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return atp::cli::RunCli(args, std::cout, std::cerr, isatty(STDERR_FILENO) != 0);
}
