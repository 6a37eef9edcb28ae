//! The `switchyard` executable: everything is in the library's [`switchyard::cli`].

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
