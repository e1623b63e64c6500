//! The embedded store: one SQLite database in the data directory, in WAL mode with
//! `synchronous=FULL`, so every committed change survives a `kill -9` of the daemon or a power cut.

use std::path::Path;

use rack_api::{Deployment, Desired, HostState, Image, InstanceState, ListenPort, PortForward, RestartPolicy};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Serialize, de::DeserializeOwned};

use super::{HostRecord, InstanceRecord, Result, StateStore, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY,
    address TEXT,
    launcher TEXT NOT NULL,
    arches TEXT NOT NULL,
    memory_mib INTEGER NOT NULL,
    vcpus INTEGER NOT NULL,
    state TEXT NOT NULL,
    join_seal TEXT
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    description TEXT NOT NULL,
    arch TEXT NOT NULL,
    signer TEXT NOT NULL,
    size INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    vcpus INTEGER NOT NULL,
    args TEXT NOT NULL,
    listen TEXT NOT NULL,
    restart TEXT NOT NULL,
    pushed_ms INTEGER NOT NULL,
    platform TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    vcpus INTEGER NOT NULL,
    args TEXT NOT NULL,
    restart TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    desired TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    start_ticks INTEGER,
    log_offset INTEGER NOT NULL,
    restarts INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    exit_status INTEGER,
    ports TEXT NOT NULL,
    memory_mib INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    next_start_ms INTEGER,
    message TEXT
);
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The SQLite-backed [`StateStore`].
#[derive(Debug)]
pub struct SqliteStore {
    db: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let db = Connection::open(path)?;
        // WAL lets readers (the CLI's `ps` through the API) proceed while the reconciler writes;
        // FULL makes each commit durable before it returns.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        // Databases from before host records were sealed gain the column; their joined hosts
        // have no seal, so they are contacted again only once their agents join again.
        let sealed: bool =
            db.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('hosts') WHERE name = 'join_seal'", [], |row| {
                row.get(0)
            })?;
        if !sealed {
            db.execute_batch("ALTER TABLE hosts ADD COLUMN join_seal TEXT")?;
        }
        // Images pushed before the platform was recorded: unknown ('').
        let has_platform: bool =
            db.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('images') WHERE name = 'platform'", [], |row| {
                row.get(0)
            })?;
        if !has_platform {
            db.execute_batch("ALTER TABLE images ADD COLUMN platform TEXT NOT NULL DEFAULT ''")?;
        }
        // Databases from before on-demand deployments gain the column (NULL: always running).
        let on_demand: bool = db.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('deployments') WHERE name = 'on_demand'",
            [],
            |row| row.get(0),
        )?;
        if !on_demand {
            db.execute_batch("ALTER TABLE deployments ADD COLUMN on_demand TEXT")?;
        }
        Ok(SqliteStore { db })
    }

    #[cfg(test)]
    /// The journal mode in force (for tests: it must be `wal`).
    pub fn journal_mode(&self) -> Result<String> {
        Ok(self.db.query_row("PRAGMA journal_mode", [], |row| row.get(0))?)
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain data to JSON cannot fail")
}

fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { what: what.into(), detail: e.to_string() })
}

/// Enums are stored as their JSON string form (`"running"`), without the quotes.
fn enum_text<T: Serialize>(value: &T) -> String {
    json(value).trim_matches('"').to_owned()
}

fn enum_from<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    from_json(what, &format!("\"{text}\""))
}

fn host_from_row(row: &Row) -> rusqlite::Result<(HostRecord, String, String)> {
    let arches: String = row.get(3)?;
    let state: String = row.get(6)?;
    Ok((
        HostRecord {
            name: row.get(0)?,
            address: row.get(1)?,
            launcher: row.get(2)?,
            arches: Vec::new(),
            memory_mib: row.get::<_, i64>(4)? as u64,
            vcpus: row.get::<_, i64>(5)? as u32,
            state: HostState::Ready,
            join_seal: row.get(7)?,
        },
        arches,
        state,
    ))
}

type RawImage = (Image, String, String, String);

