//! The manager's API handlers, one per route of [`rack_api`]. Every handler either changes state
//! completely (one store transaction) or not at all and answers 4xx.

use std::{collections::HashMap, sync::Arc};

use images::artifact::{self, VerifyError};
use rack_api::{
    DeployRequest, DeployResponse, Deployment, Desired, DrainResponse, Host, HostState, Image, Instance, InstanceState,
    InstanceStats, JoinRequest, LogChunk, Plan, RestartPolicy, Stats,
};

use super::{Rack, deployments_by_id, instance_view};
use crate::{
    agent::{HostAgent, RemoteAgent},
    datadir::now_ms,
    http::{HttpError, Method, Reply, Req},
    placement::{self, Candidate},
    reconcile::run_ref,
    store::{HostRecord, InstanceRecord, StateStore},
};

/// The most replicas one deployment may ask for.
const MAX_REPLICAS: u32 = 100_000;

pub fn route(rack: &Rack, req: &Req) -> Result<Reply, HttpError> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let Some(("v1", rest)) = segments.split_first().map(|(first, rest)| (*first, rest)) else {
        return Err(HttpError::not_found(
            format!("/{} is not an API path", segments.join("/")),
            "every path starts with /v1 (this manager speaks API version 1)",
        ));
    };
    match (&req.method, rest) {
        (Method::Get, ["hosts"]) => Ok(Reply::json(&hosts(&**rack.store())?)),
        (Method::Post, ["hosts"]) => join(rack, req.json("join request")?),
        (Method::Post, ["hosts", "add"]) => add_host(rack, req.json("add-host request")?),
        (Method::Post, ["hosts", name, "drain"]) => drain(rack, name),
        (Method::Delete, ["hosts", name]) => remove_host(rack, name),
        (Method::Post, ["images"]) => push_image(rack, &req.body),
        (Method::Get, ["images"]) => Ok(Reply::json(&rack.store().images()?)),
        (Method::Get, ["images", reference]) => Ok(Reply::json(&find_image(&**rack.store(), reference)?)),
        (Method::Get, ["images", id, "blob"]) => image_blob(rack, id),
        (Method::Delete, ["images", reference]) => remove_image(rack, reference),
        (Method::Post, ["deployments"]) => deploy(rack, &req.json("deploy request")?),
        (Method::Post, ["plan"]) => Ok(Reply::json(&plan(&**rack.store(), &req.json("deploy request")?)?.0)),
        (Method::Get, ["instances"]) => instances(rack, req.query.get("all").is_some_and(|v| v != "false")),
        (Method::Get, ["instances", id]) => Ok(Reply::json(&instance(&**rack.store(), id)?)),
        (Method::Post, ["instances", id, action @ ("stop" | "start" | "restart")]) => lifecycle(rack, id, action),
        (Method::Delete, ["instances", id]) => remove_instance(rack, id),
        (Method::Get, ["instances", id, "logs"]) => logs(rack, id, req.query_u64("offset")?.unwrap_or(0)),
        (Method::Get, ["stats"]) => stats(rack),
        (Method::Get, ["replication"]) => {
            crate::replication::status(rack).map(|s| Reply::json(&s)).map_err(HttpError::internal)
        }
        (_, ["peers", ..] | ["identity"] | ["failover", ..]) => crate::peer::api::route(rack, req, rest),
        _ => Err(HttpError::not_found(
            format!("{} /{} is not part of the rack API", req.method, segments.join("/")),
            "see the rack-api crate for the routes, or use the rack-manager CLI",
        )),
    }
}

fn hosts(store: &dyn StateStore) -> Result<Vec<Host>, HttpError> {
    let instances = store.instances()?;
    Ok(store
        .hosts()?
        .into_iter()
        .map(|h| {
            let placed: Vec<&InstanceRecord> = instances.iter().filter(|i| i.host == h.name).collect();
            Host {
                instances: placed.len() as u32,
                memory_used_mib: placed.iter().filter(|i| reserves(i)).map(|i| u64::from(i.memory_mib)).sum(),
                name: h.name,
                address: h.address,
                launcher: h.launcher,
                arches: h.arches,
                memory_mib: h.memory_mib,
                vcpus: h.vcpus,
                state: h.state,
            }
        })
        .collect())
}

