//! The `switchyard` executable: the library's [`switchyard::cli`], plus the two commands that
//! are tools rather than the gateway (`demo`: the gateway on an embedded config with local
//! echo instances; `backend`: the echo backend the demo and the benchmarks start). Their code
//! lives here, in `tools/`, not in the library.

mod tools;

fn main() -> std::process::ExitCode {
    switchyard::cli::main(&switchyard::cli::Tools {
        demo: tools::demo::run,
        backend: tools::backend::run,
    })
}
