//! Placement managed through the cluster: the protected vservers' placements (primary, standbys, data path,
//! replication settings) live in the cluster's replicated table, changed on any host by
//! `PUT`/`DELETE /v1/cluster/placements/NAME` (`vserver-agent placement set|remove`) and applied by every
//! host's agent within a second, nothing restarted. Each host's `cluster.toml` is taken into the table once,
//! as soon as every host reads such entries (a new cluster's seed, or an existing cluster's placements on
//! upgrade); until then, and for the vservers the table does not name, the file places them as before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::ownership::PlacementTable;
use failover::placement::{check_entry, ClusterConfig, Defaults, Placement, Replication as Settings, VserverEntry};
use isolate::VserverName;
use serde::{Deserialize, Serialize};

use super::hosts::ChangeError;
use super::node::Agent;

/// The body of `PUT /v1/cluster/placements/NAME`, and the options of `vserver-agent placement set`: the keys of
/// a `[vservers.NAME]` table of `cluster.toml`, each optional. A vserver already placed keeps what is not given
/// (its data path's own keys are dropped when the data path changes); a new one needs its `primary` unless it
/// has an owner.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PlaceRequest {
    /// The host it is placed on (a vserver that runs elsewhere now stays there: migrate moves it).
    #[arg(long)]
    pub primary: Option<String>,
    /// The hosts that keep a copy, in the order a takeover tries them, comma separated ("" for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub standbys: Option<Vec<String>>,
    /// periodic, continuous, shared or block (docs/failover.md, "Data paths"). A placed vserver moves between
    /// periodic and continuous only.
    #[arg(long, value_parser = ["periodic", "continuous", "shared", "block"])]
    pub data: Option<String>,
    /// Seconds between two syncs.
    #[arg(long)]
    #[serde(default, deserialize_with = "failover::whole::optional")]
    pub interval_secs: Option<u64>,
    /// End each sync with a short pass while the vserver is frozen (true or false).
    #[arg(long)]
    pub consistent: Option<bool>,
    /// For data shared: the directory every host mounts that holds NAME/ and NAME.conf.
    #[arg(long)]
    pub shared_dir: Option<std::path::PathBuf>,
    /// For data block: the block device, by a name the same on every host.
    #[arg(long)]
    pub device: Option<std::path::PathBuf>,
    /// For data block: its file system type (default ext4).
    #[arg(long)]
    pub fstype: Option<String>,
    /// For data continuous: milliseconds between two batches (50 to 60000).
    #[arg(long)]
    #[serde(default, deserialize_with = "failover::whole::optional")]
    pub batch_ms: Option<u64>,
    /// For data continuous: seconds between two points in time a standby keeps.
    #[arg(long)]
    #[serde(default, deserialize_with = "failover::whole::optional")]
    pub points_every_secs: Option<u64>,
    /// For data continuous: how many points in time a standby keeps.
    #[arg(long)]
    #[serde(default, deserialize_with = "failover::whole::optional")]
    pub points_kept: Option<u32>,
    /// Change it only if its placement is still at this revision (0: not placed; see `placement list`).
    #[arg(long)]
    #[serde(default, deserialize_with = "failover::whole::optional")]
    pub expected_revision: Option<u64>,
}

/// The answer of a placement's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceReply {
    /// The vserver.
    pub vserver: String,
    /// Its placement's revision now (after a removal, the revision of the removal).
    pub revision: u64,
    /// Its placement now; none after a removal.
    pub entry: Option<VserverEntry>,
}

/// Why a placement was not changed (see [`ChangeError`]).
pub type PlaceError = ChangeError;

/// The data paths a vserver can move between while placed: the copied ones; a shared or a block vserver's
/// tree is elsewhere, which a change of its placement cannot move.
fn family(data: Option<&str>) -> &str {
    match data.unwrap_or("periodic") {
        "periodic" | "continuous" => "copied",
        other => other,
    }
}

/// The cluster's hosts, as this host knows them.
fn hosts(agent: &Agent) -> BTreeSet<String> {
    agent.ownership.hosts().into_keys().collect()
}

/// The most standbys a vserver has.
pub const MAX_STANDBYS: usize = 64;
/// The longest interval between two syncs: a year.
pub const MAX_INTERVAL_SECS: u64 = 365 * 24 * 3600;