/// Whether an instance holds its host's resources: anything an operator has not stopped and
/// that has not ended for good.
fn reserves(instance: &InstanceRecord) -> bool {
    instance.desired == Desired::Running && instance.state.is_active()
}

fn host_view(store: &dyn StateStore, name: &str) -> Result<Host, HttpError> {
    hosts(store)?.into_iter().find(|h| h.name == name).ok_or_else(|| unknown_host(store, name))
}

fn unknown_host(store: &dyn StateStore, name: &str) -> HttpError {
    let names: Vec<String> = store.hosts().map(|hs| hs.into_iter().map(|h| h.name).collect()).unwrap_or_default();
    HttpError::not_found(format!("there is no host named {name:?}"), format!("the hosts are: {}", names.join(", ")))
}

fn join(rack: &Rack, join: JoinRequest) -> Result<Reply, HttpError> {
    if join.name.is_empty() || !join.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(HttpError::bad_request(
            format!("{:?} is not a valid host name", join.name),
            "use letters, digits, '-', '_' and '.'",
        ));
    }
    if !join.address.starts_with("http://") {
        return Err(HttpError::bad_request(format!("{:?} is not an agent URL", join.address), "give http://HOST:PORT"));
    }
    let mut store = rack.store();
    if store.hosts()?.iter().any(|h| h.name == join.name && h.address.is_none()) {
        return Err(HttpError::conflict(
            format!("{:?} is the manager's own built-in host", join.name),
            "give the agent another --name",
        ));
    }
    let state = store.hosts()?.into_iter().find(|h| h.name == join.name).map_or(HostState::Ready, |h| h.state);
    store.upsert_host(&HostRecord {
        name: join.name.clone(),
        address: Some(join.address.clone()),
        launcher: join.launcher,
        arches: join.arches,
        memory_mib: join.memory_mib,
        vcpus: join.vcpus,
        state,
    })?;
    rack.add_agent(&join.name, Arc::new(RemoteAgent::new(&join.address, &rack.token)));
    let view = host_view(&**store, &join.name)?;
    drop(store);
    rack.wake();
    Ok(Reply::json(&view))
}

fn add_host(rack: &Rack, request: rack_api::AddHostRequest) -> Result<Reply, HttpError> {
    let client = crate::client::Client::new(&request.address, &rack.token, std::time::Duration::from_secs(10));
    let info: JoinRequest = client.get("/agent/info").map_err(|e| {
        HttpError::new(
            422,
            "agent_unreachable",
            format!("no agent answered at {}: {e}", request.address),
            "start one there with `rack-manager agent --manager-url <this manager> --token <token> --listen ADDR`",
        )
    })?;
    join(rack, JoinRequest { name: request.name, address: request.address, ..info })
}

/// Placement candidates: ready hosts with what they have left, and how many instances of
/// `appliance` each already runs.
fn candidates(store: &dyn StateStore, appliance: &str, exclude: &str) -> Result<Vec<Candidate>, HttpError> {
    let deployments = deployments_by_id(store)?;
    let instances = store.instances()?;
    Ok(store
        .hosts()?
        .into_iter()
        .filter(|h| h.state == HostState::Ready && h.name != exclude)
        .map(|h| {
            let placed: Vec<&InstanceRecord> = instances.iter().filter(|i| i.host == h.name && reserves(i)).collect();
            let used_memory: u64 = placed.iter().map(|i| u64::from(i.memory_mib)).sum();
            let used_vcpus: u64 =
                placed.iter().map(|i| deployments.get(&i.deployment).map_or(1, |d| u64::from(d.vcpus))).sum();
            let same = placed
                .iter()
                .filter(|i| deployments.get(&i.deployment).is_some_and(|d| d.image_name == appliance))
                .count() as u32;
            Candidate {
                name: h.name,
                arches: h.arches,
                free_memory_mib: h.memory_mib.saturating_sub(used_memory),
                free_vcpus: u64::from(h.vcpus).saturating_sub(used_vcpus),
                same_appliance: same,
            }
        })
        .collect())
}

