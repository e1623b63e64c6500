//! The etcd store: a rack's state on an etcd cluster, so that several managers can share it.
//!
//! TLS and etcd's users are set up in [`access`]; a rack's managers and agents can then be the only
//! ones who read and write its keys (docs/rack-state.md, "Securing etcd").
//!
//! Keys, under `/mast/<rack>/`, each value one JSON record:
//!
//! ```text
//! hosts/<name>          HostRecord
//! alive/<name>          on the lease of the process that runs the host's agent: gone when it dies
//! leased/<name>         says the host's liveness is by lease (its alive key's absence means down)
//! images/<id>           Image metadata (the bytes stay in the data directories, never in etcd)
//! deployments/<id>      Deployment
//! instances/<id>        InstanceRecord
//! seq/<name>            a counter
//! scheduler             the elected scheduler's API URL, on its lease
//! ```
//!
//! Every change of more than one key is one etcd transaction; read-modify-write changes compare
//! the key's `mod_revision` with the one read and retry (a bounded number of times) when someone
//! else wrote in between. The lease, the liveness keys and the election live in [`session`]; the
//! change feed (a watch resumed from the last revision seen) in [`feed`].
//!
//! etcd-client is async; the daemon is plain threads. The store owns a small tokio runtime (one
//! worker thread, so lease renewals and watches progress while no daemon thread is inside the
//! store) and each call blocks on it.

mod access;
mod feed;
mod session;

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

pub use access::{EtcdAccess, PASSWORD_ENV};
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse};
use rack_api::{Deployment, HostState, Image};
use serde::{Serialize, de::DeserializeOwned};
pub use session::Election;
use tokio::runtime::Runtime;

use super::{Change, HostRecord, InstanceRecord, Result, StateStore, StoreError, sort_instances};

/// The longest one store call waits for etcd.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `connect` waits for etcd to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-modify-write attempts before giving up on a key that keeps changing.
const CAS_ATTEMPTS: usize = 32;
/// The pause before trying another etcd member.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The largest answer accepted: a rack's whole instance list comes in one.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Where a rack's state lives on etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The rack's name: its keys live under `/mast/<rack>/`.
    pub rack: String,
    /// Seconds a dead manager's liveness keys and scheduler role outlive it.
    pub lease_ttl_s: u32,
    /// TLS and the etcd user.
    pub access: EtcdAccess,
}

/// The etcd-backed [`StateStore`].
pub struct EtcdStore {
    runtime: Runtime,
    client: Client,
    kv: KvClient,
    prefix: String,
    endpoints: String,
    rack: String,
    access: EtcdAccess,
    session: Arc<session::Session>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.prefix).finish()
    }
}

/// The message for an etcd that does not answer.
pub fn unreachable_message(endpoints: &str, cause: &str) -> String {
    format!(
        "cannot reach etcd at {endpoints}: start it with `etcd` (Debian package etcd-server) or use the default \
         --store sqlite ({cause})"
    )
}

/// What a call does, which says when it may be made again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
}

/// Whether a failed call may be made again: a read after any transient failure (a dead member,
/// an etcd leader election), a write only if it surely never reached etcd's log: its connection
/// was refused, or the member had no leader to propose it to. A write that may have been applied
/// is not repeated: a compare-and-swap would then fail against its own success. (The client
/// tells these apart only in its messages.)
fn retriable(error: &etcd_client::Error, kind: Call) -> bool {
    let text = error.to_string();
    let never_sent = text.contains("tcp connect error") || text.contains("etcdserver: no leader");
    let transient = text.contains("unavailable") || text.contains("transport error") || text.contains("leader changed");
    never_sent || (kind == Call::Read && transient)
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain data to JSON cannot fail")
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::Corrupt { what: String::from_utf8_lossy(key).into_owned(), detail: e.to_string() })
}

