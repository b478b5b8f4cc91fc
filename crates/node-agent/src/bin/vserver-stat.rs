//! `vserver-stat`: the running vservers of this host.
fn main() {
    std::process::exit(isolate::closed_output::run(node_agent::cli::stat_main));
}