/// The bounds docs/openapi.yaml gives a placement, beyond what the cluster file's checks say.
fn bounds(entry: &VserverEntry) -> Result<(), PlaceError> {
    let bad = |key: &str, reason: String| Err(PlaceError::BadRequest(format!("{key}: {reason}")));
    if entry.standbys.len() > MAX_STANDBYS {
        return bad("standbys", format!("at most {MAX_STANDBYS} hosts, not {}", entry.standbys.len()));
    }
    if entry.interval_secs.is_some_and(|i| i > MAX_INTERVAL_SECS) {
        return bad("interval_secs", format!("at most {MAX_INTERVAL_SECS} (a year)"));
    }
    if entry.fstype.as_ref().is_some_and(|f| f.len() > 32) {
        return bad("fstype", "at most 32 characters".into());
    }
    for (key, path) in [("shared_dir", &entry.shared_dir), ("device", &entry.device)] {
        if let Some(p) = path {
            if p.as_os_str().len() > 4096 {
                return bad(key, "at most 4096 bytes".into());
            }
            failover::placement::check_absolute(key, p)
                .map_err(|(key, reason)| PlaceError::BadRequest(format!("{key}: {reason}")))?;
        }
    }
    Ok(())
}

/// Records or changes `name`'s placement (see [`PlaceRequest`]).
pub async fn set(agent: &Agent, name: &VserverName, req: PlaceRequest) -> Result<PlaceReply, PlaceError> {
    let table = agent.ownership.placements();
    let current = table.placements.get(name.as_str());
    let revision = current.map_or(0, |p| p.revision);
    if let Some(expected) = req.expected_revision.filter(|e| *e != revision) {
        return Err(PlaceError::Conflict(format!(
            "{name}: placement revision {expected} is stale, the current one is {revision}; read the placements again"
        )));
    }
    let mut entry = match current {
        Some(p) => p.entry.clone(),
        None => {
            let primary = match (&req.primary, agent.ownership.owner(name.as_str())) {
                (Some(p), _) => p.clone(),
                (None, Some((owner, _))) => owner,
                (None, None) => {
                    return Err(PlaceError::Conflict(format!(
                        "primary: {name} is not placed yet and has no owner: name the host it runs on"
                    )))
                }
            };
            VserverEntry { primary, ..VserverEntry::default() }
        }
    };
    let req_data = req.data.clone();
    if let Some(data) = &req.data {
        if current.is_some() && family(Some(data)) != family(entry.data.as_deref()) {
            return Err(PlaceError::Conflict(format!(
                "data: {name} is {}; a placement cannot move its tree to {data:?}: remove its placement (it keeps \
                 running where it is), move its tree, then place it again",
                entry.data.as_deref().unwrap_or("periodic")
            )));
        }
        if entry.data.as_deref().unwrap_or("periodic") != data {
            (entry.shared_dir, entry.device, entry.fstype) = (None, None, None);
            (entry.batch_ms, entry.points_every_secs, entry.points_kept) = (None, None, None);
        }
        entry.data = Some(data.clone()).filter(|d| d != "periodic");
    }
    let PlaceRequest {
        primary,
        standbys,
        interval_secs,
        consistent,
        shared_dir,
        device,
        fstype,
        batch_ms,
        points_every_secs,
        points_kept,
        ..
    } = req;
    if let Some(p) = primary {
        entry.primary = p;
    }
    if let Some(s) = standbys {
        entry.standbys = s;
    }
    // A host named as standby is no standby of itself: the primary given drops from the standbys.
    let primary = entry.primary.clone();
    entry.standbys.retain(|s| *s != primary);
    macro_rules! given {
        ($($field:ident),*) => { $( if $field.is_some() { entry.$field = $field; } )* };
    }
    given!(interval_secs, consistent, shared_dir, device, fstype, batch_ms, points_every_secs, points_kept);
    bounds(&entry)?;
    let defaults = Defaults::default();
    let data_given = req_data.is_some();
    check_entry(&entry, &hosts(agent), &defaults).map_err(|(key, reason)| {
        let said = format!("{key}: {reason}");
        if reason.starts_with("unknown host") {
            // A valid name the cluster does not know, as the API answers it everywhere.
            PlaceError::NotFound(said)
        } else if !data_given && reason.starts_with("only a vserver with") {
            // A key of another data path than the vserver's own: a conflict with what it is.
            PlaceError::Conflict(format!("{said} ({name} is {})", entry.data.as_deref().unwrap_or("periodic")))
        } else {
            PlaceError::BadRequest(said)
        }
    })?;
    let revision = agent.ownership.place(name.as_str(), Some(entry.clone()), revision).await?;
    let text = format!(
        "{name} placed (revision {revision}, asked through {}): primary {}, standbys {}, {}",
        agent.config.node,
        entry.primary,
        if entry.standbys.is_empty() { "none".to_string() } else { entry.standbys.join(", ") },
        entry.data.as_deref().unwrap_or("periodic")
    );
    agent.events.log_later("placement", Some(name.as_str()), text);
    Ok(PlaceReply { vserver: name.to_string(), revision, entry: Some(entry) })
}

