//! Scenario: the status page as a browser shows it. Headless Chromium, run in the client's namespace,
//! loads each agent's page over the lab network (the cluster secret as the HTTP Basic password, given in
//! the URL as a user would type it) and the test reads the DOM it built: every host with its state, and
//! the vserver running on its host. Skipped where `chromium` is not installed (CI installs it).

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use vserver_lab::agents::{wait_for, Agents, Timing, AGENT_PORT};
use vserver_lab::{skip_unless_root, Lab};

use crate::{placed_on_h0_timed, PATIENCE};

/// Longest one browser run may take before it is killed, so that a hung browser cannot block the suite.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

/// Renders of one page before its content counts as wrong: a peer may be seen late for a moment.
const RENDERS: usize = 3;

/// The `chromium` command on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|c| c.is_file())
}

/// What one browser run produced.
struct Rendered {
    /// The DOM after the page loaded, serialized (`--dump-dom`).
    dom: String,
    /// The browser's own messages, for failure reports.
    log: String,
}

/// The browser's process group, killed when this drops (also when a check fails half way).
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// Loads `url` in headless Chromium from the client's namespace, with a fresh profile under `dir`, and
/// returns the DOM it built; with `screenshot`, also renders the page there as a 1280x900 PNG.
fn render(lab: &Lab, bin: &Path, url: &str, dir: &Path, screenshot: Option<&Path>) -> Rendered {
    let home = tempfile::Builder::new().prefix("browser-").tempdir_in(dir).unwrap();
    let dom_file = home.path().join("dom.html");
    let log_file = home.path().join("chromium.log");
    let mut cmd = lab.client.command(bin);
    cmd.args([
        "--headless",
        // Root cannot use the browser's sandbox; the page is our own.
        "--no-sandbox",
        "--disable-gpu",
        // /dev/shm is small in containers.
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", home.path().join("profile").display()));
    if let Some(png) = screenshot {
        cmd.arg(format!("--screenshot={}", png.display()));
    }
    cmd.args(["--dump-dom", url])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .stdin(std::process::Stdio::null())
        .stdout(File::create(&dom_file).unwrap())
        .stderr(File::create(&log_file).unwrap())
        // Its own process group: the renderer and helper processes go with it.
        .process_group(0);
    let mut browser = Browser(cmd.spawn().expect("starting chromium"));
    let deadline = Instant::now() + BROWSER_LIMIT;
    let status = loop {
        if let Some(status) = browser.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            drop(browser);
            panic!(
                "chromium did not finish within {BROWSER_LIMIT:?} (killed); its log:\n{}",
                fs::read_to_string(&log_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = fs::read_to_string(&log_file).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}); its log:\n{log}");
    Rendered { dom: fs::read_to_string(&dom_file).unwrap(), log }
}

/// `text` with every byte outside the URL's unreserved set percent-encoded.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The text a reader sees in a piece of serialized DOM: tags dropped (as spaces), entities decoded,
/// white space collapsed.
fn visible(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&nbsp;", " ");
    out.replace("&amp;", "&").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One table of the page: its column headings, and each row's key (its `data-*` attribute) and cells.
struct Table {
    headings: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    /// The table `<table id="ID">` of `dom`, whose rows are keyed by the attribute `key`.
    fn parse(dom: &str, id: &str, key: &str) -> Result<Table, String> {
        let start = dom.find(&format!("<table id=\"{id}\"")).ok_or(format!("no table {id}"))?;
        let body = &dom[start..];
        let body = &body[..body.find("</table>").ok_or(format!("table {id} not closed"))?];
        let cells = |row: &str, tag: &str| -> Vec<String> {
            row.split(&format!("<{tag}")).skip(1).map(|c| visible(&c[c.find('>').map_or(0, |i| i + 1)..])).collect()
        };
        let mut headings = Vec::new();
        let mut rows = Vec::new();
        for row in body.split("<tr").skip(1) {
            let row = &row[..row.find("</tr>").unwrap_or(row.len())];
            if row.contains("<th") {
                headings = cells(row, "th");
            } else if let Some(rest) = row.strip_prefix(&format!(" {key}=\"")) {
                let name = rest[..rest.find('"').unwrap_or(0)].to_string();
                rows.push((name, cells(row, "td")));
            }
        }
        Ok(Table { headings, rows })
    }

    /// The keys of the rows, in order.
    fn keys(&self) -> Vec<&str> {
        self.rows.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The cell of row `key` in the column headed `heading`.
    fn cell(&self, key: &str, heading: &str) -> Result<&str, String> {
        let column = self.headings.iter().position(|h| h == heading).ok_or(format!("no column {heading}"))?;
        let (_, cells) = self.rows.iter().find(|(k, _)| k == key).ok_or(format!("no row {key}"))?;
        cells.get(column).map(String::as_str).ok_or(format!("row {key} has no {heading} cell"))
    }
}

/// What host `i`'s page must show, in a 3-host lab where vserver `name` runs on h0: the host's own name,
/// both others as alive peers, and the vserver running, on h0 (in h0's table of its vservers, and as h0's
/// in the others' peer rows), nowhere else.
fn check_page(dom: &str, i: usize, hosts: usize, name: &str) -> Result<(), String> {
    let node =
        dom.find("<span id=\"node\">").map(|at| &dom[at..]).map(|s| visible(&s[..s.find("</span>").unwrap_or(0)]));
    if node.as_deref() != Some(&format!("h{i}")) {
        return Err(format!("the page names the node {node:?}, not h{i}"));
    }
    let peers = Table::parse(dom, "peers", "data-peer")?;
    let others: Vec<String> = (0..hosts).filter(|&p| p != i).map(|p| format!("h{p}")).collect();
    if peers.keys() != others {
        return Err(format!("peers {:?}, not {others:?}", peers.keys()));
    }
    for peer in &others {
        let state = peers.cell(peer, "State")?;
        if state != "alive" {
            return Err(format!("peer {peer} shown {state:?}, not alive"));
        }
        let shown = peers.cell(peer, "Peer")?;
        if !shown.starts_with(&format!("{peer} http://")) {
            return Err(format!("peer {peer} shown as {shown:?}"));
        }
        let running_here = peers.cell(peer, "Vservers")?.split(", ").any(|v| v == format!("{name} (running)"));
        if running_here != (peer == "h0") {
            return Err(format!("peer {peer} shown with vservers {:?}", peers.cell(peer, "Vservers")?));
        }
    }
    let vservers = Table::parse(dom, "vservers", "data-vserver")?;
    if i == 0 {
        for (heading, want) in [("State", "running"), ("Intent", "running")] {
            let shown = vservers.cell(name, heading)?;
            if shown != want {
                return Err(format!("vserver {name}: {heading} {shown:?}, not {want}"));
            }
        }
    } else if vservers.keys().contains(&name) && vservers.cell(name, "State")? == "running" {
        return Err(format!("vserver {name} shown running on h{i} too"));
    }
    Ok(())
}

/// Whether every host's status reports what its page must show.
fn reported(agents: &Agents, hosts: usize, name: &str) -> bool {
    let running = |v: &serde_json::Value| v["name"] == name && v["state"] == "running";
    (0..hosts).all(|i| {
        let Ok(status) = agents.status(i) else { return false };
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        let vservers = status["vservers"].as_array().cloned().unwrap_or_default();
        peers.len() == hosts - 1
            && peers.iter().all(|p| p["state"] == "alive")
            && peers
                .iter()
                .all(|p| p["vservers"].as_array().is_some_and(|vs| vs.iter().any(running)) == (p["name"] == "h0"))
            && vservers.iter().any(running) == (i == 0)
    })
}

#[test]
fn a_browser_shows_every_host_with_its_state_and_the_vserver_running_on_its_host() {
    let test = "a_browser_shows_every_host_with_its_state_and_the_vserver_running_on_its_host";
    if skip_unless_root(test) {
        return;
    }
    let Some(bin) = chromium() else {
        eprintln!("skipped {test}: needs chromium (apt-get install chromium, as CI does)");
        return;
    };
    let lab = Lab::new(3).unwrap();
    // The product's heartbeat timing: a browser starting on a busy machine must not make a peer suspect.
    let (agents, name, _addr) = placed_on_h0_timed(&lab, "page", "", true, Timing::default());
    assert!(
        wait_for(PATIENCE, || reported(&agents, 3, &name)).is_some(),
        "every agent reports the cluster; h0:\n{}",
        agents.log(0)
    );

    let dir = tempfile::Builder::new().prefix("vserver-page-").tempdir().unwrap();
    let secret = url_encoded(agents.secret());
    for (i, host) in lab.hosts.iter().enumerate() {
        let url = format!("http://operator:{secret}@{}:{AGENT_PORT}/", host.addr);
        let screenshot = (i == 0).then(|| dir.path().join("h0.png"));
        let mut wrong = Vec::new();
        let shown = (0..RENDERS).any(|_| {
            let page = render(&lab, &bin, &url, dir.path(), screenshot.as_deref());
            let checked = check_page(&page.dom, i, lab.hosts.len(), &name);
            checked.map_err(|why| wrong.push((why, page))).is_ok()
        });
        if !shown {
            let (_, last) = wrong.last().expect("a render");
            let reasons: Vec<&str> = wrong.iter().map(|(why, _)| why.as_str()).collect();
            panic!(
                "h{i}'s page, as Chromium rendered it {RENDERS} times: {reasons:?}\nlast DOM:\n{}\nchromium's log:\n{}",
                last.dom, last.log
            );
        }
    }

    let png = fs::read(dir.path().join("h0.png")).expect("chromium wrote the screenshot");
    // A blank 1280x900 page compresses to about 5 KiB; h0's tables of text make several times that.
    assert!(png.len() > 16 * 1024, "the screenshot shows the page ({} bytes)", png.len());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let (width, height) = (&png[16..20], &png[20..24]);
    let size = (u32::from_be_bytes(width.try_into().unwrap()), u32::from_be_bytes(height.try_into().unwrap()));
    assert_eq!(size, (1280, 900), "the window's size (the PNG's header)");
}

/// What a standby's page must show once h0 crashed and h1 took `name` over: every host with its state (h0
/// dead, the others alive), the coordinator, h1 as the vserver's host and running it, nothing running on h0.
fn check_cluster(dom: &str, name: &str) -> Result<(), String> {
    let coordinator =
        dom.find("<p id=\"coordinator\">").map(|at| &dom[at..]).map(|s| visible(&s[..s.find("</p>").unwrap_or(0)]));
    let coordinator = coordinator.ok_or("no coordinator line")?;
    if !(coordinator.starts_with("Coordinator: h1 ") || coordinator.starts_with("Coordinator: h2 ")) {
        return Err(format!("coordinator line {coordinator:?}"));
    }
    if !coordinator.contains("quorum held (2 of 3 voters alive") {
        return Err(format!("quorum in {coordinator:?}"));
    }
    let hosts = Table::parse(dom, "cluster-hosts", "data-host")?;
    if hosts.keys() != ["h0", "h1", "h2"] {
        return Err(format!("hosts {:?}", hosts.keys()));
    }
    for (host, want) in [("h0", "dead"), ("h1", "alive"), ("h2", "alive")] {
        let state = hosts.cell(host, "State")?;
        if state != want {
            return Err(format!("{host} shown {state:?}, not {want}"));
        }
    }
    let runs = |host: &str| hosts.cell(host, "Runs").map(|r| r.split(", ").any(|v| v == name));
    if runs("h0")? || !runs("h1")? || runs("h2")? {
        return Err(format!(
            "runs: h0 {:?}, h1 {:?}, h2 {:?}",
            hosts.cell("h0", "Runs"),
            hosts.cell("h1", "Runs"),
            hosts.cell("h2", "Runs")
        ));
    }
    let vservers = Table::parse(dom, "cluster-vservers", "data-cluster-vserver")?;
    for (heading, want) in [("Host", "h1"), ("Running on", "h1"), ("Data", "periodic")] {
        let shown = vservers.cell(name, heading)?;
        if shown != want {
            return Err(format!("vserver {name}: {heading} {shown:?}, not {want}"));
        }
    }
    // Each standby's copy as its new owner reports it, with what a crash now would lose.
    let copies = vservers.cell(name, "Standby copies")?;
    if !(copies.contains("h2 (") && copies.contains("RPO")) {
        return Err(format!("vserver {name}: standby copies {copies:?}"));
    }
    // This node's own view of its peers shows nothing running on the dead h0 either.
    let peers = Table::parse(dom, "peers", "data-peer")?;
    if peers.cell("h0", "Vservers")?.contains(name) {
        return Err(format!("h0's peer row shows {:?}", peers.cell("h0", "Vservers")?));
    }
    Ok(())
}

#[test]
fn a_standbys_page_shows_the_whole_cluster_through_a_takeover() {
    let test = "a_standbys_page_shows_the_whole_cluster_through_a_takeover";
    if skip_unless_root(test) {
        return;
    }
    let Some(bin) = chromium() else {
        eprintln!("skipped {test}: needs chromium (apt-get install chromium, as CI does)");
        return;
    };
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, _addr) = crate::takeover::synced_on_h0(&lab, "pgt", "");
    // The crash: every process of h0 gone at once, and its link down; h1 (its first standby) takes over.
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    let moved = wait_for(Duration::from_secs(60), || {
        crate::owner(&agents, 2, &name).is_some_and(|(o, _)| o == "h1") && lab.hosts[1].runs(&name)
    });
    assert!(moved.is_some(), "taken over by h1; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));

    // h2, a standby, shows the whole cluster as it now stands; in a terminal too.
    let dir = tempfile::Builder::new().prefix("vserver-page-").tempdir().unwrap();
    let url = format!("http://operator:{}@{}:{AGENT_PORT}/", url_encoded(agents.secret()), lab.hosts[2].addr);
    let mut wrong = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let page = render(&lab, &bin, &url, dir.path(), None);
        match check_cluster(&page.dom, &name) {
            Ok(()) => break true,
            Err(why) => wrong.push((why, page)),
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    if !shown {
        let (_, last) = wrong.last().expect("a render");
        let reasons: Vec<&str> = wrong.iter().map(|(why, _)| why.as_str()).collect();
        panic!("h2's page: {reasons:?}\nlast DOM:\n{}\nchromium's log:\n{}", last.dom, last.log);
    }
    let stat = vserver_lab::vserver_bin().unwrap().with_file_name("vserver-stat");
    let out = lab.hosts[2].command(&stat).arg("--cluster").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", crate::text(&out));
    assert!(table.lines().any(|l| l.starts_with("h0 ") && l.contains(" dead ") && l.ends_with(" -")), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&format!("{name} ")) && l.contains(" h1 ")), "{table}");
    // --watch shows it again and again (one line of JSON each time with --json) until stopped.
    let mut watch = lab.hosts[2]
        .command(&stat)
        .args(["--cluster", "--json", "--watch", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    for _ in 0..2 {
        let line = lines.next().expect("a view").unwrap();
        let view: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(view["asked"], "h2", "{line}");
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // The same cluster from h1 (the new owner) as from h2: hosts, states and owners.
    let view = |i: usize| agents.get(i, i, "/v1/cluster").unwrap().json().unwrap();
    let essentials = |v: &serde_json::Value| {
        let hosts: Vec<(String, String)> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap().to_owned(), h["state"].as_str().unwrap().to_owned()))
            .collect();
        (hosts, v["coordinator"].clone(), v["vservers"][0]["owner"].clone(), v["vservers"][0]["running_on"].clone())
    };
    assert!(
        wait_for(PATIENCE, || essentials(&view(1)) == essentials(&view(2))).is_some(),
        "h1: {}\nh2: {}",
        view(1),
        view(2)
    );
    // The takeover is among the view's recent events, timed `at_unix_ms` (and `at_ms`, the same, deprecated).
    let takeover = || {
        let view = view(2);
        view["recent"].as_array().and_then(|r| r.iter().find(|e| e["kind"] == "takeover").cloned())
    };
    assert!(wait_for(PATIENCE, || takeover().is_some()).is_some(), "no takeover in h2's view: {}", view(2));
    let takeover = takeover().unwrap();
    let at = takeover["at_unix_ms"].as_u64();
    assert!(at.is_some_and(|t| t > 0) && takeover["at_ms"].as_u64() == at, "{takeover}");
    drop(dogs);
}
