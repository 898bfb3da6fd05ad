//! The embedded store: one redb file (`<root>/store.redb`) holding cri-lxc's persistent records.
//!
//! # Schema
//! Records are protobuf messages defined in `proto/store.proto` (package `crilxc.store.v1`), each with a
//! `schema_version` field. Tables (key → value):
//!
//! | table         | key                                   | value                         |
//! |---------------|---------------------------------------|-------------------------------|
//! | `meta`        | `"schema_version"`                    | u32 little-endian             |
//! | `meta`        | `"pod_cidr"`                          | UTF-8 (from UpdateRuntimeConfig)|
//! | `images`      | image id (`sha256:<config digest>`)   | `ImageRecord`                 |
//! | `image_names` | repo tag or repo digest               | image id (UTF-8)              |
//! | `layers`      | chain id (`sha256:<hex>`)             | `LayerRecord`                 |
//! | `sandboxes`   | pod sandbox id                        | `SandboxRecord`               |
//! | `containers`  | container id                          | `ContainerRecord`             |
//! | `names`       | `sandbox/<name>` or `container/<name>`| the id holding the name       |
//!
//! Invariants kept by writing them in one transaction each: every `image_names` entry points to an
//! existing image whose `repo_tags`/`repo_digests` contain that name; every layer an image references
//! has a `layers` record, and a `layers` record is written only after its directory was renamed into
//! place (so a crash leaves at worst an unreferenced directory, which start-up garbage collection
//! removes, never a record without its files).
//!
//! Names are reserved in the same transaction that creates the record and released in the one that
//! deletes it, so a name is never held by a missing object nor given to two.
//!
//! Version history: 1 — images and layers. 2 — sandboxes, containers, name reservations.
//!
//! Must not depend on grpc/ or cri/: it stores records, it does not decide CRI semantics.

pub mod records {
    //! Generated from proto/store.proto.
    include!(concat!(env!("OUT_DIR"), "/crilxc.store.v1.rs"));
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use records::{ContainerRecord, ImageRecord, LayerRecord, SandboxRecord};

/// Schema version written by this build; see the version history above.
pub const RECORD_SCHEMA_VERSION: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const IMAGE_NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("store {path} is locked by another process: is another cri-lxc daemon using this root dir?")]
    Locked { path: PathBuf },
    #[error("store {path} has schema version {found}, newer than this cri-lxc understands ({supported})")]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("name {name:?} is reserved for {holder}")]
    NameReserved { name: String, holder: String },
    #[error("store record {table}/{key} is corrupt: {source}")]
    Decode { table: &'static str, key: String, source: prost::DecodeError },
}

