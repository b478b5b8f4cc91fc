//! Forming a cluster with `vserver-agent init` and joining it with `vserver-agent join TOKEN`, for real on
//! loopback (no root needed): no certificate made by hand, the agents then speak TLS with client
//! certificates, a token works once, and a token pinning another CA is refused before anything is sent.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A host's directory with the keys an operator sets before `init` or `join` (its directories, fast
/// heartbeats): what the README's `cp config/agent.toml` and editing give.
fn host(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    for sub in ["vservers", "conf", "run", "state"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    let text = format!(
        "# set by the operator before init or join\nvservers_dir = \"{h}/vservers\"\nconf_dir = \"{h}/conf\"\n\
         run_dir = \"{h}/run\"\nstate_dir = \"{h}/state\"\n\n\
         [heartbeat]\ninterval_ms = 100\nsuspect_after_ms = 300\ndead_after_ms = 600\ntimeout_ms = 100\n",
        h = home.display(),
    );
    let config = home.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    config
}

fn agent_cmd(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vserver-agent")).arg("--config").arg(config).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn spawn(config: &Path) -> Agent {
    let log = config.with_file_name("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vserver-agent"))
        .arg("--config")
        .arg(config)
        .env("VSERVER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Agent { child, log }
}

async fn wait_for<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The token printed for `name` by init or token.
fn token_for(out: &str, name: &str) -> String {
    let prefix = format!("on {name}: vserver-agent join ");
    out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no token for {name} in:\n{out}")).into()
}

#[tokio::test]
async fn init_then_join_forms_a_cluster_over_mutual_tls_with_no_certificate_made_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let (ca_conf, cb_conf) = (host(dir.path(), "ja"), host(dir.path(), "jb"));

    let out = agent_cmd(
        &ca_conf,
        &["init", "--node", "ja", "--listen", &format!("127.0.0.1:{pa}"), "--peer", &format!("jb=127.0.0.1:{pb}")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let token = token_for(&said, "jb");
    // The configuration kept the operator's keys and got the cluster part.
    let written = std::fs::read_to_string(&ca_conf).unwrap();
    assert!(written.contains("set by the operator") && written.contains("interval_ms = 100"), "{written}");
    assert!(written.contains("[tls]") && written.contains(&format!("https://127.0.0.1:{pb}")), "{written}");
    let check = agent_cmd(&ca_conf, &["--check"]);
    assert!(check.status.success() && text(&check).contains("HTTPS, client certificates"), "{}", text(&check));
    // Private files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["pki/ca.key", "pki/host.key", "cluster.secret"] {
        let mode = std::fs::metadata(dir.path().join("ja").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // A second init on the same host is refused and changes nothing.
    let again = agent_cmd(&ca_conf, &["init", "--node", "ja", "--listen", &format!("127.0.0.1:{pa}")]);
    assert!(!again.status.success() && text(&again).contains("already belongs to a cluster"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&ca_conf).unwrap(), written);

    let a = spawn(&ca_conf);
    let ready = wait_for(|| async { std::net::TcpStream::connect(("127.0.0.1", pa)).is_ok() }).await;
    assert!(ready, "ja listens; log:\n{}", std::fs::read_to_string(&a.log).unwrap_or_default());

    // Bad input to the admitting agent: refused with a sentence, and the token still works afterwards.
    let ca_pem = std::fs::read_to_string(dir.path().join("ja/pki/ca.pem")).unwrap();
    let anyone = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap();
    let join_url = format!("https://127.0.0.1:{pa}/v1/join");
    let malformed = anyone.post(&join_url).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let wrong = anyone
        .post(&join_url)
        .json(&serde_json::json!({"secret": "00".repeat(16), "public_key": "AAAA"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403, "an unknown token");
    assert!(wrong.text().await.unwrap().contains("unknown join token"));

    // A token that pins another CA: refused by the joining side, nothing written.
    let mut forged: Vec<&str> = token.splitn(4, '.').collect();
    let other_ca = "ab".repeat(32);
    forged[1] = &other_ca;
    let out = agent_cmd(&cb_conf, &["join", &forged.join(".")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!dir.path().join("jb/pki/ca.pem").exists());

    let out = agent_cmd(&cb_conf, &["join", &token]);
    assert!(out.status.success(), "{}\nja's log:\n{}", text(&out), std::fs::read_to_string(&a.log).unwrap_or_default());
    let joined = std::fs::read_to_string(&cb_conf).unwrap();
    assert!(joined.contains("node = \"jb\"") && joined.contains(&format!("https://127.0.0.1:{pa}")), "{joined}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("jb/cluster.secret")).unwrap(),
        std::fs::read_to_string(dir.path().join("ja/cluster.secret")).unwrap()
    );
    // The token worked once.
    let out = agent_cmd(&host(dir.path(), "jc"), &["join", &token]);
    assert!(!out.status.success() && text(&out).contains("already used"), "{}", text(&out));

    let b = spawn(&cb_conf);
    // Each sees the other alive: heartbeats over HTTPS with client certificates, no secret sent.
    let identity = format!(
        "{}\n{}",
        std::fs::read_to_string(dir.path().join("ja/pki/host.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("ja/pki/host.key")).unwrap()
    );
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap();
    let alive = |port: u16| {
        let client = client.clone();
        async move {
            let Ok(r) = client.get(format!("https://127.0.0.1:{port}/v1/status")).send().await else { return false };
            let status: serde_json::Value = r.json().await.unwrap_or_default();
            status["peers"][0]["state"] == "alive"
        }
    };
    let logs = || {
        format!(
            "ja:\n{}\njb:\n{}",
            std::fs::read_to_string(&a.log).unwrap_or_default(),
            std::fs::read_to_string(&b.log).unwrap_or_default()
        )
    };
    assert!(wait_for(|| alive(pa)).await, "jb alive on ja; {}", logs());
    assert!(wait_for(|| alive(pb)).await, "ja alive on jb; {}", logs());
    // Plain HTTP gets no answer from either.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(3)).no_proxy().build().unwrap();
    let reply = plain.get(format!("http://127.0.0.1:{pb}/healthz")).send().await;
    assert!(reply.is_err() || !reply.unwrap().status().is_success());

    // A new token for a host that is not a peer is refused.
    let out = agent_cmd(&ca_conf, &["token", "nosuch"]);
    assert!(
        !out.status.success()
            && text(&out).contains("not among this host's configured peers")
            && text(&out).contains("--address"),
        "{}",
        text(&out)
    );
    let out = agent_cmd(&cb_conf, &["token", "ja"]);
    assert!(out.status.success(), "any host holding the CA key issues tokens: {}", text(&out));
}

#[test]
fn an_agent_without_tls_refuses_to_start_unless_plain_http_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = host(dir.path(), "pa");
    let home = dir.path().join("pa");
    std::fs::write(home.join("secret"), "0123456789abcdef0123\n").unwrap();
    let base = std::fs::read_to_string(&config).unwrap();
    let plain = format!(
        "node = \"pa\"\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"{}/secret\"\n{base}",
        free_port(),
        home.display()
    );
    std::fs::write(&config, &plain).unwrap();
    for args in [&["--check"][..], &[][..]] {
        let out = agent_cmd(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("tls") && said.contains("vserver-agent init") && said.contains("insecure_plain_http"),
            "{said}"
        );
    }
    std::fs::write(&config, format!("insecure_plain_http = true\n{plain}")).unwrap();
    let out = agent_cmd(&config, &["--check"]);
    assert!(out.status.success() && text(&out).contains("plain HTTP"), "{}", text(&out));
}
