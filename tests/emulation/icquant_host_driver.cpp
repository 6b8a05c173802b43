// icquant_host_driver.cpp -- runs the kernels of fast/kernels/icquant.cu on the CPU
// (cuda_host.h), for tests/test_icquant_host_emulation.py.
//
//   icquant_host_driver DIR m n k b B wpr nseg batch
// reads DIR/{words,inb,outb,stream,row_bit,seg_bit,seg_pos,seg_found,seg_row,seg_len,x}.bin
// (the layout of fast.cuda.icquant.build_layout, x (batch, n) float32) and writes
// DIR/{pos,W,y}.bin: icq_decode_positions, icq_dequantize_inliers + icq_scatter_outliers,
// icq_matvec_b<batch>. Build: g++ -std=c++20 -O2 -pthread -DICQ_THREADS=64 icquant_host_driver.cpp
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "cuda_host.h"

// __shfl_up_sync is not in cuda_host.h: lanes below d keep their own value
template <class T>
inline T __shfl_up_sync(unsigned, T v, int d) {
  const int lane = (int)(threadIdx.x & 31);
  return emu::shfl_from(v, lane >= d ? lane - d : lane);
}

#include "../../fast/kernels/icquant.cu"

template <class T>
std::vector<T> read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::vector<char> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<T> out(raw.size() / sizeof(T) + 1);
  if (!raw.empty()) std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

template <class T>
void write(const std::string& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), (std::streamsize)(v.size() * sizeof(T)));
}

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: %s DIR m n k b B wpr nseg batch\n", argv[0]);
    return 2;
  }
  const std::string d = argv[1];
  const int m = std::stoi(argv[2]), n = std::stoi(argv[3]), k = std::stoi(argv[4]);
  const int b = std::stoi(argv[5]), B = std::stoi(argv[6]), wpr = std::stoi(argv[7]);
  const int nseg = std::stoi(argv[8]), batch = std::stoi(argv[9]);
  auto words = read<unsigned int>(d + "/words.bin");
  auto inb = read<float>(d + "/inb.bin");
  auto outb = read<float>(d + "/outb.bin");
  auto stream = read<unsigned char>(d + "/stream.bin");
  auto row_bit = read<long long>(d + "/row_bit.bin");
  auto seg_bit = read<long long>(d + "/seg_bit.bin");
  auto seg_pos = read<int>(d + "/seg_pos.bin");
  auto seg_found = read<int>(d + "/seg_found.bin");
  auto seg_row = read<int>(d + "/seg_row.bin");
  auto seg_len = read<int>(d + "/seg_len.bin");
  auto x = read<float>(d + "/x.bin");
  const unsigned T = ICQ_THREADS;

  std::vector<int> pos((size_t)m * k + 1, -1);
  emu::launch((nseg + T - 1) / T, T, 0, [&] {
    icq_decode_positions(stream.data(), seg_bit.data(), seg_pos.data(), seg_found.data(), seg_row.data(),
                         seg_len.data(), nseg, B, k, pos.data());
  });
  pos.resize((size_t)m * k);
  write(d + "/pos.bin", pos);

  std::vector<float> W((size_t)m * n, 0.f);
  emu::launch((unsigned)(((long long)m * n + T - 1) / T), T, 0, [&] {
    icq_dequantize_inliers(words.data(), inb.data(), m, n, wpr, b, W.data());
  });
  if (k)
    emu::launch((unsigned)(((long long)m * k + T - 1) / T), T, 0, [&] {
      icq_scatter_outliers(words.data(), outb.data(), pos.data(), m, n, k, wpr, b, W.data());
    });
  write(d + "/W.bin", W);

  std::vector<float> y((size_t)batch * m, 0.f);
  const unsigned grid = (unsigned)((m + T / 32 - 1) / (T / 32));
  emu::launch(grid, T, 0, [&] {
    switch (batch) {
      case 1: icq_matvec_b1(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 2: icq_matvec_b2(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 3: icq_matvec_b3(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 4: icq_matvec_b4(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 5: icq_matvec_b5(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 6: icq_matvec_b6(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 7: icq_matvec_b7(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      case 8: icq_matvec_b8(words.data(), inb.data(), outb.data(), stream.data(), row_bit.data(), x.data(), m, n, wpr, b, B, y.data()); break;
      default: throw std::runtime_error("batch must be 1..8");
    }
  });
  write(d + "/y.bin", y);
  return 0;
}