/// Refuses placement on a standby manager (etcd store), naming the rack's scheduler.
fn require_scheduler(rack: &Rack) -> Result<(), HttpError> {
    let Some(election) = rack.election.as_ref().filter(|_| !rack.is_scheduler()) else { return Ok(()) };
    let leader = election.leader();
    Err(HttpError::new(
        503,
        "not_scheduler",
        match &leader {
            Some(url) => format!("this manager is a standby: the rack's scheduler is {url}"),
            None => "this manager is a standby and the rack has no scheduler right now".to_owned(),
        },
        match leader {
            Some(url) => format!("send placements to the scheduler (--manager {url})"),
            None => "retry in a few seconds: a standby takes over when the scheduler's lease expires".to_owned(),
        },
    ))
}

fn drain(rack: &Rack, name: &str) -> Result<Reply, HttpError> {
    require_scheduler(rack)?;
    let mut store = rack.store();
    if !store.hosts()?.iter().any(|h| h.name == name) {
        return Err(unknown_host(&**store, name));
    }
    let deployments = deployments_by_id(&**store)?;
    let on_host: Vec<InstanceRecord> = store.instances()?.into_iter().filter(|i| i.host == name).collect();
    // Plan every move before making any, so a drain that cannot complete changes nothing.
    let mut moves = Vec::new();
    let mut pool: HashMap<String, Vec<Candidate>> = HashMap::new();
    for instance in &on_host {
        let Some(deployment) = deployments.get(&instance.deployment) else { continue };
        let image = find_image(&**store, &deployment.image_id)?;
        if !pool.contains_key(&deployment.image_name) {
            pool.insert(deployment.image_name.clone(), candidates(&**store, &deployment.image_name, name)?);
        }
        let hosts = pool.get_mut(&deployment.image_name).expect("inserted above");
        let request = placement::Request {
            arch: image.arch.clone(),
            replicas: 1,
            memory_mib: instance.memory_mib,
            vcpus: deployment.vcpus,
        };
        let target = placement::place(hosts, &request)
            .map_err(|e| {
                HttpError::new(
                    422,
                    "no_placement",
                    format!("cannot drain {name}: instance {} has nowhere to go: {}", instance.id, e.message),
                    e.hint,
                )
            })?
            .remove(0);
        // Later moves see the room this one takes.
        for candidate in hosts.iter_mut().filter(|c| c.name == target) {
            candidate.free_memory_mib -= u64::from(instance.memory_mib);
            candidate.free_vcpus = candidate.free_vcpus.saturating_sub(u64::from(deployment.vcpus));
            candidate.same_appliance += 1;
        }
        moves.push((instance.clone(), target));
    }
    let old_agent = rack.agent(name);
    let mut moved_records = Vec::new();
    let mut moved = Vec::new();
    for (mut instance, target) in moves {
        if let (InstanceState::Running, Some(agent)) = (instance.state, &old_agent) {
            let _ = agent.stop(&run_ref(&instance));
        }
        instance.host = target.clone();
        instance.pid = None;
        instance.start_ticks = None;
        instance.ports.clear();
        instance.log_offset = 0;
        if instance.desired == Desired::Running && instance.state != InstanceState::Failed {
            instance.state = InstanceState::Pending;
        } else if instance.state == InstanceState::Running {
            instance.state = InstanceState::Stopped;
        }
        instance.message = Some(format!("moved from {name} (drained)"));
        moved.push((instance.id.clone(), target));
        moved_records.push(instance);
    }
    store.update_instances(&moved_records)?;
    store.set_host_state(name, HostState::Draining)?;
    let host = host_view(&**store, name)?;
    drop(store);
    rack.wake();
    Ok(Reply::json(&DrainResponse { host, moved }))
}

