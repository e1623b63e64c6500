//! Images: pushing (verified against the rack's trusted keys), finding by id, id prefix or name,
//! removing, and assembling a replicated image's file from the chunk store before a launch.

use std::{path::PathBuf, time::Instant};

use ::images::artifact::{self, ImageId, VerifyError};
use rack_api::{Image, short_id};

use super::{Rack, RackError, Result, image_store::image_record};
use crate::store::{HostRecord, StateStore};

/// The shortest id prefix accepted: shorter ones match too easily by chance.
pub const MIN_ID_PREFIX: usize = 6;

/// The image `reference` names: a full id, an id prefix (6+ hex digits) or a name (the most
/// recently pushed image of that name). A name that several builds share (another architecture
/// or platform) is refused: give an id.
pub fn find_image(store: &dyn StateStore, reference: &str) -> Result<Image> {
    select_image(store, &Selector { reference, arch: None, platform: None }, None)
}

/// Which image a request means: a name or id prefix, and optionally the architecture and
/// platform that pick one among images of the same name.
#[derive(Debug, Clone, Copy)]
pub struct Selector<'a> {
    pub reference: &'a str,
    pub arch: Option<&'a str>,
    pub platform: Option<&'a str>,
}

/// Like [`find_image`]; with `hosts`, a name shared by builds for several (architecture,
/// platform) pairs picks the one pair the hosts can run, if only one is.
pub fn select_image(store: &dyn StateStore, selector: &Selector<'_>, hosts: Option<&[HostRecord]>) -> Result<Image> {
    let reference = selector.reference;
    let images = store.images()?;
    let hex = !reference.is_empty() && reference.chars().all(|c| c.is_ascii_hexdigit());
    let by_id: Vec<&Image> = if hex && reference.len() >= MIN_ID_PREFIX {
        images.iter().filter(|i| i.id.starts_with(&reference.to_ascii_lowercase())).collect()
    } else {
        Vec::new()
    };
    match by_id.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        _ => {
            return Err(RackError::invalid(
                format!("{reference:?} is the start of {} image ids", by_id.len()),
                "give more digits of the id",
            ));
        }
    }
    let wanted = |i: &&Image| {
        i.name == reference
            && selector.arch.is_none_or(|a| i.arch == a)
            && selector.platform.is_none_or(|p| i.platform == p)
    };
    let named: Vec<&Image> = images.iter().filter(wanted).collect();
    let mut builds: Vec<(&str, &str)> = named.iter().map(|i| (i.arch.as_str(), i.platform.as_str())).collect();
    builds.sort_unstable();
    builds.dedup();
    if builds.len() > 1
        && let Some(hosts) = hosts
    {
        let runnable: Vec<(&str, &str)> = builds
            .iter()
            .copied()
            .filter(|(arch, platform)| hosts.iter().any(|h| rack_api::can_run(&h.launcher, &h.arches, arch, platform)))
            .collect();
        if !runnable.is_empty() {
            builds = runnable;
        }
    }
    if builds.len() > 1 {
        let choices: Vec<String> = builds
            .iter()
            .filter_map(|(arch, platform)| {
                let newest =
                    named.iter().filter(|i| i.arch == *arch && i.platform == *platform).max_by_key(|i| i.pushed_ms)?;
                Some(format!("{} ({})", short_id(&newest.id), build_label(arch, platform)))
            })
            .collect();
        return Err(RackError::invalid(
            format!("{reference:?} names {} images: {}", builds.len(), choices.join(", ")),
            format!(
                "give an id instead of the name, or --arch and --platform (e.g. `--arch {} --platform {}`)",
                builds[0].0,
                if builds[0].1.is_empty() { "qemu" } else { builds[0].1 }
            ),
        ));
    }
    if let Some(&(arch, platform)) = builds.first()
        && let Some(image) =
            named.iter().filter(|i| i.arch == arch && i.platform == platform).max_by_key(|i| i.pushed_ms)
    {
        return Ok((*image).clone());
    }
    if hex && reference.len() < MIN_ID_PREFIX {
        return Err(RackError::invalid(
            format!(
                "no image is named {reference:?}, and as an id prefix it is too short: it needs at least \
                 {MIN_ID_PREFIX} hex digits"
            ),
            "give at least 6 digits of the id (`rack-manager image ls` shows 12)",
        ));
    }
    let names: Vec<String> = images
        .iter()
        .map(|i| format!("{} ({} {})", i.name, build_label(&i.arch, &i.platform), short_id(&i.id)))
        .collect();
    let what = match (selector.arch, selector.platform) {
        (None, None) => String::new(),
        (arch, platform) => format!(" built for {}", build_label(arch.unwrap_or("any arch"), platform.unwrap_or(""))),
    };
    Err(RackError::not_found(
        format!("no image is named or has an id starting with {reference:?}{what}"),
        if names.is_empty() {
            "the rack has no images yet: push one with `rack-manager image push FILE.mast`".to_owned()
        } else {
            format!("the rack has: {}; push others with `rack-manager image push FILE.mast`", names.join(", "))
        },
    ))
}

/// `x86_64/tender`, `aarch64/qemu`; the architecture alone when the platform is unknown.
pub fn build_label(arch: &str, platform: &str) -> String {
    if platform.is_empty() { arch.to_owned() } else { format!("{arch}/{platform}") }
}

impl Rack {
    pub fn images(&self) -> Result<Vec<Image>> {
        Ok(self.store().images()?)
    }

