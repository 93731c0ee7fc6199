//! `promptops`: the registry server and CLI (see `promptops --help`).

fn main() -> std::process::ExitCode {
    promptops_server::cli::main_entry()
}
