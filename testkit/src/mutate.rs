//! A seeded mutation fuzzer for the project's inputs from outside (plans, envelopes, engine
//! streams, GGUF headers, Docker and Ollama replies), with counts: each class runs a stated
//! number of inputs and reports how many were accepted, refused with an error, and how many
//! panicked. `bench/fuzz.sh` runs every class at 10,000 inputs and prints the table.
//!
//! Inputs are valid samples with 1–4 mutations each: bit flips, bytes that matter to the formats
//! (quotes, brackets, separators, NUL, 0xFF, newlines), deletions, duplications, truncations,
//! splices from another sample and number-like tokens swapped for extreme values. The generator
//! is a fixed-seed xorshift, so a run is repeatable: a failure names the class, seed and index.

/// How many inputs a class runs: `$FUZZ_CASES`, else `default` (small, for `cargo test`).
pub fn cases(default: usize) -> usize {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A tiny deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// Bytes the project's formats give meaning to.
const SPECIAL: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\n",
    b"\r\n",
    b"\0",
    b"\xff",
    b"\xc3",
    b"=",
    b"'",
    b"data: ",
    b"[DONE]",
    b"null",
    b"true",
    b"-",
    b"e",
    b"#",
    b"\t",
    b"\\u0000",
    b"\xf0\x9f",
];

/// Values that break arithmetic and allocation when a parser trusts them.
const EXTREME: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "1e309",
    "-1e309",
    "NaN",
    "4294967295",
    "4294967296",
    "1.5",
    "\"1\"",
    "null",
    "[]",
    "{}",
];

/// One mutated copy of a sample chosen from `samples`.
pub fn mutate(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    let mut b = samples.get(rng.below(samples.len())).cloned().unwrap_or_default();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = b.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let s = SPECIAL[rng.below(SPECIAL.len())];
                b.splice(at..at, s.iter().copied());
            }
            2 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                b.drain(at.min(len)..end);
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(256)).min(len);
                let piece: Vec<u8> = b[at.min(len)..end].to_vec();
                b.splice(at..at, piece);
            }
            4 => b.truncate(at),
            5 => {
                let other = samples.get(rng.below(samples.len())).cloned().unwrap_or_default();
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            6 => {
                // Swap a run of digits for an extreme value.
                if let Some(start) = (at..len).find(|&i| b[i].is_ascii_digit()) {
                    let end = (start..len).find(|&i| !b[i].is_ascii_digit() && b[i] != b'.').unwrap_or(len);
                    let v = EXTREME[rng.below(EXTREME.len())].as_bytes();
                    b.splice(start..end, v.iter().copied());
                }
            }
            _ => {
                let n = 1 + rng.below(8);
                let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, noise);
            }
        }
    }
    b
}

/// What one class's run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The input class, e.g. `plan-toml`.
    pub class: String,
    /// Inputs tried.
    pub inputs: usize,
    /// Inputs the code accepted.
    pub accepted: usize,
    /// Inputs refused with an error.
    pub refused: usize,
    /// Inputs that panicked (must be 0), with the first one's index.
    pub panics: usize,
    /// The index of the first panicking input.
    pub first_panic: Option<usize>,
}

impl Tally {
    /// A tally for `class`.
    pub fn new(class: &str) -> Tally {
        Tally { class: class.to_string(), ..Tally::default() }
    }

    /// Counts one outcome: `Ok(true)` accepted, `Ok(false)` refused, `Err(())` panicked.
    pub fn count(&mut self, outcome: Result<bool, ()>) {
        match outcome {
            Ok(true) => self.accepted += 1,
            Ok(false) => self.refused += 1,
            Err(()) => {
                self.first_panic.get_or_insert(self.inputs);
                self.panics += 1;
            }
        }
        self.inputs += 1;
    }

    /// Prints the line `bench/fuzz.sh` collects and fails the test on any panic.
    pub fn report(&self) {
        println!(
            "FUZZ class={} inputs={} accepted={} refused={} panics={}",
            self.class, self.inputs, self.accepted, self.refused, self.panics
        );
        assert_eq!(
            self.panics, 0,
            "{}: input #{:?} panicked (rerun with the same FUZZ_CASES to reproduce)",
            self.class, self.first_panic
        );
    }
}

/// Runs `f` on `n` mutations of `samples` (seeded by the class name), counting panics as such
/// (a panic's message is printed as usual, so the input can be found).
pub fn run(class: &str, samples: &[Vec<u8>], n: usize, mut f: impl FnMut(&[u8]) -> bool) -> Tally {
    let seed = class.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3));
    let mut rng = Rng::new(seed);
    let mut t = Tally::new(class);
    for _ in 0..n {
        let input = mutate(&mut rng, samples);
        t.count(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&input))).map_err(|_| ()));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_panics_are_counted() {
        let samples = vec![b"{\"a\": 12, \"b\": [1, 2]}".to_vec()];
        let a: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..50).map(|_| mutate(&mut r, &samples)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..50).map(|_| mutate(&mut r, &samples)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|m| m != &samples[0]), "mutations change the input");
        let t = run("t", &samples, 100, |input| {
            assert!(input.len() != 3, "a scripted panic");
            serde_json::from_slice::<serde_json::Value>(input).is_ok()
        });
        assert_eq!(t.inputs, 100);
        assert_eq!(t.accepted + t.refused + t.panics, 100);
        assert!(t.panics > 0 && t.first_panic.is_some(), "the scripted panics are counted: {t:?}");
        assert!(t.refused > 0, "{t:?}");
    }
}
