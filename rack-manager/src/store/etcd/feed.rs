//! The change feed: a watch on the rack's prefix, delivered to a channel.
//!
//! The watch starts at a given revision and, after a broken connection, resumes from the revision
//! after the last event delivered, so no change is lost or repeated across reconnects. If etcd
//! compacted that history meanwhile, the feed says [`Change::Resync`] and goes on from the oldest
//! revision still kept.

use std::{sync::mpsc, time::Duration};

use etcd_client::{Client, EventType, WatchOptions};

use crate::store::Change;

/// The pause before watching again after a failure.
const RETRY: Duration = Duration::from_millis(300);

/// Watches `prefix` from `revision` on, sending each change, until the receiver is dropped.
pub async fn run(client: Client, prefix: String, mut revision: i64, sender: mpsc::Sender<Change>) {
    loop {
        match watch_once(&client, &prefix, &mut revision, &sender).await {
            Ok(Flow::ReceiverGone) => return,
            Ok(Flow::Reconnect) => {}
            Err(e) => tracing::info!("etcd watch from revision {revision}: {e}; resuming"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

enum Flow {
    ReceiverGone,
    Reconnect,
}

async fn watch_once(
    client: &Client,
    prefix: &str,
    revision: &mut i64,
    sender: &mpsc::Sender<Change>,
) -> Result<Flow, etcd_client::Error> {
    let options = WatchOptions::new().with_prefix().with_start_revision(*revision);
    let mut stream = client.watch_client().watch(prefix, Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() {
            if response.compact_revision() > *revision {
                *revision = response.compact_revision();
                if sender.send(Change::Resync).is_err() {
                    return Ok(Flow::ReceiverGone);
                }
            }
            return Ok(Flow::Reconnect);
        }
        for event in response.events() {
            let Some(pair) = event.kv() else { continue };
            let key = String::from_utf8_lossy(pair.key());
            let key = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
            let at = pair.mod_revision();
            let change = match event.event_type() {
                EventType::Put => Change::Put { key, revision: at },
                EventType::Delete => Change::Delete { key, revision: at },
            };
            if sender.send(change).is_err() {
                return Ok(Flow::ReceiverGone);
            }
            *revision = at + 1;
        }
    }
    Ok(Flow::Reconnect)
}
