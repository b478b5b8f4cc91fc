//! A writer inside a vserver that says which of its writes are durable, and the client's view of it: what
//! the data-path tests check no acknowledged write is lost against.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vserver_lab::agents::wait_for;
use vserver_lab::Lab;

use crate::PATIENCE;

/// The writer inside: appends the next number to `/data/log`, makes it durable (`sync`), then says it is
/// (`/www/ack`, served by the vserver's httpd). Started again after a move, it goes on from the log's last
/// number, which it first appends to `/data/starts`: where the copy it started from ended.
pub const WRITER: &str = r#"#!/bin/sh
case "$1" in
  start)
    mkdir -p /data
    (
      n=$(tail -n 1 /data/log 2>/dev/null); n=${n:-0}
      echo "$n" >> /data/starts
      while :; do
        n=$((n + 1))
        echo "$n" >> /data/log
        sync
        echo "$n" > /www/ack.new && mv /www/ack.new /www/ack
        sleep 0.02
      done
    ) </dev/null >/dev/null 2>&1 &
    ;;
  stop) ;;
esac
"#;

/// Installs the writer into the tree at `root` (runlevel 3, after the web service).
pub fn install_writer(root: &Path) {
    let script = root.join("etc/init.d/writer");
    std::fs::write(&script, WRITER).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../init.d/writer", root.join("etc/rc3.d/S60writer")).unwrap();
}

/// The highest number the writer said was durable, as the client saw it, read every 20 ms until dropped.
pub struct Acks {
    high: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acks {
    pub fn start(lab: &Lab, addr: std::net::Ipv4Addr) -> Acks {
        let (high, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (h, s) = (Arc::clone(&high), Arc::clone(&stop));
        let enter = lab.client.netns.enterer();
        let thread = std::thread::spawn(move || {
            enter().expect("entering the client's namespace");
            while !s.load(Ordering::Relaxed) {
                if let Some(n) = vserver_lab::bench::get_ack(addr) {
                    h.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Acks { high, stop, thread: Some(thread) }
    }

    pub fn high(&self) -> u64 {
        self.high.load(Ordering::Relaxed)
    }

    /// Waits until the writer acknowledges more than `than` (it runs, and is heard).
    pub fn wait_past(&self, than: u64) -> bool {
        wait_for(PATIENCE, || self.high() > than).is_some()
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The numbers up to `acked` missing from the writer's log in the tree at `tree`: writes lost.
pub fn lost(tree: &Path, acked: u64) -> Vec<u64> {
    missing(&std::fs::read_to_string(tree.join("data/log")).unwrap_or_default(), acked)
}

/// The numbers up to `acked` missing from the text of the writer's log.
pub fn missing(log: &str, acked: u64) -> Vec<u64> {
    let have: std::collections::BTreeSet<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (1..=acked).filter(|n| !have.contains(n)).collect()
}
