fn main() -> std::process::ExitCode {
    scopekeeper::cli::main()
}
