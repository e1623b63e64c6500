//! This process's lease on etcd, and what hangs on it: the liveness keys of the hosts whose
//! agents it runs, and (when it campaigns) the rack's `scheduler` key.
//!
//! One task renews the lease every third of its TTL. When the process dies (or loses etcd for
//! longer than the TTL), etcd lets the lease expire and deletes every key on it: its hosts read as
//! down and the scheduler key is free for a standby. When the lease is lost but the process lives,
//! the task takes a new lease and puts its keys back.
//!
//! The election is lease + compare-and-swap: a candidate creates `scheduler` only where it does
//! not exist (`create_revision == 0`), on its lease. It counts itself the leader only while its
//! lease is surely alive: until two thirds of the TTL after the last renewal was *sent*, so it
//! stops scheduling before etcd could give the role to anyone else.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KvClient, LeaseClient, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};
use tokio::runtime::{Handle, Runtime};

use crate::store::JoinKey;

/// How often the task looks at its keys and campaigns.
const TICK: Duration = Duration::from_millis(200);

/// The value of a liveness key: who holds it.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_default();
    serde_json::json!({ "pid": std::process::id(), "machine": host }).to_string()
}

#[derive(Debug, Default)]
struct State {
    lease: Option<i64>,
    /// Until when this process may act as the lease's owner.
    valid_until: Option<Instant>,
    /// Keys to keep on the lease (liveness keys).
    held: BTreeSet<String>,
    /// The value this process campaigns with (its API URL); `None`: not a candidate.
    candidate: Option<String>,
    leading: bool,
}

#[derive(Debug)]
pub struct Session {
    ttl: Duration,
    rack: String,
    state: Mutex<State>,
}

