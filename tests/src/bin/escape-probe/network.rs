//! The network and System V IPC: raw sockets, and the host's own endpoints the test opens for the probe
//! (an abstract unix socket, a TCP listener on 127.0.0.1, a message queue).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::sys;
use crate::{attempt, denied, escaped, reached, refused, Attempt, Ctx, Verdict};

/// The network attempts; those needing a host endpoint only when the test named one.
pub fn attempts(ctx: &Ctx) -> Vec<Attempt> {
    let mut v = vec![
        attempt("network", "socket(AF_PACKET, SOCK_RAW)", |c| {
            raw(c, sys::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32))
        }),
        attempt("network", "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)", |c| {
            raw(c, sys::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP))
        }),
    ];
    if ctx.abstract_name.is_some() {
        v.push(attempt("network", "connect to the host's abstract unix socket", abstract_socket));
    }
    if ctx.tcp_port.is_some() {
        v.push(attempt("network", "connect to a TCP service on the host's 127.0.0.1", |c| match host_tcp(c) {
            Ok(()) => escaped("connected: the host's loopback services are reachable"),
            Err(e) => denied(e),
        }));
    }
    if ctx.msg_key.is_some() {
        v.push(attempt("ipc", "msgget of the host's System V message queue", msg_queue));
    }
    v
}

/// Connects to the host's TCP listener; the error text when it cannot.
fn host_tcp(ctx: &Ctx) -> Result<(), String> {
    let port = ctx.tcp_port.ok_or("no port given")?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| e.to_string())
}

fn raw(ctx: &Ctx, r: Result<std::os::fd::OwnedFd, sys::Errno>) -> Verdict {
    match r {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        Ok(_) if host_tcp(ctx).is_ok() => escaped("a raw socket on the host's own network (shared namespace)"),
        Ok(_) => reached("a raw socket on the vserver's own network namespace"),
    }
}

fn abstract_socket(ctx: &Ctx) -> Verdict {
    let Some(name) = &ctx.abstract_name else { return denied("no name given") };
    let addr = match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(a) => a,
        Err(e) => return reached(format!("bad name: {e}")),
    };
    match UnixStream::connect_addr(&addr) {
        Ok(_) => escaped(format!("connected to @{name}: the host's abstract sockets are reachable")),
        Err(e) => denied(e.to_string()),
    }
}

fn msg_queue(ctx: &Ctx) -> Verdict {
    let Some(key) = ctx.msg_key else { return denied("no key given") };
    match sys::msgget(key) {
        Ok(id) => escaped(format!("the host's queue {key:#x} is visible (id {id})")),
        Err(e) if e.0 == libc::ENOENT => denied("ENOENT: an IPC namespace of its own"),
        Err(e) => denied(e.name()),
    }
}