fn remove_host(rack: &Rack, name: &str) -> Result<Reply, HttpError> {
    let mut store = rack.store();
    let host = host_view(&**store, name)?;
    if host.instances > 0 {
        return Err(HttpError::conflict(
            format!("host {name} still has {} instance(s)", host.instances),
            format!("move them first with `rack-manager host drain {name}`, or remove them with `rack-manager rm`"),
        ));
    }
    store.remove_host(name)?;
    rack.remove_agent(name);
    Ok(Reply::json(&host))
}

fn push_image(rack: &Rack, bytes: &[u8]) -> Result<Reply, HttpError> {
    let verified = artifact::verify(bytes, &rack.trusted).map_err(|e| match e {
        VerifyError::UntrustedKey { signer, .. } => HttpError::new(
            422,
            "untrusted_image",
            format!("the image is signed by {signer}, which this rack does not trust"),
            format!(
                "if you trust that key, restart the manager with `--trust {signer}` or add it to {}",
                rack.dir.trusted_keys_file().display()
            ),
        ),
        other => HttpError::new(
            422,
            "invalid_image",
            format!("the image was refused: {other}"),
            "rebuild it with `cargo xtask image build` and push the .mast file it prints",
        ),
    })?;
    let id = verified.id().to_string();
    let image = crate::replication::image_record(&verified.header, bytes.len() as u64);
    // Bytes first, then the record: a crash in between leaves an unreferenced file, never a
    // record without its image.
    let path = rack.dir.image(&id);
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&aside, bytes)
        .and_then(|()| std::fs::rename(&aside, &path))
        .map_err(|e| HttpError::internal(format!("storing the image at {}: {e}", path.display())))?;
    rack.replication
        .import(bytes)
        .map_err(|e| HttpError::internal(format!("storing the image's chunks for replication: {e}")))?;
    let mut store = rack.store();
    let existing = store.images()?.into_iter().find(|i| i.id == id);
    let image = existing.unwrap_or(image);
    store.put_image(&image)?;
    Ok(Reply::json_status(201, &image))
}

/// The image `reference` names: a full id, an id prefix (6+ hex digits) or a name (the most
/// recently pushed image of that name).
fn find_image(store: &dyn StateStore, reference: &str) -> Result<Image, HttpError> {
    find_image_preferring(store, reference, &[])
}

/// Like [`find_image`], but a name picks the newest image built for one of `arches` when there
/// is one (an appliance pushed for both architectures deploys where it can run).
fn find_image_preferring(store: &dyn StateStore, reference: &str, arches: &[String]) -> Result<Image, HttpError> {
    let images = store.images()?;
    let by_id: Vec<&Image> = if reference.len() >= 6 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
        images.iter().filter(|i| i.id.starts_with(&reference.to_ascii_lowercase())).collect()
    } else {
        Vec::new()
    };
    match by_id.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        _ => {
            return Err(HttpError::bad_request(
                format!("{reference:?} is the start of {} image ids", by_id.len()),
                "give more digits of the id",
            ));
        }
    }
    let named = || images.iter().filter(|i| i.name == reference);
    let preferred = named().filter(|i| arches.contains(&i.arch)).max_by_key(|i| i.pushed_ms);
    if let Some(image) = preferred.or_else(|| named().max_by_key(|i| i.pushed_ms)) {
        return Ok(image.clone());
    }
    let names: Vec<String> =
        images.iter().map(|i| format!("{} ({} {})", i.name, i.arch, crate::datadir::short_id(&i.id))).collect();
    Err(HttpError::not_found(
        format!("no image is named or has an id starting with {reference:?}"),
        if names.is_empty() {
            "the rack has no images yet: push one with `rack-manager image push FILE.mast`".to_owned()
        } else {
            format!("the rack has: {}; push others with `rack-manager image push FILE.mast`", names.join(", "))
        },
    ))
}

