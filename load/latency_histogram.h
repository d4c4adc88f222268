#pragma once
// Latency histogram for load runs, in the manner of HdrHistogram: values in
// nanoseconds land in log-linear buckets whose width is at most 1/1024 of
// their value, so every percentile is exact to 3 significant digits from 1 µs
// up to 2^36 ns (about 69 s; larger values count as the maximum). Recording
// is a shift and an increment. One histogram per thread; merge() to combine.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace evpipe::load {

class latency_histogram {
 public:
  static constexpr int sub_bits = 11;                     // 2048 sub-buckets per power of two
  static constexpr int max_shift = 36 - sub_bits + 1;     // covers values below 2^36 ns
  static constexpr size_t slots = (max_shift + 1) * (1u << (sub_bits - 1)) + (1u << (sub_bits - 1));

  latency_histogram() : counts_(slots, 0) {}

  void record(int64_t ns) noexcept {
    uint64_t v = ns < 0 ? 0 : static_cast<uint64_t>(ns);
    if (v >= (uint64_t{1} << 36)) v = (uint64_t{1} << 36) - 1;
    ++counts_[index_of(v)];
    ++total_;
    if (v > max_) max_ = v;
  }
  void merge(const latency_histogram& o);

  [[nodiscard]] uint64_t count() const noexcept { return total_; }
  [[nodiscard]] uint64_t max() const noexcept { return max_; }
  // The value at percentile p (0 < p <= 100): the highest value of the bucket
  // holding the ceil(p% * count)-th smallest recorded value.
  [[nodiscard]] uint64_t percentile(double p) const;

  // HdrHistogram's text percentile distribution (values in milliseconds).
  [[nodiscard]] std::string distribution() const;

  static size_t index_of(uint64_t v) noexcept {
    int width = 64 - __builtin_clzll(v | 1);
    int shift = width > sub_bits ? width - sub_bits : 0;
    // For shift > 0 the leading bit is set, so (v >> shift) is in [1024, 2047].
    return static_cast<size_t>(shift) * (1u << (sub_bits - 1)) + static_cast<size_t>(v >> shift);
  }
  static uint64_t highest_of(size_t index) noexcept {
    constexpr size_t half = 1u << (sub_bits - 1);
    size_t shift = index < 2 * half ? 0 : (index - half) / half;
    uint64_t sub = index - shift * half;
    return ((sub + 1) << shift) - 1;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace evpipe::load
