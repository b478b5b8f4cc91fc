//! Two agents on loopback with `[tls]` and a cluster CA, for real (no root needed): heartbeats flow over
//! HTTPS with each agent's certificate, a client certificate signed by the cluster CA is admitted without the
//! token, one signed by another CA is refused in the handshake, plain HTTP gets no answer, and `/healthz`
//! needs nothing. Bad TLS files stop the agent with a message naming the key.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const SECRET: &str = "tls-test-secret-0123456789";

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for 127.0.0.1, good for serving and as a client: (cert PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An agent process, killed on drop.
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

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Writes node `name`'s configuration (certificate issued by `ca`) in `dir`, with the others as peers.
fn configure(dir: &Path, ca: &Ca, name: &str, port: u16, peers: &[(&str, u16)]) -> PathBuf {
    let home = dir.join(name);
    for sub in ["vservers", "conf", "run", "state"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    let (cert, key) = ca.issue(name);
    write(&home.join("cert.pem"), &cert);
    write(&home.join("key.pem"), &key);
    let mut text = format!(
        "node = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nsecret_file = \"{d}/secret\"\n{cluster}\
         vservers_dir = \"{h}/vservers\"\nconf_dir = \"{h}/conf\"\nrun_dir = \"{h}/run\"\nstate_dir = \"{h}/state\"\n\
         [tls]\ncert_file = \"{h}/cert.pem\"\nkey_file = \"{h}/key.pem\"\nca_file = \"{d}/ca.pem\"\n\
         [heartbeat]\ninterval_ms = 100\nsuspect_after_ms = 300\ndead_after_ms = 600\ntimeout_ms = 100\n",
        d = dir.display(),
        h = home.display(),
        cluster = if dir.join("cluster.toml").exists() {
            format!("cluster_file = \"{}/cluster.toml\"\n", dir.display())
        } else {
            String::new()
        },
    );
    for (peer, peer_port) in peers {
        text.push_str(&format!("[[peers]]\nname = \"{peer}\"\nurl = \"https://127.0.0.1:{peer_port}\"\n"));
    }
    let config = home.join("agent.toml");
    write(&config, &text);
    config
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

fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .no_proxy();
    if let Some((cert, key)) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn wait_for<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn agents_speak_https_and_admit_clients_by_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    write(&dir.path().join("ca.pem"), &ca.cert.pem());
    write(&dir.path().join("secret"), &format!("{SECRET}\n"));
    let (pa, pb) = (free_port(), free_port());
    // A vserver on ta (a tree and a conf are enough to copy), replicated to tb.
    write(
        &dir.path().join("cluster.toml"),
        "[vservers.tv]\nprimary = \"ta\"\nstandbys = [\"tb\"]\ninterval_secs = 3600\n",
    );
    std::fs::create_dir_all(dir.path().join("ta/vservers/tv/etc")).unwrap();
    write(&dir.path().join("ta/vservers/tv/etc/hostname"), "tv\n");
    std::fs::create_dir_all(dir.path().join("ta/conf")).unwrap();
    write(&dir.path().join("ta/conf/tv.conf"), "IPROOT=\"\"\n");
    let a = spawn(&configure(dir.path(), &ca, "ta", pa, &[("tb", pb)]));
    let _b = spawn(&configure(dir.path(), &ca, "tb", pb, &[("ta", pa)]));
    let base = format!("https://127.0.0.1:{pa}");

    // An operator with the token (verifying the agent against the cluster CA) sees the peer alive: the
    // heartbeats went over HTTPS, each agent presenting its certificate.
    let with_token = client(&ca.cert.pem(), None);
    let peer_alive = || async {
        let Ok(reply) = with_token.get(format!("{base}/v1/status")).bearer_auth(SECRET).send().await else {
            return false;
        };
        let status: serde_json::Value = reply.json().await.unwrap_or_default();
        status["peers"][0]["state"] == "alive"
    };
    let log = || std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(wait_for(peer_alive).await, "tb alive on ta over HTTPS; log:\n{}", log());

    // Replication goes through the tunnel over HTTPS too (each agent presenting its certificate).
    let reply = with_token.post(format!("{base}/v1/vservers/tv/sync")).bearer_auth(SECRET).send().await.unwrap();
    let outcomes: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(outcomes[0]["ok"], true, "{outcomes}\nlog:\n{}", log());
    let current = dir.path().join("tb/vservers/.replicas/tv/current");
    assert_eq!(std::fs::read_to_string(current.join("tree/etc/hostname")).unwrap(), "tv\n");

    // No token and no certificate: refused; /healthz: open.
    let reply = with_token.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(with_token.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    // A client certificate signed by the cluster CA stands for the token.
    let (cert, key) = ca.issue("operator");
    let certified = client(&ca.cert.pem(), Some((&cert, &key)));
    let reply = certified.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap_or_default());

    // One signed by another CA is refused in the handshake: no answer at all.
    let rogue = Ca::new("rogue CA");
    let (cert, key) = rogue.issue("intruder");
    let refused = client(&ca.cert.pem(), Some((&cert, &key))).get(format!("{base}/v1/status")).send().await;
    assert!(refused.is_err(), "a certificate from another CA gets no answer: {refused:?}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(3)).no_proxy().build().unwrap();
    let reply = plain.get(format!("http://127.0.0.1:{pa}/v1/status")).bearer_auth(SECRET).send().await;
    assert!(reply.is_err() || reply.unwrap().status() != 200);
}

#[test]
fn bad_tls_files_stop_the_agent_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    write(&dir.path().join("ca.pem"), &ca.cert.pem());
    write(&dir.path().join("secret"), &format!("{SECRET}\n"));
    let config = configure(dir.path(), &ca, "tc", free_port(), &[]);
    let check = |expect: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vserver-agent")).arg("--check").arg("-c").arg(&config).output();
        let out = out.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expect), "{expect:?} not in {stderr}");
    };
    let out = Command::new(env!("CARGO_BIN_EXE_vserver-agent")).arg("--check").arg("-c").arg(&config).output();
    assert!(out.unwrap().status.success(), "the good configuration passes --check");

    let home = config.parent().unwrap();
    write(&home.join("key.pem"), "not a key\n");
    check("tls.key_file");
    let (_, other_key) = ca.issue("someone-else");
    write(&home.join("key.pem"), &other_key);
    check("does not fit the certificate");
    write(&dir.path().join("ca.pem"), "");
    check("tls.ca_file");
    std::fs::remove_file(home.join("cert.pem")).unwrap();
    check("tls.cert_file");
    // The agent itself refuses to start on the same configuration.
    let out = Command::new(env!("CARGO_BIN_EXE_vserver-agent")).arg("-c").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.cert_file"));
}
