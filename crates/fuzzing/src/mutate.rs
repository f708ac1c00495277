//! Deterministic byte mutations in the spirit of libFuzzer's: bit flips,
//! byte sets, erasures, insertions, truncation, splices with another input,
//! and "interesting" integers (0, -1, 2^n boundaries) written in both
//! endiannesses, since most of our parsers read little-endian headers.

/// xorshift64*: small, seeded, good enough to spread mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x0100_0000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_ffff,
];

/// One to four mutations of `base`, some taking bytes from `other`.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(64));
                v.drain(i..i + n);
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            4 if !v.is_empty() => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = a + 1 + rng.below((other.len() - a).min(256));
                let i = rng.below(v.len() + 1);
                v.splice(i..i, other[a..b].iter().copied());
            }
            6 | 7 if v.len() >= 8 => {
                let val = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                let i = rng.below(v.len() - width + 1);
                let bytes = if rng.below(2) == 0 {
                    val.to_le_bytes()
                } else {
                    val.to_be_bytes()
                };
                let src = if bytes[0] == 0 && width < 8 && rng.below(2) == 0 {
                    &bytes[8 - width..]
                } else {
                    &bytes[..width]
                };
                v[i..i + width].copy_from_slice(src);
            }
            _ => {
                // Repeat a chunk: long runs find quadratic paths and length
                // limits.
                if !v.is_empty() {
                    let a = rng.below(v.len());
                    let b = a + 1 + rng.below((v.len() - a).min(32));
                    let chunk = v[a..b].to_vec();
                    let times = 1 + rng.below(64);
                    for _ in 0..times {
                        v.splice(b..b, chunk.iter().copied());
                    }
                }
            }
        }
    }
    v
}