/// Takes `name` out of the cluster's placements: no longer replicated nor taken over; it keeps running where
/// it runs, and the copies on its standbys stay where they are.
pub async fn remove(agent: &Agent, name: &VserverName, expected: Option<u64>) -> Result<PlaceReply, PlaceError> {
    let table = agent.ownership.placements();
    let Some(current) = table.placements.get(name.as_str()) else {
        return Err(PlaceError::NotFound(format!("{name} has no placement in the cluster's table")));
    };
    if let Some(expected) = expected.filter(|e| *e != current.revision) {
        return Err(PlaceError::Conflict(format!(
            "{name}: placement revision {expected} is stale, the current one is {}; read the placements again",
            current.revision
        )));
    }
    let revision = agent.ownership.place(name.as_str(), None, current.revision).await?;
    let text = format!(
        "{name}'s placement removed (asked through {}): no longer replicated nor taken over",
        agent.config.node
    );
    agent.events.log_later("placement", Some(name.as_str()), text);
    Ok(PlaceReply { vserver: name.to_string(), revision, entry: None })
}

/// The placements this host applies: the table's, and, until every host's file (`hosts`) is taken in, the file's
/// for the vservers the table does not name and no operator took out. The files are taken in at once, each without
/// the vservers a file before it places: this host's may be in before the file that places one of its vservers,
/// and that vserver must not lose its placement meanwhile (it would be neither replicated nor taken over).
fn wanted(
    table: &PlacementTable,
    me: &str,
    hosts: &BTreeSet<String>,
    file: &ClusterConfig,
) -> BTreeMap<VserverName, VserverEntry> {
    let mine = table.taken_from.contains(me);
    let every_file_in = hosts.iter().chain([&me.to_string()]).all(|h| table.taken_from.contains(h));
    let mut wanted: BTreeMap<VserverName, VserverEntry> = if !mine {
        file.entries.clone()
    } else if !every_file_in {
        file.entries
            .iter()
            .filter(|(n, _)| !table.unplaced.contains(n.as_str()))
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    for (name, placed) in &table.placements {
        if let Ok(name) = VserverName::parse(name) {
            wanted.insert(name, placed.entry.clone());
        }
    }
    wanted
}

/// Whether this host's copy of the table is caught up: it knows a coordinator and has applied every entry of its
/// log. Until then (an agent just started, its log still being applied), a vserver missing from the table may
/// be one placed by an entry not applied yet.
fn settled(agent: &Agent) -> bool {
    let m = agent.ownership.metrics();
    m.leader.is_some() && m.last_applied == m.last_log_index
}

/// Applies the cluster's placements to this host's replication now (see [`run`]); the vservers whose entry
/// names a host this host does not know yet keep what they had, and so do, until this host's copy of the table
/// is caught up, the vservers the table does not name. Whether it was applied whole.
pub fn apply(agent: &Agent, file: &ClusterConfig) -> bool {
    let settled = settled(agent);
    let table = agent.ownership.placements();
    let known = hosts(agent);
    let mut placed: BTreeMap<VserverName, (Placement, Settings)> = BTreeMap::new();
    let mut kept = BTreeSet::new();
    for (name, entry) in wanted(&table, &agent.config.node, &known, file) {
        match check_entry(&entry, &known, &Defaults::default()) {
            Ok(p) => {
                placed.insert(name, p);
            }
            Err((key, reason)) => {
                tracing::warn!(vserver = %name, "its placement cannot apply here yet ({key}: {reason}): kept as it was");
                kept.insert(name);
            }
        }
    }
    if !settled {
        // Kept until the table says they are gone.
        kept.extend(agent.replication.placements().into_keys().filter(|n| !placed.contains_key(n)));
    }
    agent.replication.reconcile_placements(placed, &kept);
    settled
}

/// Follows the cluster's placements on this host: applies them whenever they change (and the cluster's hosts).
/// On the coordinator, also takes each host's `cluster.toml` into the table once every host reads such entries
/// (see [`seed`]). Runs until aborted.
pub async fn run(agent: Arc<Agent>, file: ClusterConfig) {
    let me = agent.config.node.clone();
    // What the placements applied last were made of: the table's revision, whether this host's file was taken
    // in, how many hosts the cluster has (a host joining may make a placement valid here).
    let mut applied: Option<(u64, bool, usize)> = None;
    let mut seeding = Seeding { next: Instant::now() + SEED_FIRST, wait: SEED_FIRST, said: String::new() };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (revision, seeded) = agent.ownership.placements_mark(&me);
        let hosts = agent.ownership.hosts();
        let key = (revision, seeded, hosts.len());
        if applied.as_ref() != Some(&key) && apply(&agent, &file) {
            applied = Some(key);
        }
        if !agent.ownership.is_leader() {
            seeding.next = Instant::now() + SEED_FIRST;
            seeding.wait = SEED_FIRST;
            continue;
        }
        if Instant::now() >= seeding.next {
            let taken = agent.ownership.placements().taken_from;
            let missing: Vec<String> = hosts.into_keys().filter(|h| !taken.contains(h)).collect();
            if !missing.is_empty() {
                seed(&agent, &file, &missing, &mut seeding).await;
            }
        }
    }
}

