//! `vserver NAME start|stop|...`: see `vserver --help`.
fn main() {
    std::process::exit(isolate::closed_output::run(node_agent::cli::vserver_main));
}
