fn main() -> std::process::ExitCode {
    ewn::cli::main()
}