fn image_blob(rack: &Rack, id: &str) -> Result<Reply, HttpError> {
    // Agents ask by full id while the reconciler waits for them: answer those from the image
    // directory, without the store.
    let full_id = id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit());
    let id = if full_id && rack.dir.image(id).exists() { id.to_owned() } else { find_image(&**rack.store(), id)?.id };
    let path = rack.dir.image(&id);
    let bytes = std::fs::read(&path).map_err(|e| HttpError::internal(format!("reading {}: {e}", path.display())))?;
    Ok(Reply::bytes(bytes))
}

fn remove_image(rack: &Rack, reference: &str) -> Result<Reply, HttpError> {
    let mut store = rack.store();
    let image = find_image(&**store, reference)?;
    let users: Vec<String> =
        store.deployments()?.into_iter().filter(|d| d.image_id == image.id).map(|d| d.id).collect();
    if !users.is_empty() {
        return Err(HttpError::conflict(
            format!(
                "image {} ({}) is used by deployment(s) {}",
                image.name,
                crate::datadir::short_id(&image.id),
                users.join(", ")
            ),
            "remove their instances first (`rack-manager rm ID...`)",
        ));
    }
    store.remove_image(&image.id)?;
    let _ = std::fs::remove_file(rack.dir.image(&image.id));
    Ok(Reply::json(&image))
}

/// Checks a deploy request and places it, changing nothing. Returns the plan, the image and the
/// resolved settings.
fn plan(store: &dyn StateStore, request: &DeployRequest) -> Result<(Plan, Image, u32, u32), HttpError> {
    if request.replicas == 0 || request.replicas > MAX_REPLICAS {
        return Err(HttpError::bad_request(
            format!("{} replicas is not a number this rack deploys", request.replicas),
            format!("ask for 1 to {MAX_REPLICAS}"),
        ));
    }
    let ready_arches: Vec<String> =
        store.hosts()?.into_iter().filter(|h| h.state == HostState::Ready).flat_map(|h| h.arches).collect();
    let image = find_image_preferring(store, &request.image, &ready_arches)?;
    let memory_mib = request.memory_mib.unwrap_or(image.memory_mib);
    if memory_mib < image.memory_mib {
        return Err(HttpError::bad_request(
            format!("{memory_mib} MiB is less than {} needs ({} MiB, from its manifest)", image.name, image.memory_mib),
            format!("give --mem {} or more", image.memory_mib),
        ));
    }
    let vcpus = request.vcpus.unwrap_or(image.vcpus);
    if vcpus == 0 || vcpus > 255 {
        return Err(HttpError::bad_request(format!("{vcpus} vCPUs is not possible"), "give --vcpus 1 to 255"));
    }
    let hosts = candidates(store, &image.name, "")?;
    let placement_request =
        placement::Request { arch: image.arch.clone(), replicas: request.replicas, memory_mib, vcpus };
    let placed = placement::place(&hosts, &placement_request)
        .map_err(|e| HttpError::new(422, "no_placement", e.message, e.hint))?;
    let plan = Plan { image_id: image.id.clone(), image_name: image.name.clone(), memory_mib, hosts: placed };
    Ok((plan, image, memory_mib, vcpus))
}

fn deploy(rack: &Rack, request: &DeployRequest) -> Result<Reply, HttpError> {
    let (response, _) = create_deployment(rack, request, None)?;
    Ok(Reply::json_status(201, &response))
}

