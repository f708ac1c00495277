//! The slotsmith CLI as a plain binary, so tests can run it in a separate
//! process, for instance as an unprivileged user.

fn main() -> std::process::ExitCode {
    xtask::exit_code(xtask::main())
}
