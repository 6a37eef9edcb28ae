//! Prints the path of the `protoc` binary and of its include directory that the
//! `protoc-bin-vendored` crate ships, one per line.
//!
//! etcd-client's build script compiles etcd's `.proto` files through prost-build, which runs
//! the program named by `PROTOC` (default: `protoc` on the PATH) with the well-known types from
//! `PROTOC_INCLUDE`. `scripts/with-protoc.sh` sets both from this output when no `protoc` is
//! installed, so a fresh machine with only Rust builds the gateway (ARCHITECTURE.md, "Building
//! without protoc"). This crate depends on nothing of ours, so it builds before anything that
//! needs protoc.

use std::process::ExitCode;

fn main() -> ExitCode {
    let bin = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("vendored-protoc: no protoc is vendored for this platform: {e}");
            return ExitCode::FAILURE;
        }
    };
    let include = protoc_bin_vendored::include_path().ok();
    println!("{}", bin.display());
    if let Some(include) = include {
        println!("{}", include.display());
    }
    ExitCode::SUCCESS
}
