//! The stable smoke run of this crate's fuzz targets (docs/fuzzing.md), in `make test`:
//! every committed input of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, then
//! a deterministic mutation loop (bit flips, byte inserts and deletes, truncations,
//! splices, HTTP tokens; a seeded xorshift) for `FUZZ_SMOKE_SECONDS` (default 2) or
//! `FUZZ_SMOKE_ITERATIONS` (default 20,000) per target. A failing input is written to
//! `target/tmp/fuzz-crashes/<target>/` and its path printed.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::TARGETS;

/// Byte strings that reach the grammar's edges.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0\r\n\r\n",
    b"chunked",
    b"gzip",
    b"Transfer-Encoding: ",
    b"Content-Length: ",
    b"Connection: upgrade\r\nUpgrade: websocket\r\n",
    b"Host: ",
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"GET / HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\n",
    b"ffffffffffffffff",
    b"18446744073709551615",
    b"9223372036854775808",
    b"100 Continue\r\n\r\n",
    b"\x7f",
    b"\xff",
    b"%2f",
    b"/..",
];

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

fn mutate(rng: &mut Rng, inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut data = inputs[rng.below(inputs.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => drop(data.remove(at)),
            3 => data.truncate(at),
            4 => {
                let other = &inputs[rng.below(inputs.len())];
                let from = rng.below(other.len() + 1);
                data.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
        }
    }
    data.truncate(16 * 1024);
    data
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn smoke(name: &str) {
    let run = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("a target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = files(&root.join("corpus").join(name));
    assert!(!inputs.is_empty(), "fuzz/corpus/{name} holds no seed");
    inputs.extend(files(&root.join("regressions").join(name)));
    let check = |data: &[u8]| {
        if panic::catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tmp/fuzz-crashes")
                .join(name);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{:016x}", fnv(data)));
            let _ = std::fs::write(&path, data);
            panic!(
                "{name} failed on {:?} (saved as {}; keep it: cp {} fuzz/regressions/{name}/)",
                String::from_utf8_lossy(data),
                path.display(),
                path.display()
            );
        }
    };
    for input in &inputs {
        check(input);
    }
    let deadline = Instant::now() + Duration::from_secs(env("FUZZ_SMOKE_SECONDS", 2));
    let iterations = env("FUZZ_SMOKE_ITERATIONS", 20_000);
    let mut rng = Rng(env("FUZZ_SMOKE_SEED", 0x5eed_1234_abcd_0019) | 1);
    let mut ran = 0;
    while ran < iterations && Instant::now() < deadline {
        let data = mutate(&mut rng, &inputs);
        check(&data);
        ran += 1;
    }
    println!("{name}: {} seeds, {ran} mutants", inputs.len());
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn http1_request_guard() {
    smoke("http1_request_guard");
}

#[test]
fn http1_response_codec() {
    smoke("http1_response_codec");
}