/// When the first try to take the cluster files in comes, and how long to wait again after a try that could
/// not be made at first.
const SEED_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two tries (a host that does not answer may be gone for good until it is removed).
const SEED_LONGEST: Duration = Duration::from_secs(300);

/// The coordinator's tries to take the cluster files in.
struct Seeding {
    /// When the next try comes.
    next: Instant,
    /// How long after it the one after comes, if it fails too.
    wait: Duration,
    /// Why the last try could not be made, once said.
    said: String,
}

/// On the coordinator, takes into the table the cluster files of the `missing` hosts, asked of each (its own
/// read at start), once every host reads such entries; tried again, less and less often, until it can. The
/// coordinator watches every host already: no other host asks others for anything.
///
/// The files are taken in the order of the hosts' names: a vserver two files place differently goes by the
/// file of the host whose name sorts first, and a host whose file cannot be read holds back those after it
/// until the next try. The hosts are asked all at once, though, and the files taken in all at once, each without
/// the vservers a file before it places: one after the other, each waiting for the ask and the commit before,
/// taking 64 hosts' files in took about 6 s.
async fn seed(agent: &Arc<Agent>, file: &ClusterConfig, missing: &[String], seeding: &mut Seeding) {
    let me = agent.config.node.as_str();
    let result: Result<(), String> = async {
        agent
            .ownership
            .every_host_reads(failover::ownership::Readers::Placements, &BTreeSet::new())
            .await
            .map_err(|e| e.to_string())?;
        let mut asks = tokio::task::JoinSet::new();
        for host in missing {
            if host == me {
                continue;
            }
            let (agent, host) = (Arc::clone(agent), host.clone());
            asks.spawn(async move {
                let read = read_file(&agent, &host).await;
                (host, read)
            });
        }
        let mut files: BTreeMap<String, Result<BTreeMap<String, VserverEntry>, String>> = BTreeMap::new();
        if missing.iter().any(|h| h == me) {
            files.insert(me.to_string(), Ok(file.entries.iter().map(|(n, e)| (n.to_string(), e.clone())).collect()));
        }
        while let Some(done) = asks.join_next().await {
            match done {
                Ok((host, read)) => {
                    files.insert(host, read);
                }
                Err(e) => return Err(format!("an ask ended early: {e}")),
            }
        }
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut takes = tokio::task::JoinSet::new();
        let mut unread = None;
        for (host, read) in files {
            let mut entries = match read {
                Ok(entries) => entries,
                Err(why) => {
                    unread = Some(why);
                    break;
                }
            };
            entries.retain(|name, _| !placed.contains(name));
            placed.extend(entries.keys().cloned());
            takes.spawn(take_in(Arc::clone(agent), host, entries));
        }
        let mut failed = Vec::new();
        while let Some(done) = takes.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failed.push(why),
                Err(e) => failed.push(format!("a take ended early: {e}")),
            }
        }
        // The same failures, the same words: said once.
        failed.sort();
        failed.extend(unread);
        match failed.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!("{first} (and {} more)", rest.len())),
        }
    }
    .await;
    match result {
        Ok(()) => {
            seeding.wait = SEED_FIRST;
            seeding.next = Instant::now() + SEED_FIRST;
        }
        Err(why) => {
            if why != seeding.said {
                tracing::info!(
                    "the cluster files are not taken into the cluster's table yet (tried again, less and less \
                     often, up to every {} s): {why}",
                    SEED_LONGEST.as_secs()
                );
                seeding.said = why;
            }
            seeding.next = Instant::now() + seeding.wait;
            seeding.wait = (seeding.wait * 2).min(SEED_LONGEST);
        }
    }
}