fn image_from_row(row: &Row) -> rusqlite::Result<RawImage> {
    let placeholder = RestartPolicy { when: rack_api::RestartWhen::Never, max_restarts: 0, backoff_ms: 0 };
    Ok((
        Image {
            id: row.get(0)?,
            name: row.get(1)?,
            version: row.get(2)?,
            description: row.get(3)?,
            arch: row.get(4)?,
            signer: row.get(5)?,
            size: row.get::<_, i64>(6)? as u64,
            memory_mib: row.get::<_, i64>(7)? as u32,
            vcpus: row.get::<_, i64>(8)? as u32,
            args: Vec::new(),
            listen: Vec::new(),
            restart: placeholder,
            pushed_ms: row.get::<_, i64>(12)? as u64,
            platform: row.get(13)?,
        },
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
    ))
}

type RawDeployment = (Deployment, String, String, Option<String>);

fn deployment_from_row(row: &Row) -> rusqlite::Result<RawDeployment> {
    let placeholder = RestartPolicy { when: rack_api::RestartWhen::Never, max_restarts: 0, backoff_ms: 0 };
    Ok((
        Deployment {
            id: row.get(0)?,
            image_id: row.get(1)?,
            image_name: row.get(2)?,
            replicas: row.get::<_, i64>(3)? as u32,
            memory_mib: row.get::<_, i64>(4)? as u32,
            vcpus: row.get::<_, i64>(5)? as u32,
            args: Vec::new(),
            restart: placeholder,
            created_ms: row.get::<_, i64>(8)? as u64,
            on_demand: None,
        },
        row.get(6)?,
        row.get(7)?,
        row.get(9)?,
    ))
}

type RawInstance = (InstanceRecord, String, String, String);

const INSTANCE_COLUMNS: &str = "id, deployment, host, desired, state, pid, start_ticks, log_offset, restarts, failures, \
     exit_status, ports, memory_mib, created_ms, started_ms, next_start_ms, message";

fn instance_from_row(row: &Row) -> rusqlite::Result<RawInstance> {
    Ok((
        InstanceRecord {
            id: row.get(0)?,
            deployment: row.get(1)?,
            host: row.get(2)?,
            desired: Desired::Running,
            state: InstanceState::Pending,
            pid: row.get::<_, Option<i64>>(5)?.map(|p| p as u32),
            start_ticks: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            log_offset: row.get::<_, i64>(7)? as u64,
            restarts: row.get::<_, i64>(8)? as u32,
            failures: row.get::<_, i64>(9)? as u32,
            exit_status: row.get::<_, Option<i64>>(10)?.map(|s| s as i32),
            ports: Vec::new(),
            memory_mib: row.get::<_, i64>(12)? as u32,
            created_ms: row.get::<_, i64>(13)? as u64,
            started_ms: row.get::<_, Option<i64>>(14)?.map(|t| t as u64),
            next_start_ms: row.get::<_, Option<i64>>(15)?.map(|t| t as u64),
            message: row.get(16)?,
        },
        row.get(3)?,
        row.get(4)?,
        row.get(11)?,
    ))
}

fn finish_instance((mut record, desired, state, ports): RawInstance) -> Result<InstanceRecord> {
    record.desired = enum_from("instances.desired", &desired)?;
    record.state = enum_from("instances.state", &state)?;
    record.ports = from_json::<Vec<PortForward>>("instances.ports", &ports)?;
    Ok(record)
}

fn write_instance(db: &Connection, i: &InstanceRecord) -> Result<()> {
    db.execute(
        &format!(
            "INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            i.id,
            i.deployment,
            i.host,
            enum_text(&i.desired),
            enum_text(&i.state),
            i.pid.map(i64::from),
            i.start_ticks.map(|t| t as i64),
            i.log_offset as i64,
            i64::from(i.restarts),
            i64::from(i.failures),
            i.exit_status.map(i64::from),
            json(&i.ports),
            i64::from(i.memory_mib),
            i.created_ms as i64,
            i.started_ms.map(|t| t as i64),
            i.next_start_ms.map(|t| t as i64),
            i.message,
        ],
    )?;
    Ok(())
}