impl Session {
    pub fn start(runtime: &Runtime, client: Client, prefix: String, rack: String, ttl: Duration) -> Arc<Session> {
        let session = Arc::new(Session { ttl, rack, state: Mutex::new(State::default()) });
        runtime.spawn(keep(session.clone(), client, prefix));
        session
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `key` to the keys kept on the lease; returns the lease to put it on now, waiting up
    /// to `timeout` for one.
    pub fn hold(&self, key: &str, timeout: Duration) -> Option<i64> {
        self.state().held.insert(key.to_owned());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(lease) = self.state().lease {
                return Some(lease);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `None` when this process does not campaign; otherwise the lease it campaigns on (`None`
    /// while it has none).
    pub fn campaign_lease(&self) -> Option<Option<i64>> {
        let state = self.state();
        state.candidate.as_ref().map(|_| state.lease)
    }

    fn lost(&self) {
        let mut state = self.state();
        state.lease = None;
        state.valid_until = None;
        if state.leading {
            state.leading = false;
            tracing::info!("lost the etcd lease: no longer the scheduler of rack {}", self.rack);
        }
    }
}

/// Keeps a lease forever, taking a new one whenever the last is lost.
async fn keep(session: Arc<Session>, client: Client, prefix: String) {
    loop {
        if let Err(e) = keep_one(&session, &client, &prefix).await {
            tracing::info!("etcd lease: {e}; retrying");
        }
        session.lost();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Takes one lease, puts the held keys on it and renews it until it is lost.
///
/// A renewal that fails (the etcd member this stream went to died) is retried on a new stream,
/// which the client balances to another member, for as long as the lease may still be alive: a
/// cluster that keeps its quorum keeps the lease, its keys and the scheduler role.
async fn keep_one(session: &Session, client: &Client, prefix: &str) -> Result<(), String> {
    let mut lease_client = client.lease_client();
    let mut kv = client.kv_client();
    let ttl_s = session.ttl.as_secs().max(1) as i64;
    let sent = Instant::now();
    let lease = lease_client.grant(ttl_s, None).await.map_err(|e| e.to_string())?.id();
    let renew_every = session.ttl / 3;
    let safe_for = session.ttl * 2 / 3;
    // Until when etcd surely still holds the lease, by this process's clock.
    let mut alive_until = sent + session.ttl;
    {
        let mut state = session.state();
        state.lease = Some(lease);
        state.valid_until = Some(sent + safe_for);
    }
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let scheduler_key = format!("{prefix}scheduler");
    let mut announced = BTreeSet::new();
    let mut next_renewal = Instant::now() + renew_every;
    let mut last_error = None;
    loop {
        let (held, candidate) = {
            let state = session.state();
            (state.held.clone(), state.candidate.clone())
        };
        // Keys and campaign rounds that fail are tried again next tick, on the same lease.
        for key in held.difference(&announced.clone()) {
            let options = PutOptions::new().with_lease(lease);
            if kv.put(key.as_str(), holder(), Some(options)).await.is_ok() {
                announced.insert(key.clone());
            }
        }
        if let Some(me) = candidate {
            let _ = campaign(session, &mut kv, &scheduler_key, &me, lease).await;
        }
        if Instant::now() >= next_renewal {
            let sent = Instant::now();
            match renew(&mut lease_client, lease, &mut stream, renew_every).await {
                Ok(ttl) if ttl > 0 => {
                    alive_until = sent + session.ttl;
                    session.state().valid_until = Some(sent + safe_for);
                    next_renewal = sent + renew_every;
                    last_error = None;
                }
                Ok(_) => return Err(format!("lease {lease:x} expired")),
                Err(e) => {
                    stream = None;
                    if Instant::now() >= alive_until {
                        return Err(format!("lease {lease:x} could not be renewed in time: {e}"));
                    }
                    last_error = Some(e);
                    next_renewal = Instant::now() + TICK;
                }
            }
        }
        if let Some(e) = last_error.take().filter(|_| Instant::now() + TICK >= alive_until) {
            tracing::info!("etcd lease {lease:x}: renewal failing ({e})");
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One renewal of `lease`, on `stream` (opened first if there is none): the TTL etcd answered.
async fn renew(
    lease_client: &mut LeaseClient,
    lease: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    wait: Duration,
) -> Result<i64, String> {
    if stream.is_none() {
        *stream = Some(lease_client.keep_alive(lease).await.map_err(|e| e.to_string())?);
    }
    let (keeper, responses) = stream.as_mut().expect("opened above");
    keeper.keep_alive().await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(wait, responses.message())
        .await
        .map_err(|_| "no answer to a lease renewal".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("etcd closed the lease's keep-alive stream")?;
    Ok(answer.ttl())
}

/// One round of the election: take the free scheduler key, or check that the one held is still
/// this lease's.
async fn campaign(
    session: &Session,
    kv: &mut KvClient,
    key: &str,
    me: &str,
    lease: i64,
) -> Result<(), etcd_client::Error> {
    let leading = session.state().leading;
    let ours = if leading {
        let response = kv.get(key, None).await?;
        response.kvs().first().is_some_and(|pair| pair.lease() == lease)
    } else {
        let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            me,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        kv.txn(txn).await?.succeeded()
    };
    if ours != leading {
        session.state().leading = ours;
        if ours {
            let url = me.split_once(' ').map_or(me, |(url, _)| url);
            tracing::info!("this manager is now the scheduler of rack {} ({url})", session.rack);
        } else {
            tracing::info!("no longer the scheduler of rack {}", session.rack);
        }
    }
    Ok(())
}

/// The rack's scheduler election, as one manager takes part in it.
#[derive(Clone)]
pub struct Election {
    session: Arc<Session>,
    handle: Handle,
    kv: KvClient,
    key: String,
    /// Seals the URL this manager publishes and checks the one it reads: anyone who can write
    /// etcd could otherwise have a standby name their URL as the scheduler's, where operators
    /// would send their token.
    seal: Option<JoinKey>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Election {
    pub(super) fn new(session: Arc<Session>, handle: Handle, kv: KvClient, prefix: String) -> Election {
        Election { session, handle, kv, key: format!("{prefix}scheduler"), seal: None }
    }

    /// The election with scheduler URLs sealed by `key` (every manager of the rack uses the same).
    pub fn sealed_by(self, key: JoinKey) -> Election {
        Election { seal: Some(key), ..self }
    }

    /// Stands as a candidate, `me` being what the others see of the leader (its API URL).
    pub fn campaign(&self, me: &str) {
        let value = self.seal.as_ref().map_or_else(|| me.to_owned(), |key| key.seal_scheduler(me));
        self.session.state().candidate = Some(value);
    }

    /// Whether this manager is the rack's scheduler now.
    pub fn is_leader(&self) -> bool {
        let state = self.session.state();
        state.leading && state.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// The current scheduler's URL, if there is one.
    pub fn leader(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (mut kv, key) = (self.kv.clone(), self.key.clone());
            let read = self.handle.block_on(async move {
                tokio::time::timeout_at(deadline.into(), kv.get(key, Some(GetOptions::new()))).await
            });
            match read {
                Ok(Ok(response)) => {
                    let value = response.kvs().first().and_then(|pair| pair.value_str().ok().map(str::to_owned))?;
                    let Some(key) = &self.seal else { return Some(value) };
                    let url = key.open_scheduler(&value).map(str::to_owned);
                    if url.is_none() {
                        tracing::info!(
                            "the rack's scheduler key holds {value:?}, which no manager of this rack \
                             sealed: not naming it (secure etcd: docs/rack-state.md)"
                        );
                    }
                    return url;
                }
                // A read: safe to try again, on another member.
                Ok(Err(_)) if Instant::now() + TICK < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }
}
