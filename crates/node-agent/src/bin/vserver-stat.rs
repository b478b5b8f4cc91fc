//! `vserver-stat`: the running vservers of this host.
fn main() {
    std::process::exit(node_agent::cli::stat_main());
}
