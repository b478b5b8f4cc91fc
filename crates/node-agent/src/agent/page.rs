//! The human status page at `/`: one server-rendered HTML page (no script), refreshed by the browser every
//! few seconds, showing this node, its peers and its vservers.

use std::fmt::Write;

use crate::model::{PeerState, StatusReport, VserverState};

/// Seconds between the browser's reloads.
const REFRESH_SECS: u32 = 2;

/// Text made safe for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn peer_class(state: PeerState) -> &'static str {
    match state {
        PeerState::Alive => "ok",
        PeerState::Suspect => "warn",
        PeerState::Dead => "bad",
        PeerState::Unknown => "dim",
    }
}

fn vserver_class(state: VserverState) -> &'static str {
    match state {
        VserverState::Running => "ok",
        VserverState::Stopped => "dim",
        VserverState::Failed | VserverState::Error => "bad",
    }
}

fn word<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// The page for one status report.
pub fn render(status: &StatusReport) -> String {
    let node = &status.node;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{name} — vserver-agent</title><style>\
         body{{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         th,td{{text-align:left;padding:.3em .9em;border-bottom:1px solid #ddd}}\
         th{{background:#f4f4f4}} .ok{{color:#186a18;font-weight:600}} .warn{{color:#a66b00;font-weight:600}}\
         .bad{{color:#b00020;font-weight:600}} .dim{{color:#777}} small{{color:#666}}\
         </style></head><body>\n<h1>Node <span id=\"node\">{name}</span></h1>\n\
         <p><small>incarnation {inc} · agent up {up} · version {ver} · refreshed every {REFRESH_SECS} s · \
         <a href=\"/v1/status\">JSON</a> · <a href=\"/metrics\">metrics</a></small></p>\n",
        name = esc(&node.name),
        inc = node.incarnation,
        up = duration(node.uptime_secs),
        ver = esc(&node.version),
    );

    if let Some(wire) = &node.wire {
        if wire.mode == "plain" || wire.plain_accepted {
            html.push_str(
                "<p id=\"plain-http\" class=\"bad\" style=\"border:3px solid #b00020;padding:.5em\">INSECURE: this \
                 agent accepts plain HTTP (<code>insecure_plain_http</code>), in which the cluster secret travels in \
                 clear. Form the cluster's certificates with <code>vserver-agent init</code> and <code>join</code>.</p>\n",
            );
        }
        let until = |ms: Option<u64>| {
            ms.map_or("-".to_string(), |ms| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                    .to_string()
            })
        };
        let _ = writeln!(
            html,
            "<p id=\"wire\"><small>wire: {} · this host's certificate valid until {} · cluster CA until {}</small></p>",
            esc(&wire.mode),
            until(wire.certificate_not_after_unix_ms),
            until(wire.ca_not_after_unix_ms)
        );
    }
    let m = &status.failover.maintenance;
    if m.cluster.is_some() {
        html.push_str(
            "<p id=\"maintenance\" class=\"bad\" style=\"font-size:1.3em;border:3px solid #b00020;padding:.5em\">\
             CLUSTER MAINTENANCE: fencing and automatic takeover are disarmed on every host until \
             <code>vserver-agent maintenance off --cluster</code></p>\n",
        );
    }
    if !m.hosts.is_empty() {
        let hosts: Vec<String> = m.hosts.keys().map(|h| esc(h)).collect();
        let _ = writeln!(
            html,
            "<p id=\"host-maintenance\" class=\"warn\">In maintenance (never fenced, never taken over): {}</p>",
            hosts.join(", ")
        );
    }

    let _ = write!(
        html,
        "<h2>Peers</h2>\n<table id=\"peers\"><tr><th>Peer</th><th>State</th><th>Last heard</th>\
         <th>RTT</th><th>Incarnation</th><th>Restarts seen</th><th>Vservers</th></tr>\n"
    );
    if status.peers.is_empty() {
        html.push_str("<tr><td colspan=\"7\" class=\"dim\">no peers configured</td></tr>\n");
    }
    for p in &status.peers {
        let vservers: Vec<String> =
            p.vservers.iter().map(|v| format!("{} ({})", esc(&v.name), word(v.state))).collect();
        let _ = writeln!(
            html,
            "<tr data-peer=\"{name}\"><td>{name}<br><small>{url}</small></td><td class=\"{class}\">{state}</td>\
             <td>{heard}</td><td>{rtt}</td><td>{inc}</td><td>{restarts}</td><td>{vs}</td></tr>",
            name = esc(&p.name),
            url = esc(&p.url),
            class = peer_class(p.state),
            state = if p.watched { word(p.state) } else { "not watched here".into() },
            heard = p.last_heard_ms.map_or("never".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0)),
            rtt = p.rtt_ms.map_or("–".into(), |ms| format!("{ms:.2} ms")),
            inc = p.incarnation.map_or("–".into(), |i| i.to_string()),
            restarts = p.restarts_seen,
            vs = if vservers.is_empty() { "–".into() } else { vservers.join(", ") },
        );
    }
    html.push_str("</table>\n");

    let _ = write!(
        html,
        "<h2>Vservers on this node</h2>\n<table id=\"vservers\"><tr><th>Vserver</th><th>State</th>\
         <th>Intent</th><th>Uptime</th><th>Addresses</th><th>Processes</th><th>Restarts</th><th>Last error</th></tr>\n"
    );
    if status.vservers.is_empty() {
        html.push_str("<tr><td colspan=\"8\" class=\"dim\">no vserver configured</td></tr>\n");
    }
    for v in &status.vservers {
        let _ = writeln!(
            html,
            "<tr data-vserver=\"{name}\"><td>{name}</td><td class=\"{class}\">{state}</td><td>{intent}</td>\
             <td>{up}</td><td>{addrs}</td><td>{procs}</td><td>{restarts}</td><td>{err}</td></tr>",
            name = esc(&v.name),
            class = vserver_class(v.state),
            state = word(v.state),
            intent = word(v.intent),
            up = v.uptime_secs.map_or("–".into(), duration),
            addrs = if v.addresses.is_empty() { "host network".into() } else { esc(&v.addresses.join(" ")) },
            procs = v.processes,
            restarts = v.restarts,
            err = v.error.as_deref().or(v.last_error.as_deref()).map_or(String::new(), esc),
        );
    }
    html.push_str("</table>\n");
    if !status.replication.is_empty() {
        html.push_str(
            "<h2>Replication to standbys</h2>\n<table id=\"replication\"><tr><th>Vserver</th><th>Standby</th>\
             <th>Data</th><th>RPO</th><th>Last complete copy</th><th>Sent</th><th>Duration</th><th>Last error</th>\
             </tr>\n",
        );
        for r in &status.replication {
            let (class, state) = match (&r.last_error, r.lag_secs) {
                (Some(_), _) => ("bad", "failing".to_string()),
                (None, Some(lag)) => ("ok", format!("{} ago", duration(lag))),
                (None, None) => ("dim", "never".to_string()),
            };
            // Continuous while watched: the change lag, and the last batch.
            let data = match (r.change_lag_ms, r.last_batch_unix_ms) {
                (Some(lag), Some(at)) => format!(
                    "{} (lag {:.1} s, last batch {} ago)",
                    esc(r.data.as_deref().unwrap_or("continuous")),
                    lag as f64 / 1000.0,
                    duration(crate::agent::replication::now_ms().saturating_sub(at) / 1000)
                ),
                (Some(lag), None) => format!("continuous (lag {:.1} s)", lag as f64 / 1000.0),
                _ => esc(r.data.as_deref().unwrap_or("–")),
            };
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{data}</td><td>{}</td><td class=\"{class}\">{state}{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&r.vserver),
                esc(&r.standby),
                r.rpo_secs.map_or("–".into(), |s| format!("{s:.1} s")),
                if r.syncing { " (syncing now)" } else { "" },
                r.bytes_sent.map_or("–".into(), |b| format!("{b} B")),
                r.duration_ms.map_or("–".into(), |d| format!("{d} ms")),
                r.last_error.as_deref().map_or(String::new(), esc),
            );
        }
        html.push_str("</table>\n");
    }
    if !status.replicas.is_empty() {
        html.push_str(
            "<h2>Replicas held here</h2>\n<table id=\"replicas\"><tr><th>Vserver</th><th>From</th><th>Age</th>\
             <th>Kind</th><th>Points in time</th></tr>\n",
        );
        for r in &status.replicas {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&r.vserver),
                esc(&r.source),
                duration(r.age_secs),
                esc(&r.kind),
                if r.consistent { ", consistent" } else { "" },
                if r.points.is_empty() {
                    "–".to_string()
                } else {
                    r.points.iter().map(|p| esc(&p.stamp)).collect::<Vec<_>>().join(" ")
                },
            );
        }
        html.push_str("</table>\n");
    }
    let r = status.rejected_heartbeats;
    let _ = writeln!(
        html,
        "<p><small>Heartbeats refused: {} from unknown nodes, {} with a bad signature, {} malformed or stale.\
         </small></p>\n</body></html>",
        r.unknown_node, r.bad_signature, r.malformed_or_stale
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Intent, NodeStatus, RejectCounters, VserverStatus};

    #[test]
    fn names_are_escaped_and_states_shown() {
        let status = StatusReport {
            node: NodeStatus { name: "h<0>".into(), incarnation: 1, uptime_secs: 3, version: "0".into(), wire: None },
            peers: vec![],
            vservers: vec![VserverStatus {
                name: "web".into(),
                state: VserverState::Failed,
                intent: Intent::Running,
                uptime_secs: None,
                addresses: vec!["eth0:10.0.0.1/24".into()],
                host_network: false,
                processes: 0,
                resources: Default::default(),
                restarts: 5,
                restarted_unix_ms: vec![],
                relocations: 0,
                fences: 0,
                fenced_unix_ms: vec![],
                relocated_unix_ms: vec![],
                error: None,
                last_error: Some("exit <1> & \"x\"".into()),
            }],
            rejected_heartbeats: RejectCounters::default(),
            replication: vec![],
            replicas: vec![],
            ownership: None,
            failover: Default::default(),
            takeovers: vec![],
            relocation_errors: Default::default(),
        };
        let html = render(&status);
        assert!(html.contains("h&lt;0&gt;") && !html.contains("h<0>"));
        assert!(html.contains("<td class=\"bad\">failed</td>"));
        assert!(html.contains("exit &lt;1&gt; &amp; &quot;x&quot;"));
        assert!(html.contains("no peers configured"));
    }
}
