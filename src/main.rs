//! The `marquee` binary: parses the command line and hands over to [`marquee::cli`].

fn main() -> std::process::ExitCode {
    marquee::cli::main()
}
