// Memory capacity without training (examples/memory_capacity.hpp, docs/memory_capacity.md): stores N random
// key/value pairs in each mixer, reads every key back, and prints the mean relative recall error against the load
// N / dk, with √((N − 1) / dk), the crosstalk predicted for linear attention.
//
// Usage: example_memory_capacity [out_dir] [dk] [seeds]
//   out_dir  also write out_dir/memory_capacity.csv (mixer,n,load,error), for tools/plot_memory_capacity.py
//   dk       key dimension (dv = dk), default 64
//   seeds    draws per point, default 5
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "memory_capacity.hpp"

int main(int argc, char** argv) {
  try {
    const std::string out_dir = argc > 1 ? argv[1] : "";
    const ssm::index_t dk = argc > 2 ? std::atoll(argv[2]) : 64;
    const int seeds = argc > 3 ? std::atoi(argv[3]) : 5;
    const std::vector<memory_capacity::Point> points = memory_capacity::sweep(dk, seeds);

    std::printf("recall error |v_hat - v| / |v| (mean of %d draws), dk = dv = %lld, keys and values random unit\n",
                seeds, static_cast<long long>(dk));
    std::printf("%-28s", "N / dk");
    for (const auto& p : points)
      if (p.mixer == points.front().mixer) std::printf("%9.4g", p.load);
    std::printf("\n%-28s", "sqrt((N - 1) / dk)");
    for (const auto& p : points)
      if (p.mixer == points.front().mixer) std::printf("%9.3f", std::sqrt((static_cast<double>(p.n) - 1) / dk));
    for (std::size_t i = 0; i < points.size(); ++i) {
      if (i == 0 || points[i].mixer != points[i - 1].mixer) std::printf("\n%-28s", memory_capacity::name(points[i].mixer));
      std::printf("%9.3g", points[i].error);
    }
    std::printf("\n");

    if (!out_dir.empty()) {
      std::filesystem::create_directories(out_dir);
      const std::string path = out_dir + "/memory_capacity.csv";
      std::ofstream csv(path);
      csv << "mixer,n,load,error\n";
      for (const auto& p : points) csv << memory_capacity::id(p.mixer) << ',' << p.n << ',' << p.load << ',' << p.error << '\n';
      if (!csv) ssm::fail("example_memory_capacity: could not write ", path);
      std::printf("wrote %s\n", path.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
