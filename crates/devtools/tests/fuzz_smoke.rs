//! The stable-toolchain fuzz smoke run: for every target of `switchyard_devtools::fuzzing`, feed
//! every committed corpus and regression input (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`), then a deterministic mutation loop (bit flips, byte
//! inserts and deletes, truncations, splices of two inputs, interesting tokens; seeded
//! RNG) bounded by time and iterations.
//!
//! A panic fails the test; the input is written under the cargo target's tmp dir and its
//! path printed, to be copied into `fuzz/regressions/<target>/` (docs/fuzzing.md).
//!
//! Knobs (environment): `FUZZ_SMOKE_SECONDS` per target (default 2), `FUZZ_SMOKE_ITERATIONS`
//! per target (default 20,000), `FUZZ_SMOKE_SEED` (default fixed).

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_devtools::fuzzing::TARGETS;

/// Largest mutant the loop builds.
const MAX_LEN: usize = 16 * 1024;

/// Byte strings that tend to reach edge cases in the decoders.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"=",
    b"\n",
    b"\r\n",
    b"\0",
    b" ",
    b".",
    b"/",
    b"*",
    b"-",
    b"0",
    b"-1",
    b"65535",
    b"65536",
    b"4294967296",
    b"18446744073709551616",
    b"1e999",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\"",
    b"::",
    b"[::1]",
    b"::ffff:1.2.3.4",
    b"\xc3\xa9",
    b"\xff",
    b"%",
    b"\\u0000",
    b"\"port\":0",
    b"[[routes]]",
    b"type = \"static\"",
];

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    dir.canonicalize().unwrap_or(dir)
}

/// The files of `dir`, sorted by name (README files aside); none when it is missing.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with("README") && name != ".gitkeep"
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Runs `target` on `data`. On a panic returns the failure text; a mutant (`saved`
/// false: no file holds it yet) is first written to a file named in that text.
fn run_one(
    name: &str,
    target: fn(&[u8]),
    data: &[u8],
    origin: &str,
    saved: bool,
) -> Result<(), String> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| target(data)));
    let Err(payload) = outcome else {
        return Ok(());
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(non-string panic)".into());
    if saved {
        return Err(format!("{name} panicked on {origin}: {message}"));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-crashes")
        .join(name);
    std::fs::create_dir_all(&dir).expect("crash dir");
    let file = dir.join(format!("crash-{:016x}", fnv1a(data)));
    std::fs::write(&file, data).expect("write crash input");
    Err(format!(
        "{name} panicked on {origin}: {message}\n  input saved to {}\n  keep it as a regression: cp {} fuzz/regressions/{name}/",
        file.display(),
        file.display()
    ))
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One to four random edits of `input`, some borrowing from `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            // Flip one bit.
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            // Insert a random byte.
            1 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            // Delete a range.
            2 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(16)).min(data.len());
                data.drain(start..end);
            }
            // Truncate.
            3 if !data.is_empty() => data.truncate(rng.below(data.len())),
            // Splice: a prefix of this input and a suffix of the other.
            4 => {
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // Insert an interesting token.
            5 => {
                let i = rng.below(data.len() + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(i..i, token.iter().copied());
            }
            // Overwrite a byte with an interesting one.
            6 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *TOKENS[rng.below(TOKENS.len())].first().unwrap_or(&0);
            }
            // Duplicate a chunk in place (nesting, repetition).
            _ if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(64)).min(data.len());
                let chunk = data[start..end].to_vec();
                data.splice(end..end, chunk);
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(MAX_LEN);
    data
}

/// Replays the corpus and the regressions of `name`, then mutates for a bounded time.
fn smoke(name: &str) {
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1;
    let corpus = inputs(&fuzz_dir().join("corpus").join(name));
    let regressions = inputs(&fuzz_dir().join("regressions").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is empty or missing: commit seed inputs"
    );
    let mut failures = Vec::new();
    for (path, data) in corpus.iter().chain(&regressions) {
        if let Err(failure) = run_one(name, target, data, &path.display().to_string(), true) {
            failures.push(failure);
        }
    }

    let seconds = env_number("FUZZ_SMOKE_SECONDS", 2);
    let iterations = env_number("FUZZ_SMOKE_ITERATIONS", 20_000);
    let seed = env_number("FUZZ_SMOKE_SEED", 0x5EED_5717_C4A7_D00D) ^ fnv1a(name.as_bytes());
    let mut rng = Rng(seed | 1);
    let pool: Vec<&[u8]> = corpus
        .iter()
        .chain(&regressions)
        .map(|(_, d)| d.as_slice())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut current = pool[0].to_vec();
    let mut done = 0u64;
    while done < iterations && Instant::now() < deadline && failures.len() < 5 {
        // Mostly start from a corpus input; sometimes keep mutating the last mutant.
        let base = if rng.below(4) == 0 {
            current.clone()
        } else {
            pool[rng.below(pool.len())].to_vec()
        };
        let other = pool[rng.below(pool.len())];
        current = mutate(&mut rng, &base, other);
        if let Err(failure) = run_one(
            name,
            target,
            &current,
            &format!("mutant {done} (seed {seed:#x})"),
            false,
        ) {
            failures.push(failure);
        }
        done += 1;
    }
    println!(
        "{name}: {} corpus + {} regression inputs, {done} mutants in {seconds} s at most",
        corpus.len(),
        regressions.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn config() {
    smoke("config");
}

#[test]
fn etcd_value() {
    smoke("etcd_value");
}

#[test]
fn consul_health() {
    smoke("consul_health");
}

#[test]
fn endpoint_slice() {
    smoke("endpoint_slice");
}

#[test]
fn dns_answer() {
    smoke("dns_answer");
}

#[test]
fn file_sd() {
    smoke("file_sd");
}

#[test]
fn router() {
    smoke("router");
}

#[test]
fn nomad_service() {
    smoke("nomad_service");
}

#[test]
fn nacos_instances() {
    smoke("nacos_instances");
}

#[test]
fn eureka_apps() {
    smoke("eureka_apps");
}

#[test]
fn zookeeper_node() {
    smoke("zookeeper_node");
}

#[test]
fn http_sd() {
    smoke("http_sd");
}

/// Every target has a test above and a folder of seeds.
#[test]
fn every_target_is_covered() {
    let source = include_str!("fuzz_smoke.rs");
    for (name, _) in TARGETS {
        assert!(
            source.contains(&format!("fn {name}() {{\n    smoke(\"{name}\");")),
            "fuzz_smoke.rs has no test for target {name}"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
}
