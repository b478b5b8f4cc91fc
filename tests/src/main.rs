//! `vserver-lab`: benchmarks and demos in a lab of network namespaces (see the library).

use clap::Parser;

fn main() -> std::process::ExitCode {
    // A closed output (`vserver-lab bench ... | head`) ends it quietly, once its lab is removed.
    isolate::closed_output::run(|| vserver_lab::bench::cli::run(vserver_lab::bench::cli::Cli::parse()))
}