    pub fn image(&self, reference: &str) -> Result<Image> {
        find_image(&**self.store(), reference)
    }

    /// Verifies `bytes` as a `.mast` image signed by a trusted key, then stores it: the file the
    /// agents boot from, its chunks for replication, and its record. Pushing an image the rack
    /// has changes nothing.
    pub fn push_image(&self, bytes: &[u8]) -> Result<Image> {
        let verified = artifact::verify(bytes, &self.trusted.current()).map_err(|e| match e {
            VerifyError::UntrustedKey { signer, .. } => RackError::refused(
                "untrusted_image",
                format!("the image is signed by {signer}, which this rack does not trust"),
                format!(
                    "if you trust that key: `rack-manager trust add {signer}` (no restart needed), then push again"
                ),
            ),
            other => RackError::refused(
                "invalid_image",
                format!("the image was refused: {other}"),
                "rebuild it with `cargo xtask image build` and push the .mast file it prints",
            ),
        })?;
        let id = verified.id().to_string();
        let mut image = image_record(&verified.header, bytes.len() as u64);
        image.platform =
            ::images::kernel::platform_of(verified.kernel()).map(|p| p.name().to_owned()).unwrap_or_default();
        // Bytes first, then the record: a crash in between leaves an unreferenced file, never a
        // record without its image.
        let path = self.dir.image(&id);
        let aside = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&aside, bytes)
            .and_then(|()| std::fs::rename(&aside, &path))
            .map_err(|e| RackError::internal(format!("storing the image at {}: {e}", path.display())))?;
        self.replication
            .import(bytes)
            .map_err(|e| RackError::internal(format!("storing the image's chunks for replication: {e}")))?;
        let mut store = self.store();
        let image = store.images()?.into_iter().find(|i| i.id == id).unwrap_or(image);
        store.put_image(&image)?;
        Ok(image)
    }

    /// The file holding image `reference`'s bytes. Agents ask by full id while the reconciler
    /// waits for them: those are answered from the image directory, without the store.
    pub fn image_file(&self, reference: &str) -> Result<PathBuf> {
        let full_id = reference.len() == 64 && reference.chars().all(|c| c.is_ascii_hexdigit());
        if full_id && self.dir.image(reference).exists() {
            return Ok(self.dir.image(reference));
        }
        Ok(self.dir.image(&self.image(reference)?.id))
    }

    /// Removes image `reference`, unless a deployment uses it.
    pub fn remove_image(&self, reference: &str) -> Result<Image> {
        let image = {
            let mut store = self.store();
            let image = find_image(&**store, reference)?;
            let users: Vec<String> =
                store.deployments()?.into_iter().filter(|d| d.image_id == image.id).map(|d| d.id).collect();
            if !users.is_empty() {
                return Err(RackError::conflict(
                    format!(
                        "image {} ({}) is used by deployment(s) {}",
                        image.name,
                        short_id(&image.id),
                        users.join(", ")
                    ),
                    "remove their instances first (`rack-manager rm ID...`)",
                ));
            }
            store.remove_image(&image.id)?;
            image
        };
        let _ = std::fs::remove_file(self.dir.image(&image.id));
        Ok(image)
    }

    /// Makes sure `<data-dir>/images/<id>.mast` exists, assembling it from the image store (and
    /// fetching the chunks it lacks from the remotes) when it does not. Called before a launch.
    pub fn materialize(&self, id: &str) -> Result<(), String> {
        let path = self.dir.image(id);
        if path.exists() {
            return Ok(());
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(id, &mut raw).map_err(|_| format!("{id:?} is not an image id"))?;
        let replicator = &self.replication.replicator;
        let started = Instant::now();
        let before = replicator.stats().bytes_fetched;
        let bytes = replicator.assemble(&ImageId(raw)).map_err(|e| format!("assembling image {id}: {e}"))?;
        // Every chunk was checked on its way in; the whole file is checked again like any push.
        artifact::verify(&bytes, &self.trusted.current())
            .map_err(|e| format!("the assembled image {id} was refused: {e}"))?;
        let aside = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&aside, &bytes)
            .and_then(|()| std::fs::rename(&aside, &path))
            .map_err(|e| format!("storing image {id}: {e}"))?;
        tracing::info!(
            "image {} assembled for launch in {:.2} s ({} bytes fetched)",
            short_id(id),
            started.elapsed().as_secs_f64(),
            replicator.stats().bytes_fetched - before
        );
        Ok(())
    }

    /// Registers image `id`, whose verified meta the image store holds, in the rack's store, so
    /// it can be deployed before its chunks are here (a launch fetches them; the trickle fills
    /// them in). `from` names where it came from, for the log.
    pub fn register_learned(&self, id: &ImageId, from: &str) {
        let replicator = &self.replication.replicator;
        let Ok(header) = replicator.local_header(id) else { return };
        let meta_len = replicator.store().image_meta(id).map(|m| m.len() as u64).unwrap_or(0);
        let record = image_record(&header, meta_len + artifact::stored_bytes(&header.body));
        let mut store = self.store();
        let known = store.images().map(|images| images.iter().any(|i| i.id == record.id)).unwrap_or(true);
        if !known && let Err(e) = store.put_image(&record) {
            tracing::info!("registering replicated image {id}: {e}");
        } else if !known {
            tracing::info!("learned image {} {} ({}) from {from}", record.name, record.version, header.id.short());
        }
    }
}