/// `host`'s cluster file, asked of it.
async fn read_file(agent: &Agent, host: &str) -> Result<BTreeMap<String, VserverEntry>, String> {
    let answer = agent.peers.seed(host, Duration::from_secs(5)).await;
    let reply = failover::peer::describe(answer, "its cluster file", host)?;
    if reply.host != host {
        return Err(format!("{host} answered for {}", reply.host));
    }
    Ok(reply.entries)
}

/// Takes `entries` of `host`'s cluster file into the table, and marks the file taken in.
async fn take_in(agent: Arc<Agent>, host: String, entries: BTreeMap<String, VserverEntry>) -> Result<(), String> {
    let added = agent.ownership.seed_placements(&host, entries).await.map_err(|e| e.to_string())?;
    let text = format!(
        "{host}'s cluster file taken into the cluster's table{}: from now on the table places its vservers \
         (vserver-agent placement)",
        if added.is_empty() { String::new() } else { format!(" (added {})", added.join(", ")) }
    );
    tracing::info!("{text}");
    agent.events.log_later("placement", None, text);
    Ok(())
}

/// The answer of `GET /v1/cluster/seed`: this host's cluster file as read at start.
pub fn seed_reply(agent: &Agent) -> failover::wire::SeedReply {
    let entries = agent.cluster_file.entries.iter().map(|(n, e)| (n.to_string(), e.clone())).collect();
    failover::wire::SeedReply { host: agent.config.node.clone(), entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_wins_and_the_file_counts_until_taken_in() {
        let entry = |p: &str| VserverEntry { primary: p.into(), ..VserverEntry::default() };
        let mut file = ClusterConfig::default();
        file.entries.insert(VserverName::parse("web").unwrap(), entry("a"));
        file.entries.insert(VserverName::parse("db").unwrap(), entry("a"));
        let mut table = PlacementTable::default();
        table
            .placements
            .insert("web".into(), failover::ownership::types::PlacedEntry { entry: entry("b"), revision: 3 });
        let hosts = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let names = |w: &BTreeMap<VserverName, VserverEntry>| w.keys().map(|n| n.to_string()).collect::<Vec<_>>();
        let w = wanted(&table, "a", &hosts, &file);
        assert_eq!(w.len(), 2);
        assert_eq!(w[&VserverName::parse("web").unwrap()].primary, "b", "the table wins");
        // a's file is in, b's not yet: b's may be the one that places db (the files go in at once, each without
        // what a file before it places), so db keeps its placement by a's file meanwhile.
        table.taken_from.insert("a".into());
        let w = wanted(&table, "a", &hosts, &file);
        assert_eq!(names(&w), ["db", "web"], "until every file is in, the file still counts");
        assert_eq!(w[&VserverName::parse("web").unwrap()].primary, "b", "the table still wins");
        // An operator took db out meanwhile: no file brings it back.
        table.unplaced.insert("db".into());
        assert_eq!(names(&wanted(&table, "a", &hosts, &file)), ["web"]);
        table.unplaced.clear();
        table.taken_from.insert("b".into());
        assert_eq!(names(&wanted(&table, "a", &hosts, &file)), ["web"], "once every file is in, the table alone");
    }
}
