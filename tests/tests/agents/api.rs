//! Scenarios: the HTTP API refuses the unauthenticated and the malformed, and changes nothing for them.

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{FAST, PATIENCE};

#[test]
fn requests_without_or_with_a_wrong_token_are_refused_and_bad_input_changes_nothing() {
    if skip_unless_root("requests_without_or_with_a_wrong_token_are_refused_and_bad_input_changes_nothing") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || agents.status(0).is_ok()).is_some(), "agent answers; log:\n{}", agents.log(0));

    // /healthz needs nothing.
    assert_eq!(agents.request(1, 0, "GET", "/healthz", None, None).unwrap().status, 200);
    // Everything else needs the secret, from anywhere.
    for path in ["/v1/status", "/metrics", "/", "/v1/vservers/x"] {
        let none = agents.request(1, 0, "GET", path, None, None).unwrap();
        assert_eq!(none.status, 401, "{path} without a token: {}", none.body);
        let wrong = agents.request(1, 0, "GET", path, Some("not-the-secret-at-all"), None).unwrap();
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    let post = agents.request(1, 0, "POST", "/v1/vservers/x/start", Some("wrong-wrong-wrong"), Some("")).unwrap();
    assert_eq!(post.status, 401);

    let secret = agents.secret().to_string();
    let req =
        |method: &str, path: &str, body: Option<&str>| agents.request(1, 0, method, path, Some(&secret), body).unwrap();
    assert_eq!(req("GET", "/v1/vservers/nosuch", None).status, 404);
    assert_eq!(req("POST", "/v1/vservers/nosuch/start", Some("")).status, 404);
    let bad = req("POST", "/v1/vservers/..%2Fetc/start", Some(""));
    assert!(bad.status == 400 || bad.status == 404, "an invalid name is refused: {} {}", bad.status, bad.body);
    let bad = req("GET", "/v1/vservers/a..b", None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json().unwrap()["error"].as_str().unwrap().contains(".."));

    // Heartbeats: malformed, badly signed, from an unknown node; all refused and counted.
    assert_eq!(req("POST", "/v1/heartbeat", Some("{not json")).status, 400);
    let garbage = r#"{"body":"not a heartbeat","signature":"00"}"#;
    assert_eq!(req("POST", "/v1/heartbeat", Some(garbage)).status, 400);
    let forged = r#"{"body":"{\"node\":\"h1\",\"incarnation\":9,\"seq\":1,\"sent_unix_ms\":0,\"vservers\":[]}","signature":"00"}"#;
    assert_eq!(req("POST", "/v1/heartbeat", Some(forged)).status, 403);
    let status = agents.status(0).unwrap();
    let rejected = &status["rejected_heartbeats"];
    assert!(rejected["bad_signature"].as_u64().unwrap() >= 1, "{rejected}");
    assert!(rejected["malformed_or_stale"].as_u64().unwrap() >= 1, "{rejected}");
    // The forged heartbeat changed nothing: h1's incarnation is still its real one.
    assert_ne!(agents.peer(0, 1).unwrap()["incarnation"].as_u64(), Some(9));

    // Maintenance: a field that is no host name is refused at once, naming the field (nothing waits for the
    // coordinator); a host the cluster does not know is 404. Nothing changed.
    let bad = req("POST", "/v1/maintenance", Some(r#"{"on":true,"asked_through":""}"#));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json().unwrap()["error"].as_str().unwrap().starts_with("asked_through: "), "{}", bad.body);
    let unknown = req("POST", "/v1/maintenance", Some(r#"{"on":true,"host":"h9"}"#));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(req("GET", "/v1/maintenance", None).json().unwrap()["hosts"].as_object().is_none_or(|h| h.is_empty()));

    // A huge body is refused before it is read.
    let huge = "x".repeat(200 * 1024);
    let big = req("POST", "/v1/heartbeat", Some(&huge));
    assert_eq!(big.status, 413, "{}", big.body);

    // Metrics and the page are there for the authenticated.
    let metrics = req("GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("vserver_peer_up{peer=\"h1\"}"), "{}", metrics.body);
    let page = req("GET", "/", None);
    assert!(page.status == 200 && page.body.contains("h1"), "{}", page.body);
}

/// A monitoring token reads (status, metrics, events, the page) and can do nothing else; it is not the
/// cluster secret, and the cluster secret still does everything.
#[test]
fn a_monitoring_token_reads_and_is_refused_everything_else() {
    if skip_unless_root("a_monitoring_token_reads_and_is_refused_everything_else") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let token = format!("monitor-{}", vserver_lab::unique("m"));
    let file = lab.dir().join("monitor.secret");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let extra = format!("monitor_secret_file = \"{}\"", file.display());
    let agents = Agents::start_full(&lab, FAST, None, &extra).unwrap();
    assert!(wait_for(PATIENCE, || agents.status(0).is_ok()).is_some(), "agent answers; log:\n{}", agents.log(0));

    for path in ["/v1/status", "/metrics", "/v1/events", "/", "/v1/maintenance"] {
        let read = agents.request(1, 0, "GET", path, Some(&token), None).unwrap();
        assert_eq!(read.status, 200, "GET {path} with the monitoring token: {}", read.body);
    }
    let before = agents.status(0).unwrap();
    for (path, body) in [
        ("/v1/maintenance", r#"{"on":true}"#),
        ("/v1/vservers/x/stop", ""),
        ("/v1/heartbeat", "{}"),
        ("/v1/hosts/h0/evacuate", "{}"),
    ] {
        let write = agents.request(1, 0, "POST", path, Some(&token), Some(body)).unwrap();
        assert_eq!(write.status, 403, "POST {path} with the monitoring token: {}", write.body);
        let said = write.json().unwrap()["error"].as_str().unwrap().to_string();
        assert!(said.contains("only reads") && said.contains(path), "{said}");
    }
    // Nothing changed: no maintenance.
    let after = agents.status(0).unwrap();
    assert_eq!(before["maintenance"], after["maintenance"]);
    let maintenance = agents.get(1, 0, "/v1/maintenance").unwrap().json().unwrap();
    assert!(maintenance["cluster"].is_null() && maintenance["hosts"].as_object().is_none_or(|h| h.is_empty()));
    // A token that is neither is refused as before.
    let wrong = agents.request(1, 0, "GET", "/v1/status", Some("monitor-not-this-one"), None).unwrap();
    assert_eq!(wrong.status, 401);
}