impl EtcdStore {
    /// Connects to the rack `settings.rack` on etcd and starts this process's lease.
    pub fn connect(settings: &EtcdSettings) -> Result<EtcdStore> {
        let rack = &settings.rack;
        if rack.is_empty() || !rack.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(StoreError::Etcd(format!("{rack:?} is not a rack name: use letters, digits, '-', '_', '.'")));
        }
        if settings.endpoints.is_empty() {
            return Err(StoreError::Etcd("no etcd endpoints: give --etcd-endpoints http://HOST:2379".into()));
        }
        if settings.lease_ttl_s < 2 {
            return Err(StoreError::Etcd(format!(
                "a lease of {} s is too short to be renewed in time: give 2 or more",
                settings.lease_ttl_s
            )));
        }
        let endpoints = settings.endpoints.join(",");
        let prefix = format!("/mast/{rack}/");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd(format!("starting the etcd client's runtime: {e}")))?;
        let options = settings
            .access
            .options(&settings.endpoints)?
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        // Connecting is lazy (but logging in is not, with a user): a read proves that etcd answers.
        // It reads the liveness keys, which agents' roles may be limited to, and only their names.
        let probe = format!("{prefix}alive/");
        let connecting = async {
            let mut client = Client::connect(&settings.endpoints, Some(options)).await?;
            client.get(probe.clone(), Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1))).await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = runtime
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, connecting).await })
            .map_err(|_| StoreError::Unreachable(unreachable_message(&endpoints, "no answer within 5 s")))?
            .map_err(|e| {
                match access::explain(&e, &settings.access, &endpoints, rack, &format!("reading {probe}"), true) {
                    Some(what_to_do) => StoreError::Access(what_to_do),
                    None => StoreError::Unreachable(unreachable_message(&endpoints, &access::describe(&e))),
                }
            })?;
        let kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
        let ttl = Duration::from_secs(u64::from(settings.lease_ttl_s));
        let session = session::Session::start(&runtime, client.clone(), prefix.clone(), rack.clone(), ttl);
        let (rack, access) = (rack.clone(), settings.access.clone());
        Ok(EtcdStore { runtime, client, kv, prefix, endpoints, rack, access, session })
    }

    /// The scheduler election of this rack, through this store's lease.
    pub fn election(&self) -> Election {
        Election::new(self.session.clone(), self.runtime.handle().clone(), self.kv.clone(), self.prefix.clone())
    }

    /// Runs one etcd call to completion, within [`OP_TIMEOUT`]. `attempt` makes the call on a
    /// KV client; it is made again (the client balances it to another member) when that is safe:
    /// a read after any transient failure, a write only when it surely changed nothing.
    fn call<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        what: &str,
        kind: Call,
        mut attempt: impl FnMut(KvClient) -> F,
    ) -> Result<T> {
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            let answer = self
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline.into(), attempt(self.kv.clone())).await });
            match answer {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if retriable(&e, kind) && Instant::now() + RETRY_PAUSE < deadline => {
                    std::thread::sleep(RETRY_PAUSE);
                }
                Ok(Err(e)) => {
                    return Err(match access::explain(&e, &self.access, &self.endpoints, &self.rack, what, false) {
                        Some(what_to_do) => StoreError::Access(what_to_do),
                        None => StoreError::Etcd(format!("{what}: {}", access::describe(&e))),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Etcd(format!(
                        "{what}: no answer from {} within {OP_TIMEOUT:?}",
                        self.endpoints
                    )));
                }
            }
        }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    /// Every record under `<prefix><kind>/`.
    fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        let start = format!("{}{kind}/", self.prefix);
        let start = start.as_str();
        let response = self.call(&format!("listing {kind}"), Call::Read, |mut kv| async move {
            kv.get(start, Some(GetOptions::new().with_prefix())).await
        })?;
        response.kvs().iter().map(|pair| decode(pair.key(), pair.value())).collect()
    }

    /// The names under `<prefix><kind>/`, without their values.
    fn names(&self, kind: &str) -> Result<HashSet<String>> {
        let start = format!("{}{kind}/", self.prefix);
        let options = GetOptions::new().with_prefix().with_keys_only();
        let (from, options) = (start.as_str(), &options);
        let response = self.call(&format!("listing {kind}"), Call::Read, |mut kv| async move {
            kv.get(from, Some(options.clone())).await
        })?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|pair| pair.key_str().ok()?.strip_prefix(&start).map(str::to_owned))
            .collect())
    }

    /// One record and its `mod_revision` (0: absent, which is also what a compare sees then).
    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<(Option<T>, i64)> {
        let response =
            self.call(&format!("reading {key}"), Call::Read, |mut kv| async move { kv.get(key, None).await })?;
        match response.kvs().first() {
            Some(pair) => Ok((Some(decode(pair.key(), pair.value())?), pair.mod_revision())),
            None => Ok((None, 0)),
        }
    }

    fn txn(&self, what: &str, txn: Txn) -> Result<bool> {
        let txn = &txn;
        Ok(self.call(what, Call::Write, |mut kv| async move { kv.txn(txn.clone()).await })?.succeeded())
    }

    /// Read-modify-write of one key by compare-and-swap on its `mod_revision`: `change` gets the
    /// current record and returns the new one (`None`: leave it). Retried while others win.
    fn modify<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> Option<T>,
    ) -> Result<Option<T>> {
        for _ in 0..CAS_ATTEMPTS {
            let (current, revision) = self.read::<T>(key)?;
            let Some(next) = change(current) else { return Ok(None) };
            let txn = Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, revision)]).and_then([TxnOp::put(
                key,
                json(&next),
                None,
            )]);
            if self.txn(&format!("writing {key}"), txn)? {
                return Ok(Some(next));
            }
        }
        Err(StoreError::Conflict(format!("{key} kept changing: gave up after {CAS_ATTEMPTS} attempts")))
    }

    /// The fence of a scheduler's writes: for a manager that campaigns, the compare that the
    /// scheduler key is on its lease, so a deposed scheduler (stalled past its lease, unaware yet)
    /// writes nothing. `None` for processes that do not campaign.
    fn fence(&self) -> Result<Option<Compare>> {
        match self.session.campaign_lease() {
            None => Ok(None),
            Some(None) => {
                Err(StoreError::Conflict("this manager is not the rack's scheduler (it has no lease)".into()))
            }
            Some(Some(lease)) => Ok(Some(Compare::lease(format!("{}scheduler", self.prefix), CompareOp::Equal, lease))),
        }
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(self
            .call(&format!("deleting {key}"), Call::Write, |mut kv| async move { kv.delete(key, None).await })?
            .deleted()
            > 0)
    }
}