/// Creates a deployment as `POST /deployments` does. With `volume_seed` (failover: the down
/// peer's replicated volume snapshot), every instance placed on this manager's own host gets a
/// copy of that file as its volume, written before the deployment is stored, so the reconciler
/// can never boot it on an empty volume; returns the seeded volumes' paths. Instances placed on
/// other hosts (agents with their own data directories) start with an empty volume.
pub fn create_deployment(
    rack: &Rack,
    request: &DeployRequest,
    volume_seed: Option<&std::path::Path>,
) -> Result<(DeployResponse, Vec<std::path::PathBuf>), HttpError> {
    require_scheduler(rack)?;
    let mut store = rack.store();
    let (plan, image, memory_mib, vcpus) = plan(&**store, request)?;
    let now = now_ms();
    let deployment = Deployment {
        id: format!("d{}", store.next_sequence("deployment")?),
        image_id: image.id.clone(),
        image_name: image.name.clone(),
        replicas: request.replicas,
        memory_mib,
        vcpus,
        args: request.args.clone().unwrap_or_else(|| image.args.clone()),
        restart: RestartPolicy { when: request.restart.unwrap_or(image.restart.when), ..image.restart },
        created_ms: now,
    };
    let mut records = Vec::new();
    for host in &plan.hosts {
        let id = format!("{}-{}", image.name, store.next_sequence("instance")?);
        records.push(InstanceRecord::pending(id, deployment.id.clone(), host.clone(), memory_mib, now));
    }
    let mut seeded = Vec::new();
    if let Some(seed) = volume_seed {
        // The manager's own host is the one registered without an agent address.
        let local: Vec<String> = store.hosts()?.into_iter().filter(|h| h.address.is_none()).map(|h| h.name).collect();
        for record in records.iter().filter(|r| local.contains(&r.host)) {
            let target = rack.dir.volume(&deployment.id, &record.id);
            seed_volume(seed, &target).map_err(|e| {
                HttpError::new(
                    500,
                    "volume_seed",
                    format!("seeding the volume {} from {}: {e}", target.display(), seed.display()),
                    "check the data directory's disk",
                )
            })?;
            seeded.push(target);
        }
    }
    store.create_deployment(&deployment, &records)?;
    let deployments = HashMap::from([(deployment.id.clone(), deployment.clone())]);
    let instances = records.iter().map(|r| instance_view(r, &deployments)).collect();
    drop(store);
    rack.wake();
    Ok((DeployResponse { deployment, instances }, seeded))
}

/// Copies `seed` to `target` under another name first, so an interrupted copy never leaves a
/// half-written volume where the agent would take it for the instance's own.
fn seed_volume(seed: &std::path::Path, target: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let aside = target.with_extension("img.seeding");
    std::fs::copy(seed, &aside)?;
    std::fs::File::open(&aside)?.sync_all()?;
    std::fs::rename(&aside, target)
}

fn instances(rack: &Rack, all: bool) -> Result<Reply, HttpError> {
    let store = rack.store();
    let deployments = deployments_by_id(&**store)?;
    let views: Vec<Instance> = store
        .instances()?
        .iter()
        .filter(|i| all || i.state.is_active())
        .map(|i| instance_view(i, &deployments))
        .collect();
    Ok(Reply::json(&views))
}

fn record(store: &dyn StateStore, id: &str) -> Result<InstanceRecord, HttpError> {
    store.instance(id)?.ok_or_else(|| {
        HttpError::not_found(format!("there is no instance {id:?}"), "list instances with `rack-manager ps -a`")
    })
}

fn instance(store: &dyn StateStore, id: &str) -> Result<Instance, HttpError> {
    let record = record(store, id)?;
    Ok(instance_view(&record, &deployments_by_id(store)?))
}

/// The agent of `host`, or the 503 that says it has none connected.
fn connected_agent(rack: &Rack, host: &str) -> Result<Arc<dyn HostAgent>, HttpError> {
    rack.agent(host).ok_or_else(|| {
        HttpError::new(503, "host_unreachable", format!("host {host} has no agent connected"), "start its agent again")
    })
}