// redb reports errors of each step in its own type; all convert into redb::Error.
macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for StoreError { fn from(e: $t) -> Self { StoreError::Db(e.into()) } })*};
}
db_err!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Cheap to clone; all clones share one database handle.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Open (or create) the store file and check its schema version. redb recovers an interrupted
    /// transaction on open, so a kill -9 leaves the last committed state.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.to_path_buf() },
            source => StoreError::Open { path: path.to_path_buf(), source },
        })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| decode_version(v.value()));
            match found {
                Some(found) if found > RECORD_SCHEMA_VERSION => {
                    return Err(StoreError::TooNew { path: path.to_path_buf(), found, supported: RECORD_SCHEMA_VERSION });
                }
                Some(found) if found == RECORD_SCHEMA_VERSION => {}
                // New store, or an older one: records of older versions decode as they are (see schema notes).
                _ => {
                    meta.insert("schema_version", RECORD_SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
            }
            // Create every table so read transactions never see a missing one.
            txn.open_table(IMAGES)?;
            txn.open_table(IMAGE_NAMES)?;
            txn.open_table(LAYERS)?;
            txn.open_table(SANDBOXES)?;
            txn.open_table(CONTAINERS)?;
            txn.open_table(NAMES)?;
        }
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|v| decode_version(v.value())).unwrap_or(0))
    }

    /// A small daemon-wide setting kept across restarts (e.g. the pod CIDR kubelet sent).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.put(META, key, value.as_bytes())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(key)?.map(|v| String::from_utf8_lossy(v.value()).to_string()))
    }

    // ---- images ----

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.list(IMAGES, "images")
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.get(IMAGES, "images", id)
    }

    /// The image id a repo tag or repo digest currently names.
    pub fn image_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let names = txn.open_table(IMAGE_NAMES)?;
        Ok(names.get(name)?.map(|v| v.value().to_string()))
    }

    /// Record a pulled image (its layers are already recorded), in one transaction. Names the image claims move to
    /// it: an older image that held the same tag loses it (the tag now points at the new pull), as a
    /// re-pull of `:latest` does in containerd and CRI-O.
    pub fn put_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut images = txn.open_table(IMAGES)?;
            let mut names = txn.open_table(IMAGE_NAMES)?;
            let previous = images.get(image.id.as_str())?.map(|v| decode::<ImageRecord>("images", &image.id, v.value())).transpose()?;
            for name in image.repo_tags.iter().chain(image.repo_digests.iter()) {
                let holder = names.insert(name.as_str(), image.id.as_str())?.map(|v| v.value().to_string());
                if let Some(prev_id) = holder.filter(|p| p != &image.id) {
                    let prev = images.get(prev_id.as_str())?.map(|v| decode::<ImageRecord>("images", &prev_id, v.value()));
                    if let Some(mut prev) = prev.transpose()? {
                        prev.repo_tags.retain(|n| n != name);
                        prev.repo_digests.retain(|n| n != name);
                        images.insert(prev_id.as_str(), prev.encode_to_vec().as_slice())?;
                    }
                }
            }
            // Keep names an earlier pull of the same image gave it (another tag of the same content).
            let mut merged = image.clone();
            if let Some(previous) = previous {
                merged.repo_tags = union(previous.repo_tags, &image.repo_tags);
                merged.repo_digests = union(previous.repo_digests, &image.repo_digests);
            }
            merged.schema_version = RECORD_SCHEMA_VERSION;
            images.insert(image.id.as_str(), merged.encode_to_vec().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Remove one name from an image. Returns the image as it is afterwards (None if the name was unknown).
    pub fn remove_image_name(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let result = {
            let mut images = txn.open_table(IMAGES)?;
            let mut names = txn.open_table(IMAGE_NAMES)?;
            let id = names.remove(name)?.map(|v| v.value().to_string());
            match id {
                None => None,
                Some(id) => {
                    let rec = images.get(id.as_str())?.map(|v| decode::<ImageRecord>("images", &id, v.value()));
                    match rec.transpose()? {
                        None => None,
                        Some(mut rec) => {
                            rec.repo_tags.retain(|n| n != name);
                            rec.repo_digests.retain(|n| n != name);
                            images.insert(id.as_str(), rec.encode_to_vec().as_slice())?;
                            Some(rec)
                        }
                    }
                }
            }
        };
        txn.commit()?;
        Ok(result)
    }

    /// Delete an image record and every name pointing at it. Returns the removed record.
    pub fn remove_image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut images = txn.open_table(IMAGES)?;
            let mut names = txn.open_table(IMAGE_NAMES)?;
            let removed = images.remove(id)?.map(|v| decode::<ImageRecord>("images", id, v.value()));
            let removed = removed.transpose()?;
            names.retain(|_, v| v != id)?;
            removed
        };
        txn.commit()?;
        Ok(removed)
    }

    // ---- layers ----

    pub fn layers(&self) -> Result<Vec<LayerRecord>, StoreError> {
        self.list(LAYERS, "layers")
    }

    pub fn layer(&self, chain_id: &str) -> Result<Option<LayerRecord>, StoreError> {
        self.get(LAYERS, "layers", chain_id)
    }

    /// Record an unpacked layer (its directory is already in place).
    pub fn put_layer(&self, layer: &LayerRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(LAYERS)?.insert(layer.chain_id.as_str(), layer.encode_to_vec().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn remove_layer(&self, chain_id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(LAYERS)?.remove(chain_id)?;
        txn.commit()?;
        Ok(())
    }

    // ---- sandboxes and containers ----

    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        self.list(SANDBOXES, "sandboxes")
    }

    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        self.get(SANDBOXES, "sandboxes", id)
    }

    /// Reserve the sandbox's name and write its first record, atomically.
    pub fn create_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.create_named(SANDBOXES, &format!("sandbox/{}", record.name), &record.id, &record.encode_to_vec())
    }

    pub fn update_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.put(SANDBOXES, &record.id, &record.encode_to_vec())
    }

    /// Delete the record and release its name.
    pub fn remove_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.remove_named(SANDBOXES, &format!("sandbox/{}", record.name), &record.id)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.list(CONTAINERS, "containers")
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.get(CONTAINERS, "containers", id)
    }

    pub fn create_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.create_named(CONTAINERS, &format!("container/{}", record.name), &record.id, &record.encode_to_vec())
    }

    pub fn update_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &record.id, &record.encode_to_vec())
    }

    pub fn remove_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.remove_named(CONTAINERS, &format!("container/{}", record.name), &record.id)
    }

    fn create_named(&self, table: TableDefinition<&str, &[u8]>, name: &str, id: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut names = txn.open_table(NAMES)?;
            let holder = names.get(name)?.map(|v| v.value().to_string());
            if let Some(holder) = holder.filter(|h| h != id) {
                return Err(StoreError::NameReserved { name: name.to_string(), holder });
            }
            names.insert(name, id)?;
            txn.open_table(table)?.insert(id, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn remove_named(&self, table: TableDefinition<&str, &[u8]>, name: &str, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut names = txn.open_table(NAMES)?;
            let holder = names.get(name)?.map(|v| v.value().to_string());
            if holder.as_deref() == Some(id) {
                names.remove(name)?;
            }
            txn.open_table(table)?.remove(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn put(&self, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    // ---- typed access shared by the record tables ----

    fn get<M: Message + Default>(&self, table: TableDefinition<&str, &[u8]>, name: &'static str, key: &str) -> Result<Option<M>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let value = t.get(key)?;
        value.map(|v| decode(name, key, v.value())).transpose()
    }

    fn list<M: Message + Default>(&self, table: TableDefinition<&str, &[u8]>, name: &'static str) -> Result<Vec<M>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode(name, k.value(), v.value())?);
        }
        Ok(out)
    }
}

fn decode<M: Message + Default>(table: &'static str, key: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Decode { table, key: key.to_string(), source })
}

/// `first` followed by the entries of `more` it lacks.
fn union(mut first: Vec<String>, more: &[String]) -> Vec<String> {
    for m in more {
        if !first.contains(m) {
            first.push(m.clone());
        }
    }
    first
}

fn decode_version(bytes: &[u8]) -> u32 {
    let mut le = [0u8; 4];
    for (dst, src) in le.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u32::from_le_bytes(le)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord { id: id.into(), repo_tags: tags.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn put_get_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_image(&image("sha256:a", &["r/x:1", "r/x:2"])).unwrap();
        assert_eq!(store.image_id_by_name("r/x:2").unwrap().as_deref(), Some("sha256:a"));
        // A new image taking tag 2 moves it.
        store.put_image(&image("sha256:b", &["r/x:2"])).unwrap();
        assert_eq!(store.image("sha256:a").unwrap().unwrap().repo_tags, vec!["r/x:1".to_string()]);
        assert_eq!(store.image_id_by_name("r/x:2").unwrap().as_deref(), Some("sha256:b"));
        // Re-pulling the same image under another tag keeps its first tag.
        store.put_image(&image("sha256:b", &["r/x:3"])).unwrap();
        let b = store.image("sha256:b").unwrap().unwrap();
        assert_eq!(b.repo_tags, vec!["r/x:2".to_string(), "r/x:3".to_string()]);
        // Untag, then remove.
        let after = store.remove_image_name("r/x:2").unwrap().unwrap();
        assert_eq!(after.repo_tags, vec!["r/x:3".to_string()]);
        assert!(store.remove_image("sha256:b").unwrap().is_some());
        assert_eq!(store.image_id_by_name("r/x:3").unwrap(), None);
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn names_are_reserved_with_the_record_and_released_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let a = SandboxRecord { id: "a".into(), name: "pod_ns_uid_0".into(), ..Default::default() };
        let b = SandboxRecord { id: "b".into(), name: "pod_ns_uid_0".into(), ..Default::default() };
        store.create_sandbox(&a).unwrap();
        assert!(matches!(store.create_sandbox(&b), Err(StoreError::NameReserved { holder, .. }) if holder == "a"));
        assert!(store.sandbox("b").unwrap().is_none(), "a refused reservation writes nothing");
        store.remove_sandbox(&a).unwrap();
        store.create_sandbox(&b).unwrap();
        assert_eq!(store.sandboxes().unwrap().len(), 1);
        // Containers reserve in their own namespace of names.
        let c = ContainerRecord { id: "c".into(), name: "pod_ns_uid_0".into(), ..Default::default() };
        store.create_container(&c).unwrap();
        let mut c2 = c.clone();
        c2.exit_code = 3;
        store.update_container(&c2).unwrap();
        assert_eq!(store.container("c").unwrap().unwrap().exit_code, 3);
    }

    #[test]
    fn reopen_keeps_records_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put_layer(&LayerRecord { chain_id: "sha256:c".into(), ..Default::default() }).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.layers().unwrap().len(), 1);
        assert_eq!(store.schema_version().unwrap(), RECORD_SCHEMA_VERSION);
        // Pretend a newer cri-lxc wrote the file.
        {
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", 99u32.to_le_bytes().as_slice()).unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { found: 99, .. })));
    }
}
