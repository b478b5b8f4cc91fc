//! `vserver-lab`: benchmarks and demos in a lab of network namespaces (see the library).

use clap::Parser;

fn main() -> std::process::ExitCode {
    vserver_lab::bench::cli::run(vserver_lab::bench::cli::Cli::parse())
}