/// Stops the instance's run now, if it has one.
fn stop_run(rack: &Rack, record: &mut InstanceRecord) -> Result<(), HttpError> {
    if record.state == InstanceState::Running {
        let agent = connected_agent(rack, &record.host)?;
        agent.stop(&run_ref(record)).map_err(|e| {
            HttpError::new(
                503,
                "host_unreachable",
                format!("stopping {} on {}: {e}", record.id, record.host),
                "retry when the host is back",
            )
        })?;
    }
    record.pid = None;
    Ok(())
}

fn lifecycle(rack: &Rack, id: &str, action: &str) -> Result<Reply, HttpError> {
    let mut store = rack.store();
    let mut record = record(&**store, id)?;
    match action {
        "stop" => {
            stop_run(rack, &mut record)?;
            record.desired = Desired::Stopped;
            record.state = InstanceState::Stopped;
            record.message = Some("stopped by an operator".into());
        }
        "start" if record.state == InstanceState::Running => {}
        "start" | "restart" => {
            stop_run(rack, &mut record)?;
            if action == "restart" {
                record.restarts += 1;
            }
            record.desired = Desired::Running;
            record.state = InstanceState::Pending;
            record.failures = 0;
            record.next_start_ms = None;
            record.message = None;
        }
        _ => unreachable!("the router passes only stop, start and restart"),
    }
    store.update_instances(std::slice::from_ref(&record))?;
    let view = instance_view(&record, &deployments_by_id(&**store)?);
    drop(store);
    rack.wake();
    Ok(Reply::json(&view))
}

fn remove_instance(rack: &Rack, id: &str) -> Result<Reply, HttpError> {
    let mut store = rack.store();
    let mut record = record(&**store, id)?;
    let view = instance_view(&record, &deployments_by_id(&**store)?);
    stop_run(rack, &mut record)?;
    remove_volume(rack, &record)?;
    store.remove_instance(id)?;
    Ok(Reply::json(&view))
}

/// Deletes the removed instance's volume on its host (a no-op for images without one). An
/// unreachable host refuses the removal, as stopping does: a volume must not outlive its record
/// unnoticed, nor the record its volume.
fn remove_volume(rack: &Rack, record: &InstanceRecord) -> Result<(), HttpError> {
    let Some(agent) = rack.agent(&record.host) else { return Ok(()) };
    let volume = rack_api::agent::VolumeRef { deployment: record.deployment.clone(), instance: record.id.clone() };
    agent.remove_volume(&volume).map_err(|e| {
        HttpError::new(
            503,
            "host_unreachable",
            format!("removing the volume of {} on {}: {e}", record.id, record.host),
            "retry when the host is back",
        )
    })
}

fn logs(rack: &Rack, id: &str, offset: u64) -> Result<Reply, HttpError> {
    let record = record(&**rack.store(), id)?;
    let agent = connected_agent(rack, &record.host)?;
    let mut chunk: LogChunk = agent.logs(id, offset).map_err(|e| {
        HttpError::new(
            503,
            "host_unreachable",
            format!("reading the log of {id} on {}: {e}", record.host),
            "retry later",
        )
    })?;
    chunk.running = record.desired == Desired::Running && record.state.is_active();
    Ok(Reply::json(&chunk))
}

fn stats(rack: &Rack) -> Result<Reply, HttpError> {
    let records = rack.store().instances()?;
    let mut out = Vec::new();
    for record in records.iter().filter(|r| r.state.is_active()) {
        let stats = match (record.state, rack.agent(&record.host)) {
            (InstanceState::Running, Some(agent)) => agent.stats(&run_ref(record)).ok().flatten(),
            _ => None,
        };
        out.push(InstanceStats {
            id: record.id.clone(),
            host: record.host.clone(),
            state: record.state,
            pid: record.pid,
            cpu_ms: stats.map(|s| s.cpu_ms),
            cpu_percent: stats.filter(|s| s.age_ms > 0).map(|s| s.cpu_ms as f64 * 100.0 / s.age_ms as f64),
            rss_bytes: stats.map(|s| s.rss_bytes),
        });
    }
    Ok(Reply::json(&Stats { instances: out }))
}
