//! `GET /metrics` of a real agent, as Prometheus scrapes it: the Prometheus text format (0.0.4) unless the
//! scraper prefers OpenMetrics, each passing its reference reader (promtool lints the text format; a strict
//! OpenMetrics parser reads the other).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vserver_lab::KillOnDrop;

const VSERVER_AGENT: &str = env!("CARGO_BIN_EXE_vserver-agent");
const SECRET: &str = "0123456789abcdef0123";

/// What Prometheus sends when it may scrape OpenMetrics.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A host alone, everything under `dir`, listening on `listen`.
fn config(dir: &Path, listen: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let d = dir.display();
    let text = format!(
        "node = \"h1\"\nlisten = \"{listen}\"\nsecret_file = \"{d}/secret\"\ninsecure_plain_http = true\n\
         vservers_dir = \"{d}/vservers\"\nconf_dir = \"{d}/conf\"\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\n\
         cgroup_parent = \"{}\"\n",
        vserver_lab::unique("metrics"),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `GET /metrics` with `accept` (none: no header): the content type and the body.
fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {SECRET}\r\n{accept}\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{answer}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (content_type, body.to_string())
}

#[test]
fn metrics_in_the_format_asked_pass_promtool_and_the_openmetrics_parser() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let path = config(dir.path(), &addr);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _agent = KillOnDrop(
        Command::new(VSERVER_AGENT)
            .arg("--config")
            .arg(&path)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("VSERVER_LOG", "error")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within a minute");
    assert_eq!(&buf[..n], b"READY=1\n");

    // No preference, any format, or the text format by name: the text format.
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (content_type, body) = scrape(&addr, accept);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "Accept: {accept:?}");
        assert!(body.contains("\nvserver_cluster_coordinator "), "{body}");
        assert!(!body.contains("# EOF"), "{body}");
        if let Some(result) = vserver_lab::promtool::check_metrics(&body) {
            result.unwrap();
        }
    }
    // Prometheus's own Accept, or OpenMetrics alone: OpenMetrics.
    for accept in [PROMETHEUS_ACCEPT, "application/openmetrics-text"] {
        let (content_type, body) = scrape(&addr, Some(accept));
        assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8", "Accept: {accept}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        if let Some(result) = vserver_lab::promtool::parse_openmetrics(&body) {
            result.unwrap();
        }
    }
}
