// A baseline for benchmarks and tests, not used by the replicator.
#pragma once

#include <cstddef>
#include <cstdint>

namespace romulus::compress {

// Our own re-implementation of the *shape* of QEMU's scalar
// xbzrle_encode_buffer (it is not QEMU's code): byte loops up to a word
// boundary, then 8-byte compares inside zero runs, a has-zero-byte word test
// inside change runs, and a byte loop to find each run's exact end. Lets
// `romulus bench codec` measure our encoders against that design in one run
// on the same data. One deliberate difference: the cap check is exact (QEMU
// gives up when fewer than 2 bytes remain before a varint), so the output is
// byte-identical to EncodeDeltaScalar and the tests can hold it to that.
int EncodeDeltaQemuStyle(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out,
                         size_t cap);

// Reads every byte of both pages and returns whether they differ, with no
// early exit: the memory-bound ceiling any encoder that must look at both
// pages can reach. Uses AVX2 when the CPU has it.
bool ReadBothPages(const uint8_t* old_page, const uint8_t* new_page);

}  // namespace romulus::compress