impl StateStore for EtcdStore {
    fn upsert_host(&mut self, host: &HostRecord) -> Result<()> {
        // Like SQLite's upsert: a known host keeps its state (draining, unreachable).
        self.modify::<HostRecord>(&self.key("hosts", &host.name), |existing| {
            Some(HostRecord { state: existing.map_or(host.state, |e| e.state), ..host.clone() })
        })?;
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRecord>> {
        let mut hosts: Vec<HostRecord> = self.list("hosts")?;
        let (leased, alive) = (self.names("leased")?, self.names("alive")?);
        for host in &mut hosts {
            // A host whose agent keeps a lease (every manager's built-in host, and agents given
            // --etcd-endpoints) lives as long as the lease: once it expired, the host is down,
            // whatever was last written. Other agents are judged by the scheduler's pings.
            let lease_expired = leased.contains(&host.name) && !alive.contains(&host.name);
            if lease_expired && host.state == HostState::Ready {
                host.state = HostState::Unreachable;
            }
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(hosts)
    }

    fn set_host_state(&mut self, name: &str, state: HostState) -> Result<bool> {
        let changed = self.modify::<HostRecord>(&self.key("hosts", name), |existing| {
            existing.map(|host| HostRecord { state, ..host })
        })?;
        Ok(changed.is_some())
    }

    fn remove_host(&mut self, name: &str) -> Result<bool> {
        let txn = Txn::new()
            .and_then([TxnOp::delete(self.key("hosts", name), None), TxnOp::delete(self.key("leased", name), None)]);
        let txn = &txn;
        let response = self
            .call(&format!("removing host {name}"), Call::Write, |mut kv| async move { kv.txn(txn.clone()).await })?;
        Ok(matches!(response.op_responses().first(), Some(TxnOpResponse::Delete(deleted)) if deleted.deleted() > 0))
    }

    fn put_image(&mut self, image: &Image) -> Result<()> {
        let key = self.key("images", &image.id);
        let key = key.as_str();
        self.call(
            &format!("writing {key}"),
            Call::Write,
            |mut kv| async move { kv.put(key, json(image), None).await },
        )?;
        Ok(())
    }

    fn images(&self) -> Result<Vec<Image>> {
        let mut images: Vec<Image> = self.list("images")?;
        images.sort_by(|a, b| (&a.name, a.pushed_ms).cmp(&(&b.name, b.pushed_ms)));
        Ok(images)
    }

    fn remove_image(&mut self, id: &str) -> Result<bool> {
        self.delete(&self.key("images", id))
    }

    fn create_deployment(&mut self, deployment: &Deployment, instances: &[InstanceRecord]) -> Result<()> {
        // All new: none of the keys may exist yet (create_revision 0), so a deployment or an
        // instance id is never claimed twice, even by two managers at once.
        let mut keys = vec![(self.key("deployments", &deployment.id), json(deployment))];
        keys.extend(instances.iter().map(|i| (self.key("instances", &i.id), json(i))));
        let mut compares: Vec<Compare> =
            keys.iter().map(|(key, _)| Compare::create_revision(key.as_str(), CompareOp::Equal, 0)).collect();
        compares.extend(self.fence()?);
        let puts: Vec<TxnOp> = keys.into_iter().map(|(key, value)| TxnOp::put(key, value, None)).collect();
        if !self.txn("creating a deployment", Txn::new().when(compares).and_then(puts))? {
            return Err(StoreError::Conflict(format!(
                "deployment {} or one of its instances already exists, or this manager is no longer the rack's \
                 scheduler: nothing was written",
                deployment.id
            )));
        }
        Ok(())
    }

    fn add_instances(&mut self, deployment: &str, instances: &[InstanceRecord]) -> Result<()> {
        let deployment_key = self.key("deployments", deployment);
        let (Some(current), revision) = self.read::<Deployment>(&deployment_key)? else {
            return Err(StoreError::Conflict(format!("deployment {deployment} is gone: nothing was written")));
        };
        let count = self.list::<InstanceRecord>("instances")?.iter().filter(|i| i.deployment == deployment).count();
        let grown = Deployment { replicas: (count + instances.len()) as u32, ..current };
        // The deployment unchanged since read (removals change it too) and every instance key
        // new, in one transaction, so `replicas` stays the count.
        let mut compares = vec![Compare::mod_revision(deployment_key.as_str(), CompareOp::Equal, revision)];
        let mut keys: Vec<(String, String)> =
            instances.iter().map(|i| (self.key("instances", &i.id), json(i))).collect();
        compares.extend(keys.iter().map(|(key, _)| Compare::create_revision(key.as_str(), CompareOp::Equal, 0)));
        compares.extend(self.fence()?);
        keys.push((deployment_key, json(&grown)));
        let puts: Vec<TxnOp> = keys.into_iter().map(|(key, value)| TxnOp::put(key, value, None)).collect();
        if !self.txn("adding instances", Txn::new().when(compares).and_then(puts))? {
            return Err(StoreError::Conflict(format!(
                "deployment {deployment} changed, one of its new instances already exists, or this manager is no \
                 longer the rack's scheduler: nothing was written"
            )));
        }
        Ok(())
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        let mut deployments: Vec<Deployment> = self.list("deployments")?;
        deployments.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(deployments)
    }

    fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let mut instances: Vec<InstanceRecord> = self.list("instances")?;
        sort_instances(&mut instances);
        Ok(instances)
    }

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        Ok(self.read(&self.key("instances", id))?.0)
    }

