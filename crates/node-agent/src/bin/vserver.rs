//! `vserver NAME start|stop|...`: see `vserver --help`.
fn main() {
    std::process::exit(node_agent::cli::vserver_main());
}