impl StateStore for SqliteStore {
    fn upsert_host(&mut self, h: &HostRecord) -> Result<()> {
        self.db.execute(
            "INSERT INTO hosts (name, address, launcher, arches, memory_mib, vcpus, state, join_seal) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT(name) DO UPDATE SET address = ?2, launcher = ?3, arches = ?4, memory_mib = ?5, vcpus = ?6, \
             join_seal = ?8",
            params![
                h.name,
                h.address,
                h.launcher,
                json(&h.arches),
                h.memory_mib as i64,
                i64::from(h.vcpus),
                enum_text(&h.state),
                h.join_seal
            ],
        )?;
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRecord>> {
        let mut statement = self.db.prepare(
            "SELECT name, address, launcher, arches, memory_mib, vcpus, state, join_seal FROM hosts ORDER BY name",
        )?;
        let rows = statement.query_map([], host_from_row)?;
        let mut hosts = Vec::new();
        for row in rows {
            let (mut host, arches, state) = row?;
            host.arches = from_json("hosts.arches", &arches)?;
            host.state = enum_from("hosts.state", &state)?;
            hosts.push(host);
        }
        Ok(hosts)
    }

    fn set_host_state(&mut self, name: &str, state: HostState) -> Result<bool> {
        Ok(self.db.execute("UPDATE hosts SET state = ?2 WHERE name = ?1", params![name, enum_text(&state)])? > 0)
    }

    fn remove_host(&mut self, name: &str) -> Result<bool> {
        Ok(self.db.execute("DELETE FROM hosts WHERE name = ?1", params![name])? > 0)
    }

    fn put_image(&mut self, i: &Image) -> Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO images \
             (id, name, version, description, arch, signer, size, memory_mib, vcpus, args, listen, restart, pushed_ms, \
             platform) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                i.id,
                i.name,
                i.version,
                i.description,
                i.arch,
                i.signer,
                i.size as i64,
                i64::from(i.memory_mib),
                i64::from(i.vcpus),
                json(&i.args),
                json(&i.listen),
                json(&i.restart),
                i.pushed_ms as i64,
                i.platform
            ],
        )?;
        Ok(())
    }

    fn images(&self) -> Result<Vec<Image>> {
        let mut statement = self.db.prepare(
            "SELECT id, name, version, description, arch, signer, size, memory_mib, vcpus, args, listen, restart, \
             pushed_ms, platform FROM images ORDER BY name, pushed_ms",
        )?;
        let rows = statement.query_map([], image_from_row)?;
        let mut images = Vec::new();
        for row in rows {
            let (mut image, args, listen, restart) = row?;
            image.args = from_json("images.args", &args)?;
            image.listen = from_json::<Vec<ListenPort>>("images.listen", &listen)?;
            image.restart = from_json("images.restart", &restart)?;
            images.push(image);
        }
        Ok(images)
    }

    fn remove_image(&mut self, id: &str) -> Result<bool> {
        Ok(self.db.execute("DELETE FROM images WHERE id = ?1", params![id])? > 0)
    }

    fn create_deployment(&mut self, d: &Deployment, instances: &[InstanceRecord]) -> Result<()> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO deployments (id, image_id, image_name, replicas, memory_mib, vcpus, args, restart, created_ms, \
             on_demand) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                d.id,
                d.image_id,
                d.image_name,
                i64::from(d.replicas),
                i64::from(d.memory_mib),
                i64::from(d.vcpus),
                json(&d.args),
                json(&d.restart),
                d.created_ms as i64,
                d.on_demand.as_ref().map(json)
            ],
        )?;
        for instance in instances {
            write_instance(&tx, instance)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn add_instances(&mut self, deployment: &str, instances: &[InstanceRecord]) -> Result<()> {
        let tx = self.db.transaction()?;
        let exists: bool =
            tx.query_row("SELECT COUNT(*) > 0 FROM deployments WHERE id = ?1", params![deployment], |row| row.get(0))?;
        if !exists {
            return Err(StoreError::Conflict(format!("deployment {deployment} is gone: nothing was written")));
        }
        for instance in instances {
            let taken: bool =
                tx.query_row("SELECT COUNT(*) > 0 FROM instances WHERE id = ?1", params![instance.id], |row| {
                    row.get(0)
                })?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "instance {} already exists: nothing was written",
                    instance.id
                )));
            }
            write_instance(&tx, instance)?;
        }
        tx.execute(
            "UPDATE deployments SET replicas = (SELECT COUNT(*) FROM instances WHERE deployment = ?1) WHERE id = ?1",
            params![deployment],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        let mut statement = self.db.prepare(
            "SELECT id, image_id, image_name, replicas, memory_mib, vcpus, args, restart, created_ms, on_demand \
             FROM deployments ORDER BY created_ms, id",
        )?;
        let rows = statement.query_map([], deployment_from_row)?;
        let mut deployments = Vec::new();
        for row in rows {
            let (mut deployment, args, restart, on_demand) = row?;
            deployment.args = from_json("deployments.args", &args)?;
            deployment.restart = from_json("deployments.restart", &restart)?;
            deployment.on_demand = on_demand.map(|text| from_json("deployments.on_demand", &text)).transpose()?;
            deployments.push(deployment);
        }
        Ok(deployments)
    }

    fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let mut statement =
            self.db.prepare(&format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY created_ms, id"))?;
        let rows = statement.query_map([], instance_from_row)?;
        let mut instances = rows.map(|row| finish_instance(row?)).collect::<Result<Vec<_>>>()?;
        // Creation order, and `hello-2` before `hello-10` among instances created together.
        instances.sort_by_cached_key(|i| {
            let number = i.id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(u64::MAX);
            (i.created_ms, number, i.id.clone())
        });
        Ok(instances)
    }

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        let raw = self
            .db
            .query_row(&format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?1"), params![id], |row| {
                instance_from_row(row)
            })
            .optional()?;
        raw.map(finish_instance).transpose()
    }

    fn remove_instance(&mut self, id: &str) -> Result<bool> {
        let tx = self.db.transaction()?;
        let deployment: Option<String> =
            tx.query_row("SELECT deployment FROM instances WHERE id = ?1", params![id], |row| row.get(0)).optional()?;
        let Some(deployment) = deployment else { return Ok(false) };
        tx.execute("DELETE FROM instances WHERE id = ?1", params![id])?;
        let left: i64 =
            tx.query_row("SELECT COUNT(*) FROM instances WHERE deployment = ?1", params![deployment], |row| {
                row.get(0)
            })?;
        if left == 0 {
            tx.execute("DELETE FROM deployments WHERE id = ?1", params![deployment])?;
        } else {
            tx.execute("UPDATE deployments SET replicas = ?2 WHERE id = ?1", params![deployment, left])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn swap_instances(&mut self, swaps: &[(InstanceRecord, InstanceRecord)]) -> Result<Vec<bool>> {
        let tx = self.db.transaction()?;
        let mut written = Vec::with_capacity(swaps.len());
        for (expected, new) in swaps {
            let raw = tx
                .query_row(
                    &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?1"),
                    params![expected.id],
                    instance_from_row,
                )
                .optional()?;
            let unchanged = raw.map(finish_instance).transpose()?.as_ref() == Some(expected);
            if unchanged {
                write_instance(&tx, new)?;
            }
            written.push(unchanged);
        }
        tx.commit()?;
        Ok(written)
    }

    fn next_sequence(&mut self, name: &str) -> Result<u64> {
        let value: i64 = self.db.query_row(
            "INSERT INTO sequences (name, value) VALUES (?1, 1) \
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            params![name],
            |row| row.get(0),
        )?;
        Ok(value as u64)
    }
}

#[cfg(test)]
mod tests {
    use rack_api::RestartWhen;

    use super::*;

    fn deployment(id: &str) -> Deployment {
        Deployment {
            id: id.into(),
            image_id: "ab".repeat(32),
            image_name: "hello".into(),
            replicas: 2,
            memory_mib: 16,
            vcpus: 1,
            args: vec!["a b".into()],
            restart: RestartPolicy { when: RestartWhen::OnFailure, max_restarts: 5, backoff_ms: 500 },
            created_ms: 1,
            on_demand: None,
        }
    }

    fn instance(id: &str, deployment: &str) -> InstanceRecord {
        InstanceRecord {
            ports: vec![PortForward { host_port: 40000, guest_port: 8080, protocol: "tcp".into(), address: None }],
            ..InstanceRecord::pending(id.into(), deployment.into(), "local".into(), 16, 2)
        }
    }

    #[test]
    fn a_database_from_before_join_seals_gains_the_column() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.sqlite");
        {
            let db = Connection::open(&path).expect("opens");
            db.execute_batch(&SCHEMA.replace(",\n    join_seal TEXT", "")).expect("the old schema");
            db.execute(
                "INSERT INTO hosts (name, address, launcher, arches, memory_mib, vcpus, state) \
                 VALUES ('a1', 'http://10.0.0.2:7879', 'qemu', '[]', 1024, 2, 'ready')",
                [],
            )
            .expect("an old host");
        }
        let mut store = SqliteStore::open(&path).expect("opens and migrates");
        let hosts = store.hosts().expect("lists");
        assert_eq!(hosts[0].join_seal, None, "joined before seals: contacted again once it joins again");
        let key = crate::store::JoinKey::from_token("t");
        store.upsert_host(&hosts[0].clone().sealed(&key)).expect("joins again");
        assert!(store.hosts().expect("lists")[0].is_joined(&key));
        drop(store);
        SqliteStore::open(&path).expect("opens again: the column is not added twice");
    }

    #[test]
    fn state_survives_reopening_and_uses_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.sqlite");
        {
            let mut store = SqliteStore::open(&path).expect("opens");
            assert_eq!(store.journal_mode().expect("pragma"), "wal");
            store
                .create_deployment(&deployment("d1"), &[instance("hello-1", "d1"), instance("hello-2", "d1")])
                .expect("created");
            let mut running = instance("hello-1", "d1");
            running.state = InstanceState::Running;
            running.pid = Some(1234);
            running.start_ticks = Some(99);
            assert_eq!(store.swap_instances(&[(instance("hello-1", "d1"), running)]).expect("swapped"), [true]);
            store
                .upsert_host(&HostRecord {
                    name: "local".into(),
                    address: None,
                    launcher: "qemu".into(),
                    arches: vec!["aarch64".into()],
                    memory_mib: 1024,
                    vcpus: 2,
                    state: HostState::Ready,
                    join_seal: None,
                })
                .expect("host");
        }
        let store = SqliteStore::open(&path).expect("reopens");
        let instances = store.instances().expect("lists");
        assert_eq!(instances.len(), 2);
        assert_eq!(
            (instances[0].pid, instances[0].start_ticks, instances[0].state),
            (Some(1234), Some(99), InstanceState::Running)
        );
        assert_eq!(instances[1].ports[0].guest_port, 8080);
        assert_eq!(store.deployments().expect("lists")[0], deployment("d1"));
        assert_eq!(store.hosts().expect("lists")[0].arches, ["aarch64"]);
    }

    #[test]
    fn removing_the_last_instance_removes_its_deployment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteStore::open(&dir.path().join("s")).expect("opens");
        store.create_deployment(&deployment("d1"), &[instance("a", "d1"), instance("b", "d1")]).expect("created");
        assert!(store.remove_instance("a").expect("removes"));
        assert_eq!(store.deployments().expect("lists")[0].replicas, 1);
        assert!(store.remove_instance("b").expect("removes"));
        assert!(store.deployments().expect("lists").is_empty());
        assert!(!store.remove_instance("b").expect("idempotent"));
    }

    #[test]
    fn a_deployment_with_a_duplicate_instance_is_not_half_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteStore::open(&dir.path().join("s")).expect("opens");
        store.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
        // Same deployment id again: the transaction fails as a whole.
        assert!(store.create_deployment(&deployment("d1"), &[instance("z", "d1")]).is_err());
        assert!(store.instance("z").expect("reads").is_none());
    }

    #[test]
    fn sequences_never_repeat() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let first = SqliteStore::open(&path).expect("opens").next_sequence("instance").expect("next");
        let second = SqliteStore::open(&path).expect("opens").next_sequence("instance").expect("next");
        assert_eq!((first, second), (1, 2));
    }
}
