//! Scenarios: the commands of a vserver from any host of the cluster. `sync`, `announce`, `clear` and
//! `migrate` run on a host that does not own the vserver go to its owner, which answers as if asked there
//! (`migrate h0` on h0, a standby, brings it home; asked of the owner it runs on, it says so); `status` on a
//! standby says where it runs and how old the copy here is; with the agent of its host dead, `status` says
//! that what it shows is that host's view alone.

use std::io::{Read, Write};

use vserver_lab::agents::{wait_for, AGENT_PORT};
use vserver_lab::{skip_unless_root, Lab};

use crate::{owner, placed_on_h0, text, vserver, PATIENCE};

/// Standard output and error of a command, together.
fn said(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Waits until every host's copy of the table gives `name` to `host`.
fn owned_everywhere(agents: &vserver_lab::agents::Agents, name: &str, host: &str) -> bool {
    wait_for(PATIENCE, || (0..3).all(|i| owner(agents, i, name).is_some_and(|(o, _)| o == host))).is_some()
}

#[test]
fn a_standbys_commands_go_to_the_owner_and_its_status_says_where_the_vserver_runs() {
    if skip_unless_root("a_standbys_commands_go_to_the_owner_and_its_status_says_where_the_vserver_runs") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, addr) = placed_on_h0(&lab, "ah", "", true);
    let logs = || format!("log h0:\n{}\nlog h1:\n{}\nlog h2:\n{}", agents.log(0), agents.log(1), agents.log(2));
    assert!(owned_everywhere(&agents, &name, "h0"), "{:?}", owner(&agents, 1, &name));

    // A sync asked on a standby is the owner's: both standbys get a complete copy.
    let out = vserver(&lab, 1, &[&name, "sync"], false);
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    let all = said(&out);
    assert!(all.contains("forwarded to h0"), "{all}");
    assert!(
        all.contains(&format!("{name} -> h1: complete")) && all.contains(&format!("{name} -> h2: complete")),
        "{all}"
    );

    // The standby's status says where it runs and how old its copy is, not "not configured".
    let out = vserver(&lab, 1, &[&name, "status"], false);
    assert_eq!(out.status.code(), Some(3), "it does not run on h1: {}", text(&out));
    let all = said(&out);
    assert!(all.contains("runs on h0") && all.contains("epoch 1"), "{all}");
    assert!(all.contains("standby copy") && all.contains("s old"), "{all}");
    assert!(!all.contains("not configured"), "{all}");
    eprintln!("{all}");

    // An announcement and a clear asked on the other standby are the owner's.
    let out = vserver(&lab, 2, &[&name, "announce"], false);
    assert!(out.status.success(), "{}", text(&out));
    let all = said(&out);
    assert!(all.contains("forwarded to h0") && all.contains(&format!("announced eth0:{addr}")), "{all}");
    let out = vserver(&lab, 2, &[&name, "clear"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(said(&out).contains("forwarded to h0"), "{}", text(&out));

    // A migrate asked on a standby: the owner moves it where asked.
    let out = vserver(&lab, 2, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    let all = said(&out);
    assert!(all.contains("forwarded to h0") && all.contains("migrated to h1"), "{all}");
    assert!(owned_everywhere(&agents, &name, "h1"), "{:?}", owner(&agents, 0, &name));

    // `migrate h0` on h0, now a standby, brings it home (h1, its owner, moves it).
    let out = vserver(&lab, 0, &[&name, "migrate", "h0"], false);
    assert!(out.status.success(), "{}\n{}", text(&out), logs());
    let all = said(&out);
    assert!(all.contains("forwarded to h1") && all.contains("migrated to h0"), "{all}");
    eprintln!("{all}");
    assert!(owned_everywhere(&agents, &name, "h0"), "{:?}", owner(&agents, 1, &name));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());

    // Asked elsewhere to move it where it runs, the owner says so (409: a conflict with where it is).
    let out = vserver(&lab, 2, &[&name, "migrate", "h0"], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = said(&out);
    assert!(all.contains("forwarded to h0") && all.contains(&format!("{name} already runs on h0")), "{all}");
    eprintln!("{all}");

    // A request passed on already is answered where it lands, never passed on again: h1 refuses it.
    let (code, body) = marked_announce(&lab, &agents, 1, &name);
    assert_eq!(code, "409", "{body}");
    assert!(body.contains("does not run on h1") && !body.contains("forwarded"), "{body}");
}

/// `POST /v1/vservers/NAME/announce` to host `i`'s agent, marked as passed on by another agent: its status
/// code and the whole answer.
fn marked_announce(lab: &Lab, agents: &vserver_lab::agents::Agents, i: usize, name: &str) -> (String, String) {
    let host = &lab.hosts[i];
    let request = format!(
        "POST /v1/vservers/{name}/announce HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         x-vserver-forwarded-by: h2\r\nContent-Length: 0\r\n\r\n",
        host.addr,
        agents.secret()
    );
    let target = std::net::SocketAddr::from((host.addr, AGENT_PORT));
    let answer = host
        .netns
        .run(move || -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect_timeout(&target, PATIENCE)?;
            stream.set_read_timeout(Some(PATIENCE))?;
            stream.write_all(request.as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .unwrap()
        .unwrap();
    let code = answer.split_whitespace().nth(1).unwrap_or_default().to_string();
    (code, answer)
}

#[test]
fn with_its_agent_dead_a_hosts_status_says_it_shows_this_host_alone() {
    if skip_unless_root("with_its_agent_dead_a_hosts_status_says_it_shows_this_host_alone") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, name, _addr) = placed_on_h0(&lab, "ad", "", true);
    agents.kill9(0);

    let out = vserver(&lab, 0, &[&name, "status"], false);
    assert!(out.status.success(), "it still runs on h0: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: the agent of this host") && stderr.contains("not running"), "{}", text(&out));
    assert!(stderr.contains("this host's view alone") && stderr.contains("failover"), "{}", text(&out));
    // Every command says so, also those that act on this host alone.
    let out = vserver(&lab, 0, &[&name, "running"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the agent of this host"), "{}", text(&out));
}
