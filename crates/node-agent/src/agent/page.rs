//! The human status page at `/`: one server-rendered HTML page (no script), refreshed by the browser every
//! few seconds: the cluster first, the same from every host (hosts, coordinator and quorum, vservers with
//! their owners and standby copies, failed actions and what happened lately: [`crate::cluster_view`]), then
//! this node (its view of its peers, its vservers, its replication and the replicas it holds).

use std::fmt::Write;

use crate::cluster_view::{copy_words, event_words, utc, ClusterView};
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

fn host_class(state: &str) -> &'static str {
    match state {
        "alive" => "ok",
        "suspect" => "warn",
        "dead" => "bad",
        _ => "dim",
    }
}

/// The cluster's part of the page.
fn cluster_html(html: &mut String, view: &ClusterView) {
    let q = &view.quorum;
    let _ = writeln!(
        html,
        "<h2>Cluster</h2>\n<p id=\"coordinator\">Coordinator: <b>{coordinator}</b> · quorum <span class=\"{qclass}\">\
         {held}</span> ({alive} of {voters} voters alive: {names}) · automatic takeover {takeover} · \
         <small>states as {judge} judges them; asked {asked} · <a href=\"/v1/cluster\">JSON</a></small></p>",
        coordinator = view.coordinator.as_deref().map_or("none".to_string(), esc),
        qclass = if q.held { "ok" } else { "bad" },
        held = if q.held { "held" } else { "LOST" },
        alive = q.alive,
        voters = q.voters.len(),
        names = esc(&q.voters.join(", ")),
        takeover = if view.takeover { "on" } else { "off" },
        judge = esc(&view.judge),
        asked = esc(&view.asked),
    );
    for w in &view.warnings {
        let _ = writeln!(html, "<p class=\"warn cluster-warning\">{}</p>", esc(w));
    }
    html.push_str(
        "<table id=\"cluster-hosts\"><tr><th>Host</th><th>State</th><th>Role</th><th>Last heard</th><th>Lease</th>\
         <th>Maintenance</th><th>Certificate until</th><th>Runs</th></tr>\n",
    );
    for h in &view.hosts {
        let _ = writeln!(
            html,
            "<tr data-host=\"{name}\"><td>{name}</td><td class=\"{class}\">{state}</td><td>{role}</td><td>{heard}</td>\
             <td>{lease}</td><td>{maint}</td><td>{cert}</td><td>{runs}</td></tr>",
            name = esc(&h.name),
            class = host_class(&h.state),
            state = esc(&h.state),
            role = esc(&h.role),
            heard = h.last_heard_ms.map_or("–".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0)),
            lease = match (&h.unanswered, h.lease_remaining_ms) {
                (Some(why), _) => format!("<span class=\"dim\" title=\"{}\">no report</span>", esc(why)),
                (None, Some(ms)) => format!("{:.1} s left", ms as f64 / 1000.0),
                (None, None) => "–".into(),
            },
            maint = if h.maintenance { "<span class=\"warn\">yes</span>" } else { "–" },
            cert = h.certificate_not_after_unix_ms.map_or("–".into(), utc),
            runs = if h.running.is_empty() { "–".into() } else { esc(&h.running.join(", ")) },
        );
    }
    html.push_str("</table>\n");
    html.push_str(
        "<table id=\"cluster-vservers\"><tr><th>Vserver</th><th>Host</th><th>Epoch</th><th>Running on</th>\
         <th>Data</th><th>Standby copies</th><th>Error</th></tr>\n",
    );
    if view.vservers.is_empty() {
        html.push_str("<tr><td colspan=\"7\" class=\"dim\">no vserver in the ownership table</td></tr>\n");
    }
    for v in &view.vservers {
        let copies: Vec<String> = v.standbys.iter().map(|c| esc(&copy_words(c, v.data.as_deref()))).collect();
        let _ = writeln!(
            html,
            "<tr data-cluster-vserver=\"{name}\"><td>{name}</td><td>{owner}</td><td>{epoch}</td>\
             <td class=\"{class}\">{on}</td><td>{data}</td><td>{copies}</td><td class=\"bad\">{error}</td></tr>",
            name = esc(&v.name),
            owner = v.owner.as_deref().map_or("(none)".into(), esc),
            epoch = v.epoch,
            class = if v.running_on.is_empty() { "dim" } else { "ok" },
            on = if v.running_on.is_empty() { "not running".into() } else { esc(&v.running_on.join(", ")) },
            data = v.data.as_deref().map_or("–".into(), esc),
            copies = if copies.is_empty() { "–".into() } else { copies.join("<br>") },
            error = v.error.as_deref().map_or(String::new(), esc),
        );
    }
    html.push_str("</table>\n");
    for (id, title, events) in [("failed", "Failed actions", &view.failed), ("recent", "Lately", &view.recent)] {
        if events.is_empty() {
            continue;
        }
        let _ = writeln!(
            html,
            "<h3>{title}</h3>\n<table id=\"{id}\"><tr><th>When (UTC)</th><th>Kind</th><th>What</th></tr>"
        );
        for e in events {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                utc(e.at_unix_ms),
                esc(&e.kind),
                esc(&event_words(e))
            );
        }
        html.push_str("</table>\n");
    }
}

/// The page for one status report, with the cluster's view when there is one.
pub fn render(status: &StatusReport, view: Option<&ClusterView>) -> String {
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

    if let Some(view) = view {
        cluster_html(&mut html, view);
    }
    let _ = write!(
        html,
        "<h2>This node's view of its peers</h2>\n<table id=\"peers\"><tr><th>Peer</th><th>State</th><th>Last heard</th>\
         <th>RTT</th><th>Incarnation</th><th>Restarts seen</th><th>Vservers</th></tr>\n"
    );
    if status.peers.is_empty() {
        html.push_str("<tr><td colspan=\"7\" class=\"dim\">no peers configured</td></tr>\n");
    }
    for p in &status.peers {
        // A peer that is not alive runs nothing as far as anyone can tell: its last word is stale.
        let live = p.watched && matches!(p.state, PeerState::Alive | PeerState::Suspect);
        let vservers: Vec<String> = if live {
            p.vservers.iter().map(|v| format!("{} ({})", esc(&v.name), word(v.state))).collect()
        } else {
            Vec::new()
        };
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
        html.push_str("<tr><td colspan=\"8\" class=\"dim\">no vserver configured on this node (the cluster's are above; replicas held here below)</td></tr>\n");
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
        let html = render(&status, None);
        assert!(html.contains("h&lt;0&gt;") && !html.contains("h<0>"));
        assert!(html.contains("<td class=\"bad\">failed</td>"));
        assert!(html.contains("exit &lt;1&gt; &amp; &quot;x&quot;"));
        assert!(html.contains("no peers configured"));
    }
}