    fn remove_instance(&mut self, id: &str) -> Result<bool> {
        let key = self.key("instances", id);
        for _ in 0..CAS_ATTEMPTS {
            let (Some(instance), instance_revision) = self.read::<InstanceRecord>(&key)? else { return Ok(false) };
            let deployment_key = self.key("deployments", &instance.deployment);
            let (deployment, deployment_revision) = self.read::<Deployment>(&deployment_key)?;
            let left = self
                .list::<InstanceRecord>("instances")?
                .iter()
                .filter(|i| i.deployment == instance.deployment)
                .count()
                - 1;
            let mut then = vec![TxnOp::delete(key.as_str(), None)];
            match deployment {
                Some(_) if left == 0 => then.push(TxnOp::delete(deployment_key.as_str(), None)),
                Some(deployment) => {
                    let shrunk = Deployment { replicas: left as u32, ..deployment };
                    then.push(TxnOp::put(deployment_key.as_str(), json(&shrunk), None));
                }
                None => {}
            }
            // The deployment's revision changes with every removal of one of its instances, so
            // two removals at once cannot both count the same `left`.
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, instance_revision),
                    Compare::mod_revision(deployment_key.as_str(), CompareOp::Equal, deployment_revision),
                ])
                .and_then(then);
            if self.txn(&format!("removing {key}"), txn)? {
                return Ok(true);
            }
        }
        Err(StoreError::Conflict(format!("{key} kept changing: gave up after {CAS_ATTEMPTS} attempts")))
    }

    fn next_sequence(&mut self, name: &str) -> Result<u64> {
        let next = self.modify::<u64>(&self.key("seq", name), |current| Some(current.unwrap_or(0) + 1))?;
        Ok(next.expect("the change always gives a value"))
    }

    fn swap_instances(&mut self, swaps: &[(InstanceRecord, InstanceRecord)]) -> Result<Vec<bool>> {
        if swaps.is_empty() {
            return Ok(Vec::new());
        }
        // The records as they are now, with their revisions: one read for all.
        let start = self.key("instances", "");
        let start = start.as_str();
        let response = self.call("reading instances", Call::Read, |mut kv| async move {
            kv.get(start, Some(GetOptions::new().with_prefix())).await
        })?;
        let mut current = std::collections::HashMap::new();
        for pair in response.kvs() {
            let record: InstanceRecord = decode(pair.key(), pair.value())?;
            current.insert(record.id.clone(), (record, pair.mod_revision()));
        }
        // One transaction of one nested transaction per pair, each comparing its key's
        // mod_revision with the one just read: a write in between fails that pair only.
        let mut written = vec![false; swaps.len()];
        let mut claims = Vec::new();
        let mut slots = Vec::new();
        for (slot, (expected, new)) in swaps.iter().enumerate() {
            let Some((record, revision)) = current.get(&expected.id) else { continue };
            if record != expected {
                continue;
            }
            let key = self.key("instances", &new.id);
            let claim = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)])
                .and_then([TxnOp::put(key, json(new), None)]);
            claims.push(TxnOp::txn(claim));
            slots.push(slot);
        }
        if claims.is_empty() {
            return Ok(written);
        }
        let txn = Txn::new().when(self.fence()?.into_iter().collect::<Vec<_>>()).and_then(claims);
        let txn = &txn;
        let response =
            self.call("claiming instances", Call::Write, |mut kv| async move { kv.txn(txn.clone()).await })?;
        // A deposed scheduler's claims all fail together.
        if !response.succeeded() {
            return Ok(written);
        }
        for (slot, answer) in slots.into_iter().zip(response.op_responses()) {
            written[slot] = matches!(answer, TxnOpResponse::Txn(nested) if nested.succeeded());
        }
        Ok(written)
    }

    fn hold_liveness(&mut self, name: &str) -> Result<()> {
        let key = self.key("alive", name);
        let Some(lease) = self.session.hold(&key, OP_TIMEOUT) else {
            return Err(StoreError::Etcd(format!("no lease from {} within {OP_TIMEOUT:?}", self.endpoints)));
        };
        let marker = self.key("leased", name);
        let alive = PutOptions::new().with_lease(lease);
        let txn =
            Txn::new().and_then([TxnOp::put(marker, "{}", None), TxnOp::put(key, session::holder(), Some(alive))]);
        let txn = &txn;
        self.call(&format!("marking {name} alive"), Call::Write, |mut kv| async move { kv.txn(txn.clone()).await })?;
        Ok(())
    }

    fn changes(&self) -> Result<Option<mpsc::Receiver<Change>>> {
        let prefix = self.prefix.as_str();
        let response =
            self.call("reading the revision", Call::Read, |mut kv| async move { kv.get(prefix, None).await })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let (sender, receiver) = mpsc::channel();
        self.runtime.spawn(feed::run(self.client.clone(), self.prefix.clone(), revision + 1, sender));
        Ok(Some(receiver))
    }
}
