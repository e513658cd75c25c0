//! Runs every fuzz target body on stable: over its seed corpus, then over inputs mutated from
//! the seeds and plain random bytes. Keeps the targets compiling and their assertions honest
//! without nightly; the coverage-guided runs are `scripts/fuzz`.

use std::path::{Path, PathBuf};

use aether_fuzz::TARGETS;

/// Generated inputs per target. `AETHER_FUZZ_ITERATIONS` raises it for a longer local run.
fn iterations() -> usize {
    std::env::var("AETHER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// xorshift64*: deterministic, so a failure reproduces with the same iteration count.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the formats under test, so mutations reach past the first parse.
const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\n",
    b"\t",
    b".",
    b"%",
    b"*",
    b">",
    b"%2A",
    b"%FF",
    b"null",
    b"-1",
    b"0",
    b"1",
    b"18446744073709551615",
    b"1e999",
    b"\"v\":1",
    b"\"v\":2",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3\xa9",
    b"9999-12-31T23:59:60Z",
    b"+10000-01-01T00:00:00Z",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = if seeds.is_empty() || rng.below(8) == 0 {
        (0..rng.below(64)).map(|_| rng.next() as u8).collect()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            3 if !seeds.is_empty() => {
                // Splice a slice of another seed in.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(32)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            4 => out.truncate(at),
            _ => out.insert(at, rng.next() as u8),
        }
    }
    out
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn every_target_has_a_binary_and_seeds() {
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    for (name, _) in TARGETS {
        assert!(
            bins.join(format!("{name}.rs")).is_file(),
            "no fuzz_targets/{name}.rs"
        );
        assert!(seeds(name).len() >= 3, "corpus/{name} needs a few seeds");
    }
    let listed = std::fs::read_dir(&bins).unwrap().count();
    assert_eq!(
        listed,
        TARGETS.len(),
        "a fuzz target is missing from TARGETS"
    );
}

#[test]
fn targets_hold_on_seeds_and_mutations() {
    for (name, body) in TARGETS {
        let seeds = seeds(name);
        for (path, bytes) in &seeds {
            let outcome = std::panic::catch_unwind(|| body(bytes));
            assert!(outcome.is_ok(), "{name} failed on seed {}", path.display());
        }
        let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        for i in 0..iterations() {
            let input = mutate(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| body(&input));
            assert!(
                outcome.is_ok(),
                "{name} failed on generated input #{i}: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
