//! `cargo xtask` entry point; everything lives in the library so the tests
//! can run the same CLI as a standalone binary.

fn main() -> std::process::ExitCode {
    xtask::exit_code(xtask::main())
}
